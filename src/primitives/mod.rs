//! Primitives: plain async Rust, each in its own room beside its Lua binding, all registered
//! from the one list below. Adding a primitive touches its room and one line here.
pub mod builtins;
pub mod db;
pub mod exec;
pub mod log;

use mlua::Lua;

/// A primitive's Lua registration: installs its globals into the runbook environment.
pub type Register = fn(&Lua) -> mlua::Result<()>;

/// Every primitive, by the global it installs.
pub const PRIMITIVES: &[(&str, Register)] = &[
    ("builtins", builtins::lua::register),
    ("db", db::lua::register),
    ("exec", exec::lua::register),
    ("log", log::lua::register),
];

pub fn register_all(lua: &Lua) -> mlua::Result<()> {
    for (_, register) in PRIMITIVES {
        register(lua)?;
    }
    Ok(())
}

/// The error a primitive raises into Lua: `primitive: cause`, located by the engine.
pub fn error(primitive: &str, cause: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(crate::secret::redact(&format!("{primitive}: {cause}")).into_owned())
}
