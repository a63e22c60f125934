//! Lua binding of `ssh`: `ssh.connect{host, ...}` returns a session with `exec`, `upload`,
//! `download` and `close`; `ssh.group(name)` reads the inventory; `ssh.each(hosts, fn, opts)`
//! and `ssh.rolling(hosts, fn, opts)` fan out, checkpointing every host's outcome in the
//! journal so that a resumed or retried step runs only the hosts without a recorded success.
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use mlua::{Function, Lua, MetaMethod, Table, UserData, UserDataMethods, Value};
use serde::de::IgnoredAny;
use serde_json::json;

use super::fanout::{batches, Amount};
use super::inventory::{expand_home, settings_for, HostSettings};
use super::{ConnectSpec, ExecSpec, HostKeyNote, HostKeyPolicy, Key, Session, SshError, Stream};
use crate::engine::Ctx;
use crate::journal::ItemRecord;
use crate::primitives::log::{log, Level};
use crate::primitives::{error, text_or_secret};
use crate::secret::Secret;

/// Output lines of one remote command shown in the log; the rest are counted.
const MAX_ECHO_LINES: usize = 2000;

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let t = lua.create_table()?;
    t.set("connect", lua.create_async_function(connect)?)?;
    t.set("group", lua.create_function(group)?)?;
    t.set("each", lua.create_async_function(each)?)?;
    t.set("rolling", lua.create_async_function(rolling)?)?;
    lua.set_app_data(Sessions::default());
    lua.globals().set("ssh", t)
}

/// Open sessions of this run, by `user@host:port`: reused, and closed when the run ends.
#[derive(Default)]
struct Sessions(RefCell<HashMap<String, Arc<Session>>>);

fn err(e: SshError) -> mlua::Error {
    error("ssh", e)
}

/// `ssh.connect`'s options; the secret-capable ones are read by hand.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectOpts {
    host: Option<String>,
    user: Option<String>,
    port: Option<u16>,
    known_hosts: Option<String>,
    host_key: Option<HostKeyPolicy>,
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    timeout: Option<Duration>,
    agent: Option<bool>,
    #[allow(dead_code)]
    key: Option<IgnoredAny>,
    #[allow(dead_code)]
    passphrase: Option<IgnoredAny>,
    #[allow(dead_code)]
    password: Option<IgnoredAny>,
}

/// Credentials given to a connect call (never in the inventory).
#[derive(Clone, Default)]
struct Credentials {
    key: Option<Key>,
    passphrase: Option<String>,
    password: Option<String>,
}

/// A string or a secret; a plain string is registered as a secret under `name`, so it is
/// redacted like one.
fn secret_text(v: Value, name: &str) -> mlua::Result<String> {
    match v {
        Value::String(s) => {
            let s = s.to_string_lossy();
            crate::secret::register(&s, name);
            Ok(s)
        }
        Value::UserData(ud) => match ud.borrow::<Secret>() {
            Ok(s) => Ok(s.expose().to_string()),
            Err(_) => Err(error("ssh", format!("{name}: expected a secret"))),
        },
        other => Err(error("ssh", format!("{name}: expected a secret, got a {}", other.type_name()))),
    }
}

fn parse_connect(lua: &Lua, t: &Table) -> mlua::Result<(ConnectOpts, Credentials)> {
    let plain = lua.create_table()?;
    let mut creds = Credentials::default();
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair?;
        let name = match &k {
            Value::String(s) => s.to_string_lossy(),
            other => return Err(error("ssh", format!("connect options: unexpected {} key", other.type_name()))),
        };
        match name.as_str() {
            "key" => {
                creds.key = Some(match v {
                    Value::String(s) => {
                        let p = s.to_string_lossy();
                        if p.contains("-----BEGIN") || p.contains('\n') {
                            return Err(error(
                                "ssh",
                                "key: this is a key's text, not a file: pass it as a secret (secret(\"DEPLOY_KEY\")) so it never shows",
                            ));
                        }
                        let ctx = Ctx::from_lua(lua)?;
                        Key::File(ctx.resolve_path(expand_home(&p)))
                    }
                    v => Key::Text(secret_text(v, "key")?),
                })
            }
            "passphrase" => creds.passphrase = Some(secret_text(v, "passphrase")?),
            "password" => creds.password = Some(secret_text(v, "password")?),
            _ => plain.set(k, v)?,
        }
    }
    let opts: ConnectOpts = crate::primitives::options(lua, "ssh", "connect options", Some(Value::Table(plain)))?;
    Ok((opts, creds))
}

