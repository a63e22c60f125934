//! Lua binding of `log`: `log.debug/info/warn/error(message, [fields])` and `print(...)`.
use mlua::{Lua, MultiValue, Value};
use serde_json::Value as Json;

use super::{log, Level};
use crate::engine::Ctx;

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let t = lua.create_table()?;
    for level in [Level::Debug, Level::Info, Level::Warn, Level::Error] {
        t.set(
            level.as_str(),
            lua.create_function(move |lua, (message, fields): (Value, Option<Value>)| {
                let ctx = Ctx::from_lua(lua)?;
                let fields = match fields {
                    None | Some(Value::Nil) => Json::Null,
                    Some(v) => {
                        crate::lua::convert::to_json(&v).unwrap_or_else(|e| Json::String(format!("<fields: {e}>")))
                    }
                };
                log(&ctx, level, &to_text(lua, message)?, fields);
                Ok(())
            })?,
        )?;
    }
    lua.globals().set("log", t)?;
    lua.globals().set(
        "print",
        lua.create_function(|lua, args: MultiValue| {
            let ctx = Ctx::from_lua(lua)?;
            let parts = args.into_iter().map(|v| to_text(lua, v)).collect::<mlua::Result<Vec<_>>>()?;
            log(&ctx, Level::Info, &parts.join("\t"), Json::Null);
            Ok(())
        })?,
    )
}

/// `tostring` semantics (so secrets print as `<secret:NAME>` and tables as Lua shows them).
fn to_text(lua: &Lua, v: Value) -> mlua::Result<String> {
    Ok(match v {
        Value::String(s) => s.to_string_lossy(),
        other => {
            let tostring: mlua::Function = lua.globals().get("tostring")?;
            tostring.call::<String>(other)?
        }
    })
}
