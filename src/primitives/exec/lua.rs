//! Lua binding of `exec`:
//! `exec{"pg_dump", "-Fc", db, env = {...}, cwd = "...", stdin = "...", timeout = "5m",
//!        check = true, readonly = false, echo = true}` or `exec{shell = "a | b", ...}`.
use mlua::{Lua, Table, Value};
use serde_json::json;

use super::{ExecSpec, Program, Stream};
use crate::engine::Ctx;
use crate::primitives::{error, text_or_secret};
use crate::secret::Secret;

/// Output lines of one command streamed to the log (and journaled as events); the rest are
/// counted, not shown, so a chatty command cannot flood the journal.
const MAX_ECHO_LINES: usize = 2000;

const KEYS: &[&str] = &["shell", "env", "cwd", "stdin", "timeout", "check", "readonly", "echo"];

pub fn register(lua: &Lua) -> mlua::Result<()> {
    lua.globals().set("exec", lua.create_async_function(exec)?)
}

/// Refuses secrets in a command line, where `ps` shows them to every user.
fn argv_item(v: Value, pos: usize) -> mlua::Result<String> {
    match v {
        Value::UserData(ud) if ud.borrow::<Secret>().is_ok() => {
            let name = ud.borrow::<Secret>().map(|s| s.name().to_string()).unwrap_or_default();
            Err(error(
                "exec",
                format!("argument {pos} is the secret '{name}': a command line is visible to every user in the process list; pass it through env = {{ VAR = secret }} or stdin"),
            ))
        }
        Value::String(s) => {
            let s = s.to_string_lossy();
            if crate::secret::redact(&s) != s {
                return Err(error("exec", format!("argument {pos} contains the value of a secret: a command line is visible to every user in the process list; pass it through env or stdin")));
            }
            Ok(s)
        }
        Value::Integer(i) => Ok(i.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(error("exec", format!("argument {pos}: expected a string, got a {}", other.type_name()))),
    }
}

struct Parsed {
    spec: ExecSpec,
    readonly: bool,
    echo: bool,
}

fn parse(t: Table) -> mlua::Result<Parsed> {
    let mut argv = Vec::new();
    let mut spec = ExecSpec {
        program: Program::Argv(vec![]),
        env: vec![],
        cwd: None,
        stdin: None,
        timeout: None,
        check: true,
        max_output: None,
        label: None,
    };
    let mut shell = None;
    let mut readonly = false;
    let mut echo = true;
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair?;
        match k {
            Value::Integer(i) => argv.push((i, v)),
            Value::String(key) => match (key.to_string_lossy().as_str(), v) {
                ("shell", v) => {
                    if let Value::UserData(_) = v {
                        return Err(error(
                            "exec",
                            "shell: a secret cannot be part of a command line; pass it through env or stdin",
                        ));
                    }
                    let s = argv_item(v, 0).map_err(|_| error("exec", "shell: expected a string without secrets"))?;
                    shell = Some(s);
                }
                ("env", Value::Table(env)) => {
                    for pair in env.pairs::<String, Value>() {
                        let (name, value) = pair?;
                        if name.is_empty() || name.contains('=') || name.contains('\0') {
                            return Err(error("exec", format!("env: invalid variable name '{name}'")));
                        }
                        let value = text_or_secret("exec", &format!("env.{name}"), value)?;
                        spec.env.push((name, value));
                    }
                }
                ("cwd", Value::String(s)) => spec.cwd = Some(s.to_string_lossy().into()),
                ("stdin", v) => spec.stdin = Some(text_or_secret("exec", "stdin", v)?.into_bytes()),
                ("timeout", v) => {
                    let d = crate::duration::from_lua(&v).map_err(|e| error("exec", format!("timeout: {e}")))?;
                    spec.timeout = Some(d).filter(|d| !d.is_zero());
                }
                ("check", Value::Boolean(b)) => spec.check = b,
                ("readonly", Value::Boolean(b)) => readonly = b,
                ("echo", Value::Boolean(b)) => echo = b,
                (k, v) if KEYS.contains(&k) => {
                    return Err(error("exec", format!("option `{k}` has the wrong type ({})", v.type_name())))
                }
                (k, _) => return Err(error("exec", format!("unknown option '{k}' (known: {})", KEYS.join(", ")))),
            },
            other => return Err(error("exec", format!("unexpected {} key", other.type_name()))),
        }
    }
    argv.sort_by_key(|(i, _)| *i);
    let mut items = Vec::with_capacity(argv.len());
    for (pos, (i, v)) in argv.into_iter().enumerate() {
        if i != pos as i64 + 1 {
            return Err(error("exec", "the command is a list without holes: exec{\"prog\", \"arg\", ...}"));
        }
        items.push(argv_item(v, pos + 1)?);
    }
    spec.program = match (shell, items.is_empty()) {
        (Some(s), true) => Program::Shell(s),
        (Some(_), false) => return Err(error("exec", "give either a command list or shell = \"...\", not both")),
        (None, true) => {
            return Err(error("exec", "no command: exec{\"prog\", \"arg\", ...} or exec{shell = \"a | b\"}"))
        }
        (None, false) => Program::Argv(items),
    };
    Ok(Parsed { spec, readonly, echo })
}