/// The connection of a host spec: the call's options over the inventory's over the defaults.
fn settle(ctx: &Ctx, spec: &str, opts: &ConnectOpts, creds: &Credentials) -> mlua::Result<ConnectSpec> {
    let (spec_user, host, spec_port) = super::parse_spec(spec).map_err(err)?;
    let config = crate::config::get().map_err(|e| error("ssh", e))?;
    let call = HostSettings {
        user: opts.user.clone(),
        port: opts.port,
        key: None,
        known_hosts: opts.known_hosts.clone(),
        host_key: opts.host_key,
        timeout: opts.timeout,
        agent: opts.agent,
    };
    // Paths of the call are relative to the runbook; those of runbook.toml, to its folder.
    let mut inventory = settings_for(&config, spec);
    let config_dir = config.path.as_deref().and_then(std::path::Path::parent).map(std::path::Path::to_path_buf);
    let from_config = |p: &str| {
        let p = expand_home(p);
        match &config_dir {
            Some(d) if p.is_relative() => d.join(p),
            _ => p,
        }
    };
    inventory.key = inventory.key.as_deref().map(|k| from_config(k).display().to_string());
    inventory.known_hosts = inventory.known_hosts.as_deref().map(|k| from_config(k).display().to_string());
    let call = HostSettings {
        known_hosts: call.known_hosts.as_deref().map(|k| ctx.resolve_path(expand_home(k)).display().to_string()),
        ..call
    };
    let s = call.or(&inventory);
    let key = match (&creds.key, &s.key) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(path)) => Some(Key::File(path.into())),
        (None, None) => None,
    };
    let user = spec_user
        .or(s.user)
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "root".into());
    Ok(ConnectSpec {
        host,
        port: spec_port.or(s.port).unwrap_or(22),
        user,
        key,
        passphrase: creds.passphrase.clone(),
        password: creds.password.clone(),
        agent: s.agent.unwrap_or(true),
        known_hosts: expand_home(s.known_hosts.as_deref().unwrap_or("~/.ssh/known_hosts")),
        host_key: s.host_key.unwrap_or_default(),
        timeout: s.timeout.unwrap_or(Duration::from_secs(10)),
    })
}

/// What makes two connections interchangeable: the target, how its key is checked, and the
/// credentials (hashed: the map is in memory, but a digest is all it needs).
fn cache_key(cs: &ConnectSpec) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    match &cs.key {
        Some(Key::File(p)) => h.update(format!("file:{}", p.display())),
        Some(Key::Text(t)) => h.update(format!("text:{t}")),
        None => h.update("none"),
    }
    h.update(format!("|{:?}|{:?}|{}", cs.passphrase, cs.password, cs.agent));
    let digest: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{}|{:?}|{}|{digest}", cs.target(), cs.host_key, cs.known_hosts.display())
}

/// Forgets a session whose connection failed, so the next call reconnects.
fn evict(lua: &Lua, session: &Arc<Session>) {
    if let Some(s) = lua.app_data_ref::<Sessions>() {
        s.0.borrow_mut().retain(|_, v| !Arc::ptr_eq(v, session));
    }
}

/// A session for `spec`, reused when this run already has one to the same target with the
/// same checks and credentials.
async fn open(lua: &Lua, spec: &str, opts: &ConnectOpts, creds: &Credentials) -> mlua::Result<Arc<Session>> {
    let ctx = Ctx::from_lua(lua)?;
    let cs = settle(&ctx, spec, opts, creds)?;
    let target = cs.target();
    let key = cache_key(&cs);
    if let Some(s) = lua.app_data_ref::<Sessions>().and_then(|s| s.0.borrow().get(&key).cloned()) {
        return Ok(s);
    }
    let (session, note) = Session::connect(cs).await.map_err(err)?;
    match note {
        HostKeyNote::Verified => {}
        HostKeyNote::Recorded { fingerprint, file } => log(
            &ctx,
            Level::Warn,
            &format!(
                "{target}: new host, key {fingerprint} recorded in {} (host_key = \"accept-new\")",
                file.display()
            ),
            serde_json::Value::Null,
        ),
        HostKeyNote::Unchecked { fingerprint } => log(
            &ctx,
            Level::Warn,
            &format!("{target}: host key {fingerprint} NOT verified (host_key = \"off\")"),
            serde_json::Value::Null,
        ),
    }
    let session = Arc::new(session);
    if let Some(s) = lua.app_data_ref::<Sessions>() {
        s.0.borrow_mut().insert(key, Arc::clone(&session));
    }
    Ok(session)
}

