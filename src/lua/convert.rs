//! Lua values <-> JSON, for step results, params and events.
//!
//! Step results may be nil, booleans, numbers, strings, the `null` sentinel, or tables of
//! those. A table with keys 1..n is an array; a table with string keys is an object; a mix, a
//! function, a coroutine, a userdata or a cycle is refused with the path to the bad value.
//! Secrets become `"<secret:NAME>"`; placeholders (plan, dry run) become `"<dry-run:WHAT>"`.
use mlua::{Lua, LuaSerdeExt, Table, Value};
use serde_json::{Map, Number, Value as Json};

use crate::secret::Secret;

const MAX_DEPTH: usize = 64;

pub fn to_json(value: &Value) -> Result<Json, String> {
    convert(value, "result", 0)
}

fn convert(value: &Value, path: &str, depth: usize) -> Result<Json, String> {
    if depth > MAX_DEPTH {
        return Err(format!("{path} is nested more than {MAX_DEPTH} levels deep (a table that contains itself?)"));
    }
    Ok(match value {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => Json::Number((*i).into()),
        Value::Number(n) => Json::Number(Number::from_f64(*n).ok_or_else(|| format!("{path} is {n}, which JSON cannot represent"))?),
        Value::String(s) => Json::String(s.to_str().map(|s| s.to_string()).unwrap_or_else(|_| s.to_string_lossy())),
        Value::LightUserData(p) if p.0.is_null() => Json::Null,
        Value::UserData(ud) => match ud.borrow::<Secret>() {
            Ok(secret) => Json::String(secret.label()),
            Err(_) => {
                let name = ud.metatable().ok().and_then(|mt| mt.get::<Option<String>>("__name").ok().flatten());
                return Err(format!(
                    "{path} is a {} value, which cannot be stored in the journal (return plain data: strings, numbers, booleans, tables)",
                    name.unwrap_or_else(|| "userdata".into())
                ));
            }
        },
        Value::Table(t) => table(t, path, depth)?,
        other => {
            return Err(format!(
                "{path} is a {}, which cannot be stored in the journal (return plain data: strings, numbers, booleans, tables)",
                other.type_name()
            ))
        }
    })
}

fn table(t: &Table, path: &str, depth: usize) -> Result<Json, String> {
    if super::is_placeholder(t) {
        let what: String = t.raw_get("__what").unwrap_or_else(|_| "value".into());
        return Ok(Json::String(format!("<dry-run:{what}>")));
    }
    let mut ints: Vec<(i64, Value)> = Vec::new();
    let mut map = Map::new();
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| format!("{path}: {e}"))?;
        match k {
            Value::Integer(i) => ints.push((i, v)),
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => ints.push((n as i64, v)),
            Value::String(s) => {
                let key = s.to_string_lossy();
                let child = convert(&v, &format!("{path}.{key}"), depth + 1)?;
                map.insert(key, child);
            }
            other => {
                return Err(format!(
                    "{path} has a {} key; only string keys and array positions are allowed",
                    other.type_name()
                ))
            }
        }
    }
    if ints.is_empty() {
        let is_array = t.metatable().is_some_and(|mt| mt.raw_get::<bool>("__array").unwrap_or(false));
        return Ok(if map.is_empty() && is_array { Json::Array(vec![]) } else { Json::Object(map) });
    }
    if !map.is_empty() {
        return Err(format!("{path} mixes array items and named keys; use one or the other (or nest them)"));
    }
    ints.sort_by_key(|(i, _)| *i);
    if ints.iter().enumerate().any(|(idx, (i, _))| *i != idx as i64 + 1) {
        return Err(format!("{path} is an array with holes; use `null` for missing items"));
    }
    let mut items = Vec::with_capacity(ints.len());
    for (i, v) in ints {
        items.push(convert(&v, &format!("{path}[{i}]"), depth + 1)?);
    }
    Ok(Json::Array(items))
}

/// JSON to Lua: null becomes the `null` sentinel (so keys survive), arrays get the array marker.
pub fn from_json(lua: &Lua, value: &Json) -> mlua::Result<Value> {
    from_json_marked(lua, value, &array_marker(lua)?)
}

fn from_json_marked(lua: &Lua, value: &Json, marker: &Table) -> mlua::Result<Value> {
    Ok(match value {
        Json::Null => lua.null(),
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(lua.create_string(s)?),
        Json::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, from_json_marked(lua, item, marker)?)?;
            }
            t.set_metatable(Some(marker.clone()))?;
            Value::Table(t)
        }
        Json::Object(map) => {
            let t = lua.create_table_with_capacity(0, map.len())?;
            for (k, v) in map {
                t.raw_set(k.as_str(), from_json_marked(lua, v, marker)?)?;
            }
            Value::Table(t)
        }
    })
}

/// Marks a query result: an array (as [`mark_array`]) that also knows its columns in the
/// query's order (`__columns`), for printing it as a table.
pub fn mark_rows(lua: &Lua, t: &Table, columns: &[String]) -> mlua::Result<()> {
    let mt = lua.create_table()?;
    mt.raw_set("__array", true)?;
    mt.raw_set("__name", "array")?;
    mt.raw_set("__columns", columns)?;
    t.set_metatable(Some(mt))
}

/// Marks a table as an array, so that an empty one stores as `[]`.
pub fn mark_array(lua: &Lua, t: &Table) -> mlua::Result<()> {
    t.set_metatable(Some(array_marker(lua)?))
}

/// The metatable marking arrays (shared by all of them).
pub fn array_marker(lua: &Lua) -> mlua::Result<Table> {
    if let Ok(t) = lua.named_registry_value::<Table>("runbook.array_mt") {
        return Ok(t);
    }
    let t = lua.create_table()?;
    t.raw_set("__array", true)?;
    t.raw_set("__name", "array")?;
    lua.set_named_registry_value("runbook.array_mt", t.clone())?;
    Ok(t)
}