/// The checks a real `exec` makes of its argument (a table, no secret in the command line, known
/// keys), for `runbook test`'s fake: returns the command as shown.
pub fn check_for_fake(arg: Value) -> mlua::Result<String> {
    match arg {
        Value::Table(t) => Ok(parse(t)?.spec.display()),
        Value::String(_) => {
            Err(error("exec", "expects a table: exec{\"prog\", \"arg\", ...} (argv, no shell) or exec{shell = \"a | b\"} (explicit shell)"))
        }
        other => Err(error("exec", format!("expects a table, got a {}", other.type_name()))),
    }
}

async fn exec(lua: Lua, arg: Value) -> mlua::Result<Value> {
    let t = match arg {
        Value::Table(t) => t,
        Value::String(_) => {
            return Err(error("exec", "expects a table: exec{\"prog\", \"arg\", ...} (argv, no shell) or exec{shell = \"a | b\"} (explicit shell)"))
        }
        other => return Err(error("exec", format!("expects a table, got a {}", other.type_name()))),
    };
    let mut parsed = parse(t)?;
    let ctx = Ctx::from_lua(&lua)?;
    parsed.spec.max_output = ctx.max_memory;
    ctx.refuse_in_coroutine(&lua, "exec{}")?;
    let shown_cmd = parsed.spec.display();
    if let Some(p) = ctx.guard(&lua, "exec", !parsed.readonly, || format!("run `{shown_cmd}`"))? {
        return Ok(p);
    }
    let label = ctx.work_label();
    for said in super::orphans::stop_earlier_once(&label).await {
        ctx.emit("warning", json!({ "message": said }));
    }
    parsed.spec.label = Some(label.text);
    let echo = parsed.echo;
    let mut shown = 0usize;
    let result = super::run(&parsed.spec, |stream, line| {
        if echo {
            shown += 1;
            if shown <= MAX_ECHO_LINES {
                let stream = if stream == Stream::Stderr { "stderr" } else { "stdout" };
                ctx.emit("output", json!({"stream": stream, "line": line}));
            }
        }
    })
    .await
    .map_err(|e| error("exec", e))?;
    if shown > MAX_ECHO_LINES {
        let hidden = shown - MAX_ECHO_LINES;
        let message = format!("{hidden} more output line(s) of `{shown_cmd}` not shown; the result holds all of them");
        ctx.emit("log", json!({"level": "info", "message": message}));
    }
    let t = lua.create_table()?;
    t.set("code", result.code)?;
    t.set("stdout", lua.create_string(&result.stdout)?)?;
    t.set("stderr", lua.create_string(&result.stderr)?)?;
    t.set("ms", result.ms)?;
    Ok(Value::Table(t))
}
