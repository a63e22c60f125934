//! Lua bindings: `secret(name)` / `secret{env=, file=, name=}`, `env(name, default)`,
//! `sleep(duration)`, `now()`, `fail(message)`, `current_run()`.
use std::path::Path;

use mlua::{Lua, Value};

use crate::engine::Ctx;
use crate::primitives::error;

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let g = lua.globals();
    g.set("secret", lua.create_function(secret)?)?;
    g.set(
        "env",
        lua.create_function(|lua, (name, default): (String, Option<Value>)| {
            Ok(match std::env::var(&name) {
                Ok(v) if !v.is_empty() => Value::String(lua.create_string(v)?),
                _ => default.unwrap_or(Value::Nil),
            })
        })?,
    )?;
    g.set("sleep", lua.create_async_function(sleep)?)?;
    g.set("now", lua.create_function(|_, ()| Ok(super::now()))?)?;
    g.set("current_run", lua.create_function(current_run)?)?;
    g.set(
        "fail",
        lua.create_function(|_, message: Value| -> mlua::Result<()> {
            let text = match message {
                Value::String(s) => s.to_string_lossy(),
                Value::Nil => "failed".to_string(),
                other => other.to_string()?,
            };
            Err(mlua::Error::runtime(text))
        })?,
    )?;
    Ok(())
}

/// `current_run()`: `{id, runbook, trigger, resumed}` of the run, nil before `runbook{}`.
fn current_run(lua: &Lua, (): ()) -> mlua::Result<Value> {
    let ctx = Ctx::from_lua(lua)?;
    let Some(id) = ctx.run_id() else { return Ok(Value::Nil) };
    let t = lua.create_table()?;
    t.set("id", id)?;
    t.set("runbook", ctx.runbook_name())?;
    t.set("trigger", ctx.trigger.clone())?;
    t.set("resumed", ctx.resume.is_some() && !ctx.queued)?;
    // A runbook may ask whether this is a dry run (every primitive that changes the world only
    // says what it would do).
    t.set("dry_run", ctx.mode == crate::engine::Mode::DryRun)?;
    Ok(Value::Table(t))
}

fn secret(lua: &Lua, spec: Value) -> mlua::Result<Value> {
    let ctx = Ctx::from_lua(lua)?;
    let base = ctx.abs_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let made = match spec {
        Value::String(s) => {
            let var = s.to_string_lossy();
            if ctx.mode.is_static() {
                // Plan, check and doc use no secret, but their output is shown and committed:
                // the value, when it can be read, is known to the redactor all the same.
                if let Ok(v) = std::env::var(&var) {
                    crate::secret::register(&v, &var);
                }
                Ok(crate::secret::Secret::new(&var, ""))
            } else {
                super::secret_from_env(&var, &var)
            }
        }
        Value::Table(t) => {
            for pair in t.pairs::<String, Value>() {
                let (k, _) = pair?;
                if !["env", "file", "name", "value"].contains(&k.as_str()) {
                    return Err(error("secret", format!("unknown key '{k}' (known: env, file, value, name)")));
                }
            }
            // A value the runbook made (a generated password): a secret from now on.
            if let Some(v) = t.get::<Option<Value>>("value")? {
                let name: Option<String> = t.get("name")?;
                let Some(name) = name else {
                    return Err(error("secret", "secret{ value = ... } needs a name = \"...\" to show it by"));
                };
                if t.contains_key("env")? || t.contains_key("file")? {
                    return Err(error("secret", "give one of env, file or value"));
                }
                let value = match v {
                    Value::String(s) => {
                        s.to_str().map(|s| s.to_string()).map_err(|_| error("secret", "value: not UTF-8 text"))?
                    }
                    Value::UserData(ud) if ud.borrow::<crate::secret::Secret>().is_ok() => {
                        ud.borrow::<crate::secret::Secret>()?.expose().to_string()
                    }
                    other => {
                        return Err(error("secret", format!("value: expected a string, got a {}", other.type_name())))
                    }
                };
                if value.is_empty() {
                    return Err(error("secret", "value: the secret is empty"));
                }
                let made = crate::secret::Secret::new(&name, value);
                return lua.create_userdata(made).map(Value::UserData);
            }
            let env: Option<String> = t.get("env")?;
            let file: Option<String> = t.get("file")?;
            let name: Option<String> = t.get("name")?;
            let name = name.or_else(|| env.clone()).or_else(|| {
                file.as_deref().and_then(|f| Path::new(f).file_name().map(|n| n.to_string_lossy().to_string()))
            });
            let Some(name) = name else {
                return Err(error("secret", "give env = \"VAR\" or file = \"path\""));
            };
            if ctx.mode.is_static() {
                // As above: not used, but known to the redactor.
                let known = match (&env, &file) {
                    (Some(var), None) => std::env::var(var).ok(),
                    (None, Some(f)) => {
                        super::secret_from_file(Path::new(f), &base, &name).ok().map(|s| s.expose().to_string())
                    }
                    _ => None,
                };
                if let Some(v) = known {
                    crate::secret::register(&v, &name);
                }
            }
            match (env, file) {
                _ if ctx.mode.is_static() => Ok(crate::secret::Secret::new(&name, "")),
                (Some(var), None) => super::secret_from_env(&var, &name),
                (None, Some(file)) => super::secret_from_file(Path::new(&file), &base, &name),
                _ => return Err(error("secret", "give exactly one of env = \"VAR\" or file = \"path\"")),
            }
        }
        other => {
            return Err(error(
                "secret",
                format!("expects a name or {{env=..., file=...}}, got a {}", other.type_name()),
            ))
        }
    };
    if let Ok(s) = &made {
        if !ctx.mode.is_static() && s.expose().len() < crate::secret::MIN_SCRUB_LEN {
            let message = format!(
                "secret '{}' is shorter than {} characters: it prints as <secret:{}>, but its value is not scrubbed from other text",
                s.name(),
                crate::secret::MIN_SCRUB_LEN,
                s.name()
            );
            ctx.emit("warning", serde_json::json!({ "message": message }));
        }
    }
    match made {
        Ok(s) => Ok(Value::UserData(lua.create_userdata(s)?)),
        Err(e) => Err(mlua::Error::runtime(e)),
    }
}

async fn sleep(lua: Lua, d: Value) -> mlua::Result<()> {
    let ctx = Ctx::from_lua(&lua)?;
    ctx.refuse_in_coroutine(&lua, "sleep()")?;
    let d = crate::duration::from_lua(&d).map_err(|e| error("sleep", e))?;
    if ctx.mode.is_static() {
        return Ok(());
    }
    crate::clock::sleep_in_step(d).await.map_err(mlua::Error::runtime)
}
