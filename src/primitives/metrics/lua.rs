//! Lua binding of `metrics`: `metrics.prometheus(url, {token, user, password, headers,
//! timeout, ca, insecure})` returns a handle with `query(promql, {at})`, `value(promql, {at})`
//! and `range(promql, {last | start, end, step})`. Queries only read, so they run under
//! `--dry-run` too.
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mlua::{Lua, MetaMethod, Table, UserData, UserDataMethods, Value};
use serde::de::IgnoredAny;

use super::{Answer, Prometheus};
use crate::engine::Ctx;
use crate::primitives::error;
use crate::primitives::http::{self, ClientKey};
use crate::secret::Secret;

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let t = lua.create_table()?;
    t.set("prometheus", lua.create_function(prometheus)?)?;
    lua.globals().set("metrics", t)
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    timeout: Option<Duration>,
    insecure: Option<bool>,
    ca: Option<PathBuf>,
    user: Option<String>,
    // Read by hand (they may be secrets); named here so an unknown key's error lists them.
    #[allow(dead_code)]
    token: Option<IgnoredAny>,
    #[allow(dead_code)]
    password: Option<IgnoredAny>,
    #[allow(dead_code)]
    headers: Option<IgnoredAny>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryOptions {
    /// Unix seconds.
    at: Option<f64>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeOptions {
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    last: Option<Duration>,
    start: Option<f64>,
    #[serde(rename = "end")]
    end: Option<f64>,
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    step: Option<Duration>,
}

/// A string or a secret's value, and whether it was a secret.
fn text(v: Value, what: &str) -> mlua::Result<(String, bool)> {
    match v {
        Value::String(s) => Ok((s.to_string_lossy(), false)),
        Value::UserData(ud) => match ud.borrow::<Secret>() {
            Ok(s) => Ok((s.expose().to_string(), true)),
            Err(_) => Err(error("metrics", format!("{what}: expected a string or a secret"))),
        },
        other => Err(error("metrics", format!("{what}: expected a string or a secret, got a {}", other.type_name()))),
    }
}

fn prometheus(lua: &Lua, (url, opts): (Value, Option<Table>)) -> mlua::Result<Handle> {
    let (url, url_secret) = text(url, "metrics.prometheus: the URL")?;
    let mut base = http::parse_url(&url).map_err(|e| error("metrics", e))?;
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    let mut headers = Vec::new();
    let mut plain = None;
    let (mut token, mut password) = (None, None);
    if let Some(t) = opts {
        let rest = lua.create_table()?;
        for pair in t.pairs::<Value, Value>() {
            let (k, v) = pair?;
            match k.as_string().map(|s| s.to_string_lossy()).as_deref() {
                Some("token") => token = Some(text(v, "metrics.prometheus: token")?),
                Some("password") => password = Some(text(v, "metrics.prometheus: password")?),
                Some("headers") => {
                    let Value::Table(h) = v else {
                        return Err(error("metrics", "metrics.prometheus: headers: expected a table of name = value"));
                    };
                    for pair in h.pairs::<String, Value>() {
                        let (name, value) = pair?;
                        let (value, secret) = text(value, &format!("metrics.prometheus: headers.{name}"))?;
                        headers.push((name, value, secret));
                    }
                }
                _ => rest.set(k, v)?,
            }
        }
        plain = Some(Value::Table(rest));
    }
    let opts: Options = crate::primitives::options(lua, "metrics", "metrics.prometheus", plain)?;
    match (token, opts.user.as_deref(), password) {
        (Some(_), Some(_), _) => {
            return Err(error("metrics", "metrics.prometheus: give a token or a user and password, not both"))
        }
        (Some((token, _)), None, None) => headers.push(("authorization".into(), format!("Bearer {token}"), true)),
        (None, Some(user), Some((password, _))) => {
            use base64::Engine as _;
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            headers.push(("authorization".into(), format!("Basic {basic}"), true));
        }
        (None, None, None) => {}
        (_, None, Some(_)) => return Err(error("metrics", "metrics.prometheus: a password needs a user")),
        (None, Some(_), None) => {
            return Err(error("metrics", "metrics.prometheus: a user needs a password (a secret)"))
        }
    }
    let carries_secrets = url_secret || headers.iter().any(|(_, _, s)| *s);
    let client = ClientKey {
        insecure: opts.insecure.unwrap_or(false),
        ca: opts.ca.map(|p| Ctx::from_lua(lua).map(|c| c.resolve_path(&p)).unwrap_or(p)),
        follow_redirects: true,
        carries_secrets,
    };
    Ok(Handle(Prometheus { base, headers, timeout: opts.timeout.unwrap_or(Duration::from_secs(30)), client }))
}

pub struct Handle(Prometheus);

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// A sample value as Lua shows it best: a whole number as an integer (`up` is 1, not 1.0).
fn num(v: f64) -> Value {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
        Value::Integer(v as i64)
    } else {
        Value::Number(v)
    }
}

fn labels(lua: &Lua, l: &std::collections::BTreeMap<String, String>) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, l.len())?;
    for (k, v) in l {
        t.raw_set(k.as_str(), v.as_str())?;
    }
    Ok(t)
}