/// A session as Lua sees it.
pub struct SshSession {
    session: Arc<Session>,
    /// The host spec as given.
    host: String,
}

async fn connect(lua: Lua, (first, second): (Value, Option<Value>)) -> mlua::Result<Value> {
    let (spec, t) = match (first, second) {
        (Value::String(s), None | Some(Value::Nil)) => (Some(s.to_string_lossy()), lua.create_table()?),
        (Value::String(s), Some(Value::Table(t))) => (Some(s.to_string_lossy()), t),
        (Value::Table(t), None | Some(Value::Nil)) => (None, t),
        _ => return Err(error("ssh", "connect expects {host = \"...\", ...} or (\"host\", {options})")),
    };
    let (opts, creds) = parse_connect(&lua, &t)?;
    let spec = match (spec, &opts.host) {
        (Some(_), Some(_)) => return Err(error("ssh", "the host is given twice")),
        (Some(s), None) => s,
        (None, Some(h)) => h.clone(),
        (None, None) => return Err(error("ssh", "connect: no host (ssh.connect{host = \"10.0.0.5\", ...})")),
    };
    let ctx = Ctx::from_lua(&lua)?;
    ctx.refuse_in_coroutine(&lua, "ssh.connect")?;
    if let Some(p) = ctx.guard(&lua, "ssh", false, String::new)? {
        return Ok(p);
    }
    let session = open(&lua, &spec, &opts, &creds).await?;
    Ok(Value::UserData(lua.create_userdata(SshSession { session, host: spec })?))
}

fn group(lua: &Lua, name: String) -> mlua::Result<Value> {
    // Under `runbook test` the inventory is the test's (fake.lua), not runbook.toml's.
    if let Some(fake) = crate::primitives::fake_hook(lua, "ssh.group") {
        return fake.call(name);
    }
    let config = crate::config::get().map_err(|e| error("ssh", e))?;
    let Some(path) = &config.path else {
        return Err(error(
            "ssh",
            format!("group '{name}': no runbook.toml here or in a folder above (or give --config FILE)"),
        ));
    };
    match config.hosts.get(&name) {
        Some(g) => crate::lua::convert::from_json(lua, &json!(g.hosts)),
        None => {
            let known: Vec<&str> = config.hosts.keys().map(String::as_str).collect();
            Err(error(
                "ssh",
                format!(
                    "no group '{name}' in {} (groups: {})",
                    path.display(),
                    if known.is_empty() { "none".into() } else { known.join(", ") }
                ),
            ))
        }
    }
}

/// Options of `session:exec`; `env` and `stdin` (secrets allowed) are read by hand.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecOpts {
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    timeout: Option<Duration>,
    cwd: Option<String>,
    sudo: Option<bool>,
    check: Option<bool>,
    readonly: Option<bool>,
    echo: Option<bool>,
    #[allow(dead_code)]
    env: Option<IgnoredAny>,
    #[allow(dead_code)]
    stdin: Option<IgnoredAny>,
}

