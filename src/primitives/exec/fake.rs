//! What `exec`'s fake (fake.lua) needs of Rust: the checks a real `exec` makes of its argument.
use mlua::{Lua, Table, Value};

pub fn support(lua: &Lua, _world: &std::path::Path) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("check", lua.create_function(|_, arg: Value| super::lua::check_for_fake(arg))?)?;
    Ok(t)
}