fn array(lua: &Lua, n: usize) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(n, 0)?;
    crate::lua::convert::mark_array(lua, &t)?;
    Ok(t)
}

fn answer_to_lua(lua: &Lua, a: &Answer) -> mlua::Result<Table> {
    match a {
        Answer::Vector(samples) => {
            let out = array(lua, samples.len())?;
            for s in samples {
                let t = lua.create_table()?;
                t.raw_set("labels", labels(lua, &s.labels)?)?;
                t.raw_set("value", num(s.value))?;
                t.raw_set("time", s.time)?;
                out.raw_push(t)?;
            }
            Ok(out)
        }
        Answer::Matrix(series) => {
            let out = array(lua, series.len())?;
            for s in series {
                let t = lua.create_table()?;
                t.raw_set("labels", labels(lua, &s.labels)?)?;
                let values = array(lua, s.points.len())?;
                for (time, value) in &s.points {
                    let p = array(lua, 2)?;
                    p.raw_push(*time)?;
                    p.raw_push(num(*value))?;
                    values.raw_push(p)?;
                }
                t.raw_set("values", values)?;
                out.raw_push(t)?;
            }
            Ok(out)
        }
        Answer::Text(time, text) => {
            let out = array(lua, 1)?;
            let t = lua.create_table()?;
            t.raw_set("value", text.as_str())?;
            t.raw_set("time", *time)?;
            out.raw_push(t)?;
            Ok(out)
        }
    }
}

/// The one value of an instant query, or nil when it has no samples.
fn one_value(a: &Answer, query: &str) -> mlua::Result<Option<f64>> {
    match a {
        Answer::Vector(s) if s.is_empty() => Ok(None),
        Answer::Vector(s) if s.len() == 1 => Ok(Some(s[0].value)),
        Answer::Vector(s) => {
            let first: Vec<String> = s[0].labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            Err(error(
                "metrics",
                format!(
                    "`{query}` returned {} series, value() needs one: aggregate them (sum, max, ...) or pick one by its labels (the first is {{{}}})",
                    s.len(),
                    first.join(", ")
                ),
            ))
        }
        Answer::Matrix(_) => {
            Err(error("metrics", format!("`{query}` is a range vector: value() needs an instant one")))
        }
        Answer::Text(_, _) => Err(error("metrics", format!("`{query}` returned a string, not a number"))),
    }
}

/// A query's preamble: not inside a coroutine; `plan` and `check` get a placeholder instead.
fn guard(lua: &Lua, what: &str) -> mlua::Result<Option<Value>> {
    let ctx = Ctx::from_lua(lua)?;
    ctx.refuse_in_coroutine(lua, what)?;
    ctx.guard(lua, "metrics", false, String::new)
}

impl UserData for Handle {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            Ok(format!("prometheus {}", http::shown_url(&this.0.base)))
        });
        methods.add_async_method("query", |lua, this, (query, opts): (String, Option<Value>)| async move {
            let o: QueryOptions = crate::primitives::options(&lua, "metrics", "query", opts)?;
            if let Some(p) = guard(&lua, "metrics query")? {
                return Ok(p);
            }
            let a = this.0.query(&query, o.at).await.map_err(|e| error("metrics", e))?;
            Ok(Value::Table(answer_to_lua(&lua, &a)?))
        });
        methods.add_async_method("value", |lua, this, (query, opts): (String, Option<Value>)| async move {
            let o: QueryOptions = crate::primitives::options(&lua, "metrics", "value", opts)?;
            if let Some(p) = guard(&lua, "metrics value")? {
                return Ok(p);
            }
            let a = this.0.query(&query, o.at).await.map_err(|e| error("metrics", e))?;
            Ok(one_value(&a, &query)?.map(num).unwrap_or(Value::Nil))
        });
        methods.add_async_method("range", |lua, this, (query, opts): (String, Option<Value>)| async move {
            let o: RangeOptions = crate::primitives::options(&lua, "metrics", "range", opts)?;
            let (start, end) = match (o.last, o.start, o.end) {
                (Some(last), None, end) => {
                    let end = end.unwrap_or_else(now);
                    (end - last.as_secs_f64(), end)
                }
                (None, Some(start), end) => (start, end.unwrap_or_else(now)),
                (Some(_), Some(_), _) => return Err(error("metrics", "range: give `last` or `start`, not both")),
                (None, None, _) => {
                    return Err(error("metrics", "range: give `last = \"5m\"` or `start` (Unix seconds)"))
                }
            };
            if let Some(p) = guard(&lua, "metrics range")? {
                return Ok(p);
            }
            // About a hundred points by default, never under a second apart.
            let step = o.step.unwrap_or_else(|| Duration::from_secs_f64(((end - start) / 100.0).max(1.0).round()));
            let a = this.0.query_range(&query, start, end, step).await.map_err(|e| error("metrics", e))?;
            Ok(Value::Table(answer_to_lua(&lua, &a)?))
        });
    }
}