async fn exec(lua: Lua, this: &SshSession, cmd: Value, opts: Option<Value>) -> mlua::Result<Value> {
    let command = match cmd {
        Value::String(s) => s.to_string_lossy(),
        Value::UserData(ud) if ud.borrow::<Secret>().is_ok() => {
            return Err(error("ssh", "exec: the command is a secret: a command line is visible to every user of the host; pass secrets through env = { VAR = secret } or stdin"))
        }
        other => return Err(error("ssh", format!("exec expects a command string, got a {}", other.type_name()))),
    };
    if crate::secret::redact(&command) != command {
        return Err(error("ssh", "exec: the command contains the value of a secret: a command line is visible to every user of the host (ps); pass it through env = { VAR = secret } or stdin"));
    }
    let t = match opts {
        None | Some(Value::Nil) => lua.create_table()?,
        Some(Value::Table(t)) => t,
        Some(other) => {
            return Err(error("ssh", format!("exec options: expected a table, got a {}", other.type_name())))
        }
    };
    let plain = lua.create_table()?;
    let mut spec = ExecSpec { command: command.clone(), ..Default::default() };
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair?;
        match &k {
            Value::String(s) if s.to_string_lossy() == "env" => {
                let Value::Table(env) = v else {
                    return Err(error("ssh", "exec: env must be a table of NAME = value"));
                };
                for pair in env.pairs::<String, Value>() {
                    let (name, value) = pair?;
                    spec.env.push((name.clone(), text_or_secret("ssh", &format!("env.{name}"), value)?));
                }
                spec.env.sort();
            }
            Value::String(s) if s.to_string_lossy() == "stdin" => {
                spec.stdin = text_or_secret("ssh", "stdin", v)?.into_bytes()
            }
            _ => plain.set(k, v)?,
        }
    }
    let o: ExecOpts = crate::primitives::options(&lua, "ssh", "exec options", Some(Value::Table(plain)))?;
    spec.timeout = o.timeout.filter(|d| !d.is_zero());
    spec.cwd = o.cwd;
    spec.sudo = o.sudo.unwrap_or(false);
    let ctx = Ctx::from_lua(&lua)?;
    ctx.refuse_in_coroutine(&lua, "session:exec")?;
    let host = this.host.clone();
    if let Some(p) = ctx.guard(&lua, "ssh", !o.readonly.unwrap_or(false), || format!("run `{command}` on {host}"))? {
        return Ok(p);
    }
    // The command's marker names the run, step and attempt; the first command of an attempt that
    // follows an earlier one first stops what earlier attempts left running on this host.
    let label = ctx.work_label();
    if let (Some(run_id), Some(step)) = (ctx.run_id(), ctx.current_step()) {
        spec.marker = crate::primitives::ssh::marker(&label, &run_id, &step);
    }
    if let Some(marker) = &spec.marker {
        let changed = {
            let mut last = this.session.marker.lock().unwrap_or_else(|p| p.into_inner());
            let changed = *last != *marker;
            *last = marker.clone();
            changed
        };
        if changed && label.rerun {
            let run_id = ctx.run_id().unwrap_or_default();
            match this.session.stop_earlier(&run_id, marker, spec.sudo).await {
                Ok(said) => said.into_iter().for_each(|m| ctx.emit("warning", json!({ "message": m }))),
                Err(e) => ctx.emit(
                    "warning",
                    json!({ "message": format!("could not look for work left running on {host}: {e}") }),
                ),
            }
        }
    }
    let echo = o.echo.unwrap_or(true);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let session = Arc::clone(&this.session);
    let mut run = std::pin::pin!(session.exec(spec, tx));
    let mut shown = 0usize;
    let mut show = |stream: Stream, line: String| {
        if echo {
            shown += 1;
            if shown <= MAX_ECHO_LINES {
                let stream = if stream == Stream::Stderr { "stderr" } else { "stdout" };
                ctx.emit("output", json!({"stream": stream, "line": line, "host": host}));
            }
        }
    };
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            Some((stream, line)) = rx.recv() => show(stream, line),
        }
    };
    while let Ok((stream, line)) = rx.try_recv() {
        show(stream, line);
    }
    if shown > MAX_ECHO_LINES {
        let hidden = shown - MAX_ECHO_LINES;
        log(
            &ctx,
            Level::Info,
            &format!("{host}: {hidden} more output line(s) not shown; the result holds all of them"),
            serde_json::Value::Null,
        );
    }
    if let Err(SshError::Remote { .. }) = &result {
        evict(&lua, &this.session);
    }
    let r = result.map_err(err)?;
    if r.code != 0 && o.check.unwrap_or(true) {
        return Err(err(SshError::Exit {
            target: this.session.target.clone(),
            command,
            code: r.code,
            stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
        }));
    }
    let t = lua.create_table()?;
    t.set("code", r.code)?;
    t.set("stdout", lua.create_string(&r.stdout)?)?;
    t.set("stderr", lua.create_string(&r.stderr)?)?;
    t.set("ms", r.ms)?;
    t.set("host", this.host.as_str())?;
    Ok(Value::Table(t))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferOpts {
    /// Octal text ("0644") or the permission bits as a number.
    mode: Option<serde_json::Value>,
    verify: Option<bool>,
}

fn mode_of(v: &Option<serde_json::Value>) -> mlua::Result<Option<i32>> {
    let bad = || error("ssh", "upload: mode is octal text such as \"0644\" (or the bits as a number)");
    match v {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => i32::from_str_radix(s.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| (0..=0o7777).contains(m))
            .map(Some)
            .ok_or_else(bad),
        Some(serde_json::Value::Number(n)) => {
            n.as_i64().filter(|m| (0..=0o7777).contains(m)).map(|m| Some(m as i32)).ok_or_else(bad)
        }
        Some(_) => Err(bad()),
    }
}

