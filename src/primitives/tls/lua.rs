//! Lua binding of `tls`: `tls.certificate("host:port", [opts])` and
//! `tls.check_expiry(hosts, {warn_days = 30})`.
use mlua::{Lua, Value};

use super::CertOptions;
use crate::engine::Ctx;
use crate::primitives::error;

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let t = lua.create_table()?;
    t.set("certificate", lua.create_async_function(certificate)?)?;
    t.set("check_expiry", lua.create_async_function(check_expiry)?)?;
    lua.globals().set("tls", t)
}

fn to_lua(lua: &Lua, v: &impl serde::Serialize) -> mlua::Result<Value> {
    let json = serde_json::to_value(v).map_err(|e| error("tls", e))?;
    crate::lua::convert::from_json(lua, &json)
}

async fn certificate(lua: Lua, (target, opts): (Value, Option<Value>)) -> mlua::Result<Value> {
    let Value::String(target) = target else {
        return Err(error("tls", format!("certificate expects \"host:port\", got a {}", target.type_name())));
    };
    let mut opts: CertOptions = crate::primitives::options(&lua, "tls", "certificate options", opts)?;
    if opts.warn_days.is_some() {
        return Err(error("tls", "certificate options: warn_days belongs to tls.check_expiry"));
    }
    let ctx = Ctx::from_lua(&lua)?;
    opts.ca = opts.ca.map(|c| ctx.resolve_path(c));
    ctx.refuse_in_coroutine(&lua, "tls.certificate")?;
    if let Some(p) = ctx.guard(&lua, "tls", false, String::new)? {
        return Ok(p);
    }
    let info = super::certificate(&target.to_string_lossy(), &opts).await.map_err(|e| error("tls", e))?;
    to_lua(&lua, &info)
}

async fn check_expiry(lua: Lua, (hosts, opts): (Value, Option<Value>)) -> mlua::Result<Value> {
    let hosts = host_list(hosts)?;
    let mut opts: CertOptions = crate::primitives::options(&lua, "tls", "check_expiry options", opts)?;
    let ctx = Ctx::from_lua(&lua)?;
    opts.ca = opts.ca.map(|c| ctx.resolve_path(c));
    ctx.refuse_in_coroutine(&lua, "tls.check_expiry")?;
    if let Some(p) = ctx.guard(&lua, "tls", false, String::new)? {
        return Ok(p);
    }
    let expiring = super::check_expiry(&hosts, &opts).await.map_err(|e| error("tls", e))?;
    let list: Vec<_> = expiring
        .iter()
        .map(|i| serde_json::json!({"host": i.host, "days_left": i.days_left, "not_after": i.not_after}))
        .collect();
    to_lua(&lua, &list)
}

/// An array of "host:port" strings (or one string): a table with other keys or holes is an
/// error, so that no host is silently left unchecked.
fn host_list(v: Value) -> mlua::Result<Vec<String>> {
    let bad = |why: &str| error("tls", format!("check_expiry expects an array of \"host:port\" strings: {why}"));
    match v {
        Value::String(s) => Ok(vec![s.to_string_lossy()]),
        Value::Table(t) => {
            let n = t.raw_len();
            let mut hosts = Vec::with_capacity(n);
            for i in 1..=n {
                match t.raw_get::<Value>(i)? {
                    Value::String(s) => hosts.push(s.to_string_lossy()),
                    other => return Err(bad(&format!("item {i} is a {}", other.type_name()))),
                }
            }
            if t.pairs::<Value, Value>().count() != n {
                return Err(bad("the table has keys other than 1..n (a hole, or named keys)"));
            }
            Ok(hosts)
        }
        other => Err(bad(&format!("got a {}", other.type_name()))),
    }
}
