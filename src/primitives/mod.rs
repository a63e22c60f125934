//! Primitives: plain async Rust, each in its own room beside its Lua binding, all registered
//! from the one list below. Adding a primitive touches its room and one line here.
pub mod backup;
pub mod builtins;
pub mod db;
pub mod exec;
pub mod http;
pub mod log;
pub mod metrics;
pub mod ssh;
pub mod storage;
pub mod tls;

use mlua::{Lua, Value};

/// A primitive's Lua registration: installs its globals into the runbook environment.
pub type Register = fn(&Lua) -> mlua::Result<()>;

/// What a primitive's fake needs of Rust (the real argument checks, an in-memory store ...),
/// given the folder of the test's world (files the fakes keep across a crash and its resume).
pub type FakeSupport = fn(&Lua, &std::path::Path) -> mlua::Result<mlua::Table>;

/// A primitive: its global, its registration, and its fake for `runbook test` (the Lua source
/// of `fake.lua` in its room, a function of the fakes kit (stdlib/internal/fakes.lua) and of
/// its `support`). A primitive cannot be listed without its fake, so none ships that a test
/// could not replace.
pub struct Primitive {
    pub name: &'static str,
    pub register: Register,
    pub fake: &'static str,
    pub support: Option<FakeSupport>,
}

macro_rules! primitive {
    ($name:ident) => {
        primitive!($name, None)
    };
    ($name:ident, support) => {
        primitive!($name, Some($name::fake::support))
    };
    ($name:ident, $support:expr) => {
        Primitive {
            name: stringify!($name),
            register: $name::lua::register,
            fake: include_str!(concat!(stringify!($name), "/fake.lua")),
            support: $support,
        }
    };
}

/// Every primitive, by the global it installs.
pub const PRIMITIVES: &[Primitive] = &[
    primitive!(backup),
    primitive!(builtins),
    primitive!(db, support),
    primitive!(exec, support),
    primitive!(http, support),
    primitive!(log),
    primitive!(metrics),
    primitive!(ssh),
    primitive!(storage, support),
    primitive!(tls),
];

pub fn register_all(lua: &Lua) -> mlua::Result<()> {
    for p in PRIMITIVES {
        (p.register)(lua)?;
    }
    Ok(())
}

/// Under `runbook test`: the function a primitive's fake set (fake.lua, through the kit's
/// `hook`) for the calls Rust makes itself: the hosts of an ssh fan-out, a store's operations,
/// a backup's dump. None outside tests.
pub fn fake_hook(lua: &Lua, primitive: &str) -> Option<mlua::Function> {
    lua.named_registry_value::<Option<mlua::Function>>(&format!("runbook.fake.{primitive}")).ok().flatten()
}

/// After an attempt was abandoned (its step timed out, the run was cancelled or stopped): stops
/// what it left running on servers, and says so in the run's events.
pub async fn stop_abandoned(ctx: &crate::engine::Ctx, label: &crate::engine::WorkLabel) {
    let mut said = db::orphans::stop_abandoned(label).await;
    said.extend(exec::orphans::stop_abandoned(label).await);
    for said in said {
        ctx.out.emit("warning", None, serde_json::json!({ "message": said }));
    }
}

/// The error a primitive raises into Lua: `primitive: cause`, located by the engine.
pub fn error(primitive: &str, cause: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(crate::secret::redact(&format!("{primitive}: {cause}")).into_owned())
}

/// An options table (or nil) as the serde struct `T`, whose `deny_unknown_fields` turns a
/// misspelt key into an error naming it: `primitive: what: unknown key `x`, expected one of ...`.
pub fn options<T: serde::de::DeserializeOwned + Default>(
    lua: &Lua,
    primitive: &str,
    what: &str,
    v: Option<Value>,
) -> mlua::Result<T> {
    match v {
        None | Some(Value::Nil) => Ok(T::default()),
        Some(v @ Value::Table(_)) => {
            let _ = lua;
            serde_path_to_error::deserialize(mlua::serde::Deserializer::new(v)).map_err(|e| {
                let path = e.path().to_string();
                let text = e.inner().to_string();
                let text = text.trim_start_matches("deserialize error: ").replace("unknown field", "unknown key");
                match path.as_str() {
                    "." | "" => error(primitive, format!("{what}: {text}")),
                    _ if text.starts_with("unknown key") => error(primitive, format!("{what}: {text}")),
                    _ => error(primitive, format!("{what}: {path}: {text}")),
                }
            })
        }
        Some(other) => Err(error(primitive, format!("{what}: expected a table, got a {}", other.type_name()))),
    }
}

/// A string, number, boolean or secret (its value), and whether it must be kept out of sight: a
/// secret, or a string that holds one (joined with `..`).
pub fn text_and_secrecy(primitive: &str, what: &str, v: Value) -> mlua::Result<(String, bool)> {
    match v {
        Value::String(s) => {
            let s = s.to_string_lossy();
            let secret = crate::secret::redact(&s) != s;
            Ok((s, secret))
        }
        Value::Integer(i) => Ok((i.to_string(), false)),
        Value::Number(n) => Ok((n.to_string(), false)),
        Value::Boolean(b) => Ok((b.to_string(), false)),
        Value::UserData(ud) => match ud.borrow::<crate::secret::Secret>() {
            Ok(s) => Ok((s.expose().to_string(), true)),
            Err(_) => Err(error(primitive, format!("{what}: expected a string or a secret"))),
        },
        other => Err(error(primitive, format!("{what}: expected a string or a secret, got a {}", other.type_name()))),
    }
}

/// A string, number, boolean or secret (its value) for env and stdin, where secrets may go.
pub fn text_or_secret(primitive: &str, what: &str, v: Value) -> mlua::Result<String> {
    match v {
        Value::String(s) => Ok(s.to_string_lossy()),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        Value::UserData(ud) => match ud.borrow::<crate::secret::Secret>() {
            Ok(s) => Ok(s.expose().to_string()),
            Err(_) => Err(error(primitive, format!("{what}: expected a string or a secret"))),
        },
        other => Err(error(primitive, format!("{what}: expected a string or a secret, got a {}", other.type_name()))),
    }
}