fn transfer_table(lua: &Lua, t: super::Transfer) -> mlua::Result<Value> {
    let out = lua.create_table()?;
    out.set("bytes", t.bytes)?;
    out.set("sha256", t.sha256)?;
    out.set("ms", t.ms)?;
    Ok(Value::Table(out))
}

impl UserData for SshSession {
    fn add_fields<F: mlua::UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("host", |_, this| Ok(this.host.clone()));
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| Ok(format!("ssh session {}", this.session.target)));
        methods.add_async_method("exec", |lua, this, (cmd, opts): (Value, Option<Value>)| async move {
            exec(lua, &this, cmd, opts).await
        });
        methods.add_async_method(
            "upload",
            |lua, this, (local, remote, opts): (String, String, Option<Value>)| async move {
                let o: TransferOpts = crate::primitives::options(&lua, "ssh", "upload options", opts)?;
                let mode = mode_of(&o.mode)?;
                let ctx = Ctx::from_lua(&lua)?;
                ctx.refuse_in_coroutine(&lua, "session:upload")?;
                let path = ctx.resolve_path(&local);
                if let Some(p) = ctx.guard(&lua, "ssh", true, || format!("upload {local} to {}:{remote}", this.host))? {
                    return Ok(p);
                }
                let t = this.session.upload(&path, &remote, mode, o.verify.unwrap_or(true)).await.map_err(err)?;
                transfer_table(&lua, t)
            },
        );
        methods.add_async_method(
            "download",
            |lua, this, (remote, local, opts): (String, String, Option<Value>)| async move {
                let o: TransferOpts = crate::primitives::options(&lua, "ssh", "download options", opts)?;
                if o.mode.is_some() {
                    return Err(error("ssh", "download options: mode applies to uploads"));
                }
                let ctx = Ctx::from_lua(&lua)?;
                ctx.refuse_in_coroutine(&lua, "session:download")?;
                let path = ctx.resolve_path(&local);
                if let Some(p) =
                    ctx.guard(&lua, "ssh", true, || format!("download {}:{remote} to {local}", this.host))?
                {
                    return Ok(p);
                }
                let t = this.session.download(&remote, &path, o.verify.unwrap_or(true)).await.map_err(err)?;
                transfer_table(&lua, t)
            },
        );
        methods.add_method("close", |lua, this, ()| {
            evict(lua, &this.session);
            Ok(())
        });
    }
}

