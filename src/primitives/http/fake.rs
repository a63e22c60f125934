//! What `http`'s fake (fake.lua) needs of Rust: a body read as JSON as the real response reads it.
use mlua::{Lua, Table};

pub fn support(lua: &Lua, _world: &std::path::Path) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "json_decode",
        lua.create_function(|lua, text: mlua::LuaString| {
            let v: serde_json::Value = serde_json::from_slice(&text.as_bytes())
                .map_err(|e| mlua::Error::runtime(format!("http: the body is not JSON: {e}")))?;
            crate::lua::convert::from_json(lua, &v)
        })?,
    )?;
    Ok(t)
}