/// The hosts of a fan-out: an array of host specs, or a group's name.
fn host_list(lua: &Lua, v: Value) -> mlua::Result<Vec<String>> {
    let bad = |why: String| error("ssh", format!("hosts: {why}"));
    let list = match v {
        Value::String(s) => group(lua, s.to_string_lossy())?,
        other => other,
    };
    let Value::Table(t) = list else {
        return Err(bad(format!("expected an array of host specs, got a {}", list.type_name())));
    };
    let n = t.raw_len();
    let mut hosts = Vec::with_capacity(n);
    for i in 1..=n {
        match t.raw_get::<Value>(i)? {
            Value::String(s) => hosts.push(s.to_string_lossy()),
            other => return Err(bad(format!("item {i} is a {}", other.type_name()))),
        }
    }
    if t.pairs::<Value, Value>().count() != n {
        return Err(bad("the table has keys other than 1..n (a hole, or named keys)".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for h in &hosts {
        super::parse_spec(h).map_err(err)?;
        if !seen.insert(h) {
            return Err(bad(format!("'{h}' is listed twice")));
        }
    }
    Ok(hosts)
}

/// Options of `ssh.each` and `ssh.rolling`.
struct FanOpts {
    concurrency: usize,
    max_failures: Amount,
    batch: Amount,
    first: usize,
    pause: Duration,
    health: Option<Function>,
    connect: (ConnectOpts, Credentials),
}

fn fan_opts(lua: &Lua, what: &str, v: Option<Value>, rolling: bool) -> mlua::Result<FanOpts> {
    let mut o = FanOpts {
        concurrency: 20,
        max_failures: Amount::Count(0),
        batch: Amount::Count(1),
        first: 0,
        pause: Duration::ZERO,
        health: None,
        connect: (ConnectOpts::default(), Credentials::default()),
    };
    let t = match v {
        None | Some(Value::Nil) => return Ok(o),
        Some(Value::Table(t)) => t,
        Some(other) => {
            return Err(error("ssh", format!("{what} options: expected a table, got a {}", other.type_name())))
        }
    };
    let keys: &[&str] = if rolling {
        &["batch", "first", "pause", "health", "max_failures", "connect"]
    } else {
        &["concurrency", "max_failures", "connect"]
    };
    for pair in t.pairs::<String, Value>() {
        let (k, v) = pair?;
        let bad = |why: String| error("ssh", format!("{what} options: {k}: {why}"));
        match (k.as_str(), v) {
            (k, _) if !keys.contains(&k) => {
                return Err(error(
                    "ssh",
                    format!("{what} options: unknown key `{k}`, expected one of {}", keys.join(", ")),
                ))
            }
            ("concurrency", Value::Integer(n)) if (1..=1000).contains(&n) => o.concurrency = n as usize,
            ("concurrency", _) => return Err(bad("a whole number from 1 to 1000".into())),
            ("max_failures", v) => o.max_failures = Amount::parse(&v, "max_failures").map_err(|e| error("ssh", e))?,
            ("batch", v) => o.batch = Amount::parse(&v, "batch").map_err(|e| error("ssh", e))?,
            ("first", Value::Integer(n)) if n >= 0 => o.first = n as usize,
            ("first", _) => return Err(bad("a whole number of hosts".into())),
            ("pause", v) => o.pause = crate::duration::from_lua(&v).map_err(bad)?,
            ("health", Value::Function(f)) => o.health = Some(f),
            ("health", _) => return Err(bad("a function(host) that raises or returns false when unhealthy".into())),
            ("connect", Value::Table(c)) => o.connect = parse_connect(lua, &c)?,
            ("connect", _) => return Err(bad("a table of ssh.connect options".into())),
            (k, _) => return Err(error("ssh", format!("{what} options: unexpected key `{k}`"))),
        }
    }
    Ok(o)
}

/// A host's outcome.
#[derive(Clone)]
struct Outcome {
    status: &'static str,
    result: Option<serde_json::Value>,
    error: Option<String>,
}

/// A fan-out in progress: where it journals, and what it has seen.
struct Fan {
    ctx: Rc<Ctx>,
    /// (run, step) when items are journaled.
    journal: Option<(String, String)>,
    prefix: String,
    recorded: HashMap<String, ItemRecord>,
    outcomes: BTreeMap<String, Outcome>,
    failures: usize,
    limit: usize,
}

impl Fan {
    async fn new(ctx: Rc<Ctx>, kind: &str, limit: usize) -> mlua::Result<Fan> {
        let ordinal = ctx.next_fanout();
        let prefix = format!("{kind}#{ordinal}");
        let journal = match (ctx.run_id(), ctx.current_step(), &ctx.journal) {
            (Some(run), Some(step), Some(_)) => Some((run, step)),
            _ => None,
        };
        let mut recorded = HashMap::new();
        if let (Some((run, step)), Some(j)) = (&journal, &ctx.journal) {
            for item in j.items(run, Some(step)).await.map_err(|e| error("ssh", e))? {
                if let Some(host) = item.item.strip_prefix(&format!("{prefix}/")) {
                    recorded.insert(host.to_string(), item);
                }
            }
        }
        Ok(Fan { ctx, journal, prefix, recorded, outcomes: BTreeMap::new(), failures: 0, limit })
    }

    /// The recorded success of a host in an earlier attempt, if any.
    fn done_before(&self, host: &str) -> Option<Outcome> {
        self.recorded.get(host).filter(|r| r.status == "ok").map(|r| Outcome {
            status: "ok",
            result: r.result.clone(),
            error: None,
        })
    }

    /// Records a host's outcome. Its result is kept as the journal stores it (redacted), so
    /// that a first run and a resumed one return the same values.
    async fn record(&mut self, host: &str, mut outcome: Outcome) -> mlua::Result<()> {
        if outcome.status == "failed" {
            self.failures += 1;
        }
        if let Some(r) = &mut outcome.result {
            crate::secret::redact_json(r);
        }
        if let (Some((run, step)), Some(j)) = (&self.journal, &self.ctx.journal) {
            let result = outcome.result.clone();
            let item = ItemRecord {
                step: step.clone(),
                item: format!("{}/{host}", self.prefix),
                status: outcome.status.to_string(),
                result,
                error: outcome.error.as_deref().map(|e| crate::secret::redact(e).into_owned()),
                updated_at: crate::journal::now_ts(),
            };
            j.put_item(run, &self.ctx.me, &item).await.map_err(|e| error("ssh", e))?;
        }
        self.outcomes.insert(host.to_string(), outcome);
        Ok(())
    }

    fn over_limit(&self) -> bool {
        self.failures > self.limit
    }

    fn to_lua(&self, lua: &Lua) -> mlua::Result<Table> {
        let t = lua.create_table()?;
        for (host, o) in &self.outcomes {
            let e = lua.create_table()?;
            e.set("ok", o.status == "ok")?;
            e.set("status", o.status)?;
            if let Some(r) = &o.result {
                e.set("result", crate::lua::convert::from_json(lua, r)?)?;
            }
            if let Some(err) = &o.error {
                e.set("error", err.as_str())?;
            }
            t.set(host.as_str(), e)?;
        }
        Ok(t)
    }

    /// The error that stops a fan-out past its failure limit, with every host's story.
    fn failure(&self, what: &str) -> mlua::Error {
        let failed: Vec<String> = self
            .outcomes
            .iter()
            .filter(|(_, o)| o.status == "failed")
            .map(|(h, o)| format!("{h}: {}", o.error.as_deref().unwrap_or("failed")))
            .collect();
        let not_run = self.outcomes.values().filter(|o| o.status == "not_run").count();
        error(
            "ssh",
            format!(
                "{what}: {} of {} hosts failed (max_failures = {}){}: {}",
                self.failures,
                self.outcomes.len(),
                self.limit,
                if not_run > 0 { format!(", {not_run} not run") } else { String::new() },
                failed.join("; ")
            ),
        )
    }
}

type HostFuture<'a> = Pin<Box<dyn Future<Output = (String, Outcome)> + 'a>>;

/// The first line of a Lua error, without its traceback.
fn message_of(e: &mlua::Error) -> String {
    let (msg, _) = crate::lua::errors::describe(e);
    msg.lines().next().unwrap_or_default().to_string()
}

/// Runs `f(session, host)` for one host and turns what happened into an outcome.
async fn run_host(lua: Lua, host: String, f: Function, connect: Rc<(ConnectOpts, Credentials)>) -> (String, Outcome) {
    let started = Instant::now();
    let failed = |e: String| Outcome { status: "failed", result: None, error: Some(e) };
    // Under `runbook test` the host's session is its fake's (fake.lua).
    let ud = match crate::primitives::fake_hook(&lua, "ssh") {
        Some(fake) => match fake.call_async::<Value>(host.clone()).await {
            Ok(v) => v,
            Err(e) => return (host, failed(message_of(&e))),
        },
        None => {
            let session = match open(&lua, &host, &connect.0, &connect.1).await {
                Ok(s) => s,
                Err(e) => return (host, failed(message_of(&e))),
            };
            match lua.create_userdata(SshSession { session, host: host.clone() }) {
                Ok(ud) => Value::UserData(ud),
                Err(e) => return (host, failed(e.to_string())),
            }
        }
    };
    let outcome = match f.call_async::<Value>((ud, host.clone())).await {
        Ok(v) => match crate::lua::convert::to_json(&v) {
            Ok(json) => Outcome { status: "ok", result: Some(json).filter(|j| !j.is_null()), error: None },
            Err(e) => failed(format!("result: {e}")),
        },
        Err(e) => failed(message_of(&e)),
    };
    if let Ok(ctx) = Ctx::from_lua(&lua) {
        let took = crate::duration::human(started.elapsed());
        match &outcome.error {
            None => log(&ctx, Level::Info, &format!("{host}: ok ({took})"), serde_json::Value::Null),
            Some(e) => log(&ctx, Level::Warn, &format!("{host}: failed ({took}): {e}"), serde_json::Value::Null),
        }
    }
    (host, outcome)
}

/// Runs `f` on `hosts`, `concurrency` at a time, recording each outcome; once failures pass the
/// limit no host is started any more. Returns the hosts that succeeded in this call.
async fn run_hosts(
    lua: &Lua,
    fan: &mut Fan,
    hosts: &[String],
    f: &Function,
    concurrency: usize,
    connect: &Rc<(ConnectOpts, Credentials)>,
) -> mlua::Result<Vec<String>> {
    let mut queue: std::collections::VecDeque<String> = hosts.iter().cloned().collect();
    let mut running: FuturesUnordered<HostFuture> = FuturesUnordered::new();
    let mut succeeded = Vec::new();
    loop {
        while running.len() < concurrency && !fan.over_limit() {
            let Some(host) = queue.pop_front() else { break };
            running.push(Box::pin(run_host(lua.clone(), host, f.clone(), Rc::clone(connect))));
        }
        let Some((host, outcome)) = running.next().await else { break };
        if outcome.status == "ok" {
            succeeded.push(host.clone());
        }
        fan.record(&host, outcome).await?;
    }
    for host in queue {
        fan.record(&host, Outcome { status: "not_run", result: None, error: None }).await?;
    }
    Ok(succeeded)
}

async fn each(lua: Lua, (hosts, f, opts): (Value, Function, Option<Value>)) -> mlua::Result<Table> {
    let hosts = host_list(&lua, hosts)?;
    let o = fan_opts(&lua, "each", opts, false)?;
    let ctx = Ctx::from_lua(&lua)?;
    ctx.refuse_in_coroutine(&lua, "ssh.each")?;
    let limit = o.max_failures.failures_of(hosts.len());
    let mut fan = Fan::new(Rc::clone(&ctx), "each", limit).await?;
    let mut todo = Vec::new();
    for h in &hosts {
        match fan.done_before(h) {
            Some(done) => {
                fan.outcomes.insert(h.clone(), done);
            }
            None => todo.push(h.clone()),
        }
    }
    if todo.len() < hosts.len() {
        let skipped = hosts.len() - todo.len();
        log(
            &ctx,
            Level::Info,
            &format!("{skipped} host(s) succeeded in an earlier attempt: not run again"),
            serde_json::Value::Null,
        );
    }
    let connect = Rc::new(o.connect);
    run_hosts(&lua, &mut fan, &todo, &f, o.concurrency, &connect).await?;
    if fan.over_limit() {
        return Err(fan.failure("ssh.each"));
    }
    fan.to_lua(&lua)
}

async fn rolling(lua: Lua, (hosts, f, opts): (Value, Function, Option<Value>)) -> mlua::Result<Table> {
    let hosts = host_list(&lua, hosts)?;
    let o = fan_opts(&lua, "rolling", opts, true)?;
    let ctx = Ctx::from_lua(&lua)?;
    ctx.refuse_in_coroutine(&lua, "ssh.rolling")?;
    let limit = o.max_failures.failures_of(hosts.len());
    let batch = o.batch.batch_of(hosts.len());
    let plan = batches(hosts.len(), o.first, batch);
    let mut fan = Fan::new(Rc::clone(&ctx), "rolling", limit).await?;
    let connect = Rc::new(o.connect);
    let count = plan.len();
    let mut acted_before = false;
    for (i, range) in plan.into_iter().enumerate() {
        let batch_hosts = &hosts[range];
        if fan.over_limit() {
            for h in batch_hosts {
                fan.record(h, Outcome { status: "not_run", result: None, error: None }).await?;
            }
            continue;
        }
        let mut todo = Vec::new();
        for h in batch_hosts {
            match fan.done_before(h) {
                Some(done) => {
                    fan.outcomes.insert(h.clone(), done);
                }
                None => todo.push(h.clone()),
            }
        }
        if todo.is_empty() {
            continue;
        }
        if acted_before && !o.pause.is_zero() {
            log(
                &ctx,
                Level::Info,
                &format!("pausing {} before batch {}", crate::duration::human(o.pause), i + 1),
                serde_json::Value::Null,
            );
            crate::clock::sleep_in_step(o.pause).await.map_err(|e| error("ssh", e))?;
        }
        acted_before = true;
        log(&ctx, Level::Info, &format!("batch {} of {count}: {}", i + 1, todo.join(", ")), serde_json::Value::Null);
        // The action itself records failures; a success is recorded once the health check passed.
        let mut action = Fan {
            ctx: Rc::clone(&ctx),
            journal: None,
            prefix: fan.prefix.clone(),
            recorded: HashMap::new(),
            outcomes: BTreeMap::new(),
            failures: fan.failures,
            limit: usize::MAX,
        };
        run_hosts(&lua, &mut action, &todo, &f, todo.len(), &connect).await?;
        for (h, outcome) in action.outcomes {
            if outcome.status != "ok" {
                fan.record(&h, outcome).await?;
                continue;
            }
            let done = match &o.health {
                None => Ok(()),
                Some(health) => match health.call_async::<Value>(h.clone()).await {
                    Ok(Value::Boolean(false)) => Err("health check returned false".to_string()),
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("health check: {}", message_of(&e))),
                },
            };
            let outcome = match done {
                Ok(()) => outcome,
                Err(e) => {
                    log(&ctx, Level::Warn, &format!("{h}: {e}"), serde_json::Value::Null);
                    Outcome { status: "failed", result: outcome.result, error: Some(e) }
                }
            };
            fan.record(&h, outcome).await?;
        }
    }
    if fan.over_limit() {
        return Err(fan.failure("ssh.rolling halted"));
    }
    fan.to_lua(&lua)
}
