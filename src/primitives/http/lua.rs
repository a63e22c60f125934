//! Lua binding of `http`: `http.request{method, url, headers, bearer, query, json, body, form,
//! timeout, retries, retry_delay, expect, follow_redirects, insecure, ca, readonly}`, the
//! shorthands `http.get/post/put/patch/delete(url, [opts])`, and
//! `http.wait_healthy(url, {timeout, interval, expect, body_contains, json_path, equals, ...})`.
//! A response is `{status, headers, body, ms, url}` with `resp:json()`.
use std::path::PathBuf;
use std::time::Duration;

use mlua::{Lua, Table, Value};
use serde::de::IgnoredAny;
use serde_json::json;

use super::load::{Shape, Stage};
use super::{Attempt, Body, ClientKey, Expect, Health, Request, Response};
use crate::engine::Ctx;
use crate::primitives::error;
use crate::primitives::log::{log, Level};
use crate::secret::Secret;

const RESPONSE_METHODS: &str = "runbook.http.response";

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let t = lua.create_table()?;
    t.set(
        "request",
        lua.create_async_function(|lua, opts: Value| async move { request(lua, None, None, opts).await })?,
    )?;
    for method in ["get", "post", "put", "patch", "delete"] {
        let f = lua.create_async_function(move |lua, (url, opts): (Value, Option<Value>)| async move {
            request(lua, Some(method), Some(url), opts.unwrap_or(Value::Nil)).await
        })?;
        t.set(method, f)?;
    }
    t.set("wait_healthy", lua.create_async_function(wait_healthy)?)?;
    t.set("load", lua.create_async_function(load)?)?;
    let methods = lua.create_table()?;
    methods.set("json", lua.create_function(response_json)?)?;
    let mt = lua.create_table()?;
    mt.set("__index", methods)?;
    mt.set("__name", "http.response")?;
    lua.set_named_registry_value(RESPONSE_METHODS, mt)?;
    lua.globals().set("http", t)
}

/// The options that serde reads. The keys whose values may be Lua data or secrets (`url`,
/// `headers`, `bearer`, `query`, `json`, `body`, `form`) are read by hand and only named here,
/// so that an unknown key's error lists every known one.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    method: Option<String>,
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    timeout: Option<Duration>,
    retries: Option<u32>,
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    retry_delay: Option<Duration>,
    expect: Option<serde_json::Value>,
    follow_redirects: Option<bool>,
    insecure: Option<bool>,
    ca: Option<PathBuf>,
    readonly: Option<bool>,
    // wait_healthy only
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    attempt_timeout: Option<Duration>,
    body_contains: Option<String>,
    json_path: Option<String>,
    equals: Option<serde_json::Value>,
    // load only
    stages: Option<Vec<StageOptions>>,
    rate: Option<f64>,
    vus: Option<u32>,
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    duration: Option<Duration>,
    max_vus: Option<u32>,
    thresholds: Option<Thresholds>,
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    report_every: Option<Duration>,
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    think: Option<Duration>,
    // read by hand
    #[allow(dead_code)]
    url: Option<IgnoredAny>,
    #[allow(dead_code)]
    headers: Option<IgnoredAny>,
    #[allow(dead_code)]
    bearer: Option<IgnoredAny>,
    #[allow(dead_code)]
    query: Option<IgnoredAny>,
    #[allow(dead_code)]
    json: Option<IgnoredAny>,
    #[allow(dead_code)]
    body: Option<IgnoredAny>,
    #[allow(dead_code)]
    form: Option<IgnoredAny>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StageOptions {
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    duration: Option<Duration>,
    target: u32,
}

/// A load test's limits: latency quantiles (durations) and the share of failed requests.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Thresholds {
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    p50: Option<Duration>,
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    p90: Option<Duration>,
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    p95: Option<Duration>,
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    p99: Option<Duration>,
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    max: Option<Duration>,
    error_rate: Option<f64>,
}

const BY_HAND: &[&str] = &["url", "headers", "bearer", "query", "json", "body", "form"];
const WAIT_ONLY: &[&str] = &["interval", "attempt_timeout", "body_contains", "json_path", "equals"];
const LOAD_ONLY: &[&str] = &["stages", "rate", "vus", "duration", "max_vus", "thresholds", "report_every", "think"];
/// A load test sends its requests once each: no retries (a retry would hide the error rate).
const NOT_IN_LOAD: &[&str] = &["retries", "retry_delay", "readonly"];
/// A health check is a GET: nothing that could change the server, even under --dry-run.
const REQUEST_ONLY: &[&str] = &["method", "retries", "retry_delay", "json", "body", "form", "readonly"];

/// The options table split in two: what serde reads, and the Lua-valued keys.
struct Parsed {
    opts: Options,
    lua_keys: Table,
}

fn parse(lua: &Lua, what: &str, v: Value, forbidden: &[(&[&str], &str)]) -> mlua::Result<Parsed> {
    let t = match v {
        Value::Nil => lua.create_table()?,
        Value::Table(t) => t,
        other => return Err(error("http", format!("{what}: expected an options table, got a {}", other.type_name()))),
    };
    let plain = lua.create_table()?;
    let lua_keys = lua.create_table()?;
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair?;
        let Value::String(name) = &k else {
            return Err(error("http", format!("{what}: unexpected {} key (options are named)", k.type_name())));
        };
        let name = name.to_string_lossy();
        if let Some((_, why)) = forbidden.iter().find(|(keys, _)| keys.contains(&name.as_str())) {
            return Err(error("http", format!("{what}: `{name}` {why}")));
        }
        if BY_HAND.contains(&name.as_str()) {
            lua_keys.set(name, v)?;
        } else {
            plain.set(k, v)?;
        }
    }
    let opts: Options = crate::primitives::options(lua, "http", what, Some(Value::Table(plain)))?;
    Ok(Parsed { opts, lua_keys })
}

fn text(v: Value, what: &str) -> mlua::Result<(String, bool)> {
    crate::primitives::text_and_secrecy("http", what, v)
}

/// `{name = value}` as sorted pairs of strings (or secrets).
fn pairs(v: Value, what: &str) -> mlua::Result<Vec<(String, String, bool)>> {
    let Value::Table(t) = v else {
        return Err(error("http", format!("{what}: expected a table of name = value, got a {}", v.type_name())));
    };
    let mut out = Vec::new();
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair?;
        let Value::String(k) = k else {
            return Err(error("http", format!("{what}: names must be strings")));
        };
        let k = k.to_string_lossy();
        let (value, secret) = text(v, &format!("{what}.{k}"))?;
        out.push((k, value, secret));
    }
    out.sort();
    Ok(out)
}

/// A deep copy of a Lua value with every secret replaced by its value, for a JSON body; `found`
/// is set when there was one.
fn expose_secrets(lua: &Lua, v: Value, depth: usize, found: &mut bool) -> mlua::Result<Value> {
    if depth > 64 {
        return Err(error("http", "json: nested more than 64 levels (a cycle?)"));
    }
    match v {
        Value::UserData(ud) if ud.borrow::<Secret>().is_ok() => {
            *found = true;
            let s = ud.borrow::<Secret>()?;
            Ok(Value::String(lua.create_string(s.expose())?))
        }
        Value::Table(t) => {
            let copy = lua.create_table()?;
            for pair in t.pairs::<Value, Value>() {
                let (k, v) = pair?;
                copy.raw_set(k, expose_secrets(lua, v, depth + 1, found)?)?;
            }
            copy.set_metatable(t.metatable())?;
            Ok(Value::Table(copy))
        }
        Value::String(s) => {
            let text = s.to_string_lossy();
            *found |= crate::secret::redact(&text) != text;
            Ok(Value::String(s))
        }
        other => Ok(other),
    }
}

fn expect(v: Option<serde_json::Value>, follow_redirects: bool) -> mlua::Result<Expect> {
    let bad = || error("http", "expect: a status (200), a list of statuses ({200, 204}) or \"any\"");
    let code = |v: &serde_json::Value| v.as_u64().filter(|c| (100..=599).contains(c)).map(|c| c as u16);
    Ok(match v {
        None => Expect::Success { redirects: !follow_redirects },
        Some(serde_json::Value::String(s)) if s == "any" => Expect::Any,
        Some(serde_json::Value::Array(items)) if !items.is_empty() => {
            Expect::Codes(items.iter().map(|i| code(i).ok_or_else(bad)).collect::<mlua::Result<_>>()?)
        }
        Some(v) => Expect::Codes(vec![code(&v).ok_or_else(bad)?]),
    })
}

/// The request the options describe.
fn build(lua: &Lua, method: Option<&str>, url: Option<Value>, p: &Parsed) -> mlua::Result<Request> {
    let o = &p.opts;
    let method = match (method, &o.method) {
        (Some(_), Some(_)) => return Err(error("http", "the method is given twice (by the function and by `method`)")),
        (Some(m), None) => m.to_uppercase(),
        (None, Some(m)) => m.to_uppercase(),
        (None, None) => "GET".into(),
    };
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| error("http", format!("invalid method '{method}'")))?;
    let url = match (url, p.lua_keys.get::<Value>("url")?) {
        (Some(_), v) if !v.is_nil() => {
            return Err(error("http", "the URL is given twice (as an argument and as `url`)"))
        }
        (Some(u), _) => u,
        (None, Value::Nil) => return Err(error("http", "no URL: http.request{url = \"https://...\", ...}")),
        (None, u) => u,
    };
    let secret_name = match &url {
        Value::UserData(ud) => ud.borrow::<Secret>().ok().map(|s| s.name().to_string()),
        _ => None,
    };
    let (url_text, url_secret) = text(url, "url")?;
    let url = super::parse_url(&url_text).map_err(|e| error("http", e))?;
    if let Some(name) = secret_name {
        // The URL as shown (normalised, credentials stripped) no longer matches the secret's
        // text: both forms are secret too.
        crate::secret::register(url.as_str(), &name);
        crate::secret::register(&super::shown_url(&url), &name);
    }
    let mut headers = match p.lua_keys.get::<Value>("headers")? {
        Value::Nil => vec![],
        v => pairs(v, "headers")?,
    };
    match p.lua_keys.get::<Value>("bearer")? {
        Value::Nil => {}
        v => {
            let (token, _) = text(v, "bearer")?;
            if headers.iter().any(|(n, _, _)| n.eq_ignore_ascii_case("authorization")) {
                return Err(error("http", "both `bearer` and an Authorization header: give one"));
            }
            headers.push(("authorization".into(), format!("Bearer {token}"), true));
        }
    }
    let mut carries_secrets = url_secret
        || headers.iter().any(|(n, _, secret)| {
            *secret && !["authorization", "cookie", "proxy-authorization"].contains(&n.to_ascii_lowercase().as_str())
        });
    let query = match p.lua_keys.get::<Value>("query")? {
        Value::Nil => vec![],
        v => pairs(v, "query")?.into_iter().map(|(k, v, _)| (k, v)).collect(),
    };
    let mut bodies = Vec::new();
    match p.lua_keys.get::<Value>("json")? {
        Value::Nil => {}
        v => {
            let exposed = expose_secrets(lua, v, 0, &mut carries_secrets)?;
            let json = crate::lua::convert::to_json(&exposed).map_err(|e| error("http", format!("json: {e}")))?;
            bodies.push(Body::Json(json));
        }
    }
    match p.lua_keys.get::<Value>("body")? {
        Value::Nil => {}
        Value::String(s) => {
            let text = s.to_string_lossy();
            carries_secrets |= crate::secret::redact(&text) != text;
            bodies.push(Body::Bytes(s.as_bytes().to_vec()))
        }
        v => {
            let (body, secret) = text(v, "body")?;
            carries_secrets |= secret;
            bodies.push(Body::Bytes(body.into_bytes()))
        }
    }
    match p.lua_keys.get::<Value>("form")? {
        Value::Nil => {}
        v => {
            let form = pairs(v, "form")?;
            carries_secrets |= form.iter().any(|(_, _, secret)| *secret);
            bodies.push(Body::Form(form.into_iter().map(|(k, v, _)| (k, v)).collect()))
        }
    }
    if bodies.len() > 1 {
        return Err(error("http", "give one of json, body and form"));
    }
    let follow_redirects = o.follow_redirects.unwrap_or(true);
    let expect = expect(o.expect.clone(), follow_redirects)?;
    if o.insecure == Some(true) && o.ca.is_some() {
        return Err(error(
            "http",
            "give either `insecure = true` (no verification) or `ca` (verify with a private CA)",
        ));
    }
    if o.timeout.is_some_and(|d| d.is_zero()) {
        return Err(error("http", "timeout: must be more than 0"));
    }
    let retries = o.retries.unwrap_or(0);
    if retries > 100 {
        return Err(error("http", "retries: at most 100"));
    }
    Ok(Request {
        method,
        url,
        headers,
        query,
        body: bodies.pop().unwrap_or(Body::None),
        timeout: o.timeout.unwrap_or(Duration::from_secs(30)),
        retries,
        retry_delay: o.retry_delay.unwrap_or(Duration::from_secs(1)),
        expect,
        client: ClientKey {
            insecure: o.insecure.unwrap_or(false),
            ca: match &o.ca {
                Some(c) => Some(Ctx::from_lua(lua)?.resolve_path(c)),
                None => None,
            },
            follow_redirects,
            carries_secrets,
        },
    })
}

fn warn_insecure(ctx: &Ctx, req: &Request) {
    if req.client.insecure && req.url.scheme() == "https" {
        let host = req.url.host_str().unwrap_or("?");
        log(
            ctx,
            Level::Warn,
            &format!("TLS certificate of {host} not verified (insecure = true)"),
            serde_json::Value::Null,
        );
    }
}

fn response_to_lua(lua: &Lua, resp: &Response) -> mlua::Result<Value> {
    let t = lua.create_table()?;
    t.set("status", resp.status)?;
    let headers = lua.create_table()?;
    for (name, value) in &resp.headers {
        let joined = match headers.get::<Option<String>>(name.as_str())? {
            Some(prev) => format!("{prev}, {value}"),
            None => value.clone(),
        };
        headers.set(name.as_str(), joined)?;
    }
    t.set("headers", headers)?;
    t.set("body", lua.create_string(&resp.body)?)?;
    t.set("ms", resp.ms)?;
    t.set("url", resp.url.as_str())?;
    t.set_metatable(Some(lua.named_registry_value::<Table>(RESPONSE_METHODS)?))?;
    Ok(Value::Table(t))
}

/// `resp:json()`: the body as Lua data.
fn response_json(lua: &Lua, this: Value) -> mlua::Result<Value> {
    let Value::Table(t) = this else {
        return Err(error("http", "json() is a method: resp:json()"));
    };
    let body: mlua::LuaString = t.get("body")?;
    let bytes = body.as_bytes();
    let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        let url: String = t.get("url").unwrap_or_default();
        error("http", format!("the body of {url} is not JSON ({e}); it starts: {}", super::body_start(&bytes)))
    })?;
    crate::lua::convert::from_json(lua, &json)
}

async fn request(lua: Lua, method: Option<&'static str>, url: Option<Value>, opts: Value) -> mlua::Result<Value> {
    let what = match method {
        Some(m) => format!("{m} options"),
        None => "request options".into(),
    };
    let parsed =
        parse(&lua, &what, opts, &[(WAIT_ONLY, "belongs to http.wait_healthy"), (LOAD_ONLY, "belongs to http.load")])?;
    let req = build(&lua, method, url, &parsed)?;
    let ctx = Ctx::from_lua(&lua)?;
    ctx.refuse_in_coroutine(&lua, "http")?;
    let reads = matches!(req.method, reqwest::Method::GET | reqwest::Method::HEAD | reqwest::Method::OPTIONS);
    let mutating = !reads && !parsed.opts.readonly.unwrap_or(false);
    let shown = super::shown_url(&req.url);
    if let Some(p) = ctx.guard(&lua, "http", mutating, || format!("{} {shown}", req.method))? {
        return Ok(p);
    }
    warn_insecure(&ctx, &req);
    let resp = super::send(&req, |a| match a {
        Attempt::Retrying { attempt, of, cause, delay } => log(
            &ctx,
            Level::Warn,
            &format!(
                "{} {shown}: attempt {attempt} of {of} failed ({cause}); retrying in {}",
                req.method,
                crate::duration::human(delay)
            ),
            serde_json::Value::Null,
        ),
        Attempt::Done(r) => log(
            &ctx,
            Level::Debug,
            &format!("{} {shown} -> {} ({} ms)", req.method, r.status_line(), r.ms),
            serde_json::Value::Null,
        ),
    })
    .await
    .map_err(|e| error("http", e))?;
    response_to_lua(&lua, &resp)
}

async fn wait_healthy(lua: Lua, (url, opts): (Value, Option<Value>)) -> mlua::Result<Value> {
    let parsed = parse(
        &lua,
        "wait_healthy options",
        opts.unwrap_or(Value::Nil),
        &[(REQUEST_ONLY, "belongs to http.request"), (LOAD_ONLY, "belongs to http.load")],
    )?;
    if !parsed.lua_keys.get::<Value>("url")?.is_nil() {
        return Err(error("http", "wait_healthy takes the URL as its first argument"));
    }
    let o = &parsed.opts;
    let timeout = o.timeout.unwrap_or(Duration::from_secs(120));
    let interval = o.interval.unwrap_or(Duration::from_secs(5)).max(Duration::from_millis(10));
    let health =
        Health { body_contains: o.body_contains.clone(), json_path: o.json_path.clone(), equals: o.equals.clone() };
    if health.equals.is_some() && health.json_path.is_none() {
        return Err(error("http", "wait_healthy: `equals` needs `json_path` (the value to compare)"));
    }
    let mut req = build(&lua, None, Some(url), &parsed)?;
    req.timeout = o.attempt_timeout.unwrap_or(Duration::from_secs(10));
    let ctx = Ctx::from_lua(&lua)?;
    ctx.refuse_in_coroutine(&lua, "http.wait_healthy")?;
    if let Some(p) = ctx.guard(&lua, "http", false, String::new)? {
        return Ok(p);
    }
    warn_insecure(&ctx, &req);
    let shown = super::shown_url(&req.url);
    let resp = super::wait_healthy(&req, &health, timeout, interval, |attempt, state| {
        let message = format!("waiting for {shown}: attempt {attempt}: {state}");
        log(&ctx, Level::Info, &message, json!({"attempt": attempt}));
    })
    .await
    .map_err(|e| error("http", e))?;
    response_to_lua(&lua, &resp)
}

/// The limits a load test may not pass: at most 24 hours, 10,000 virtual users or requests in
/// flight, a million requests a second.
const MAX_LOAD: Duration = Duration::from_secs(24 * 3600);
const MAX_VUS: u32 = 10_000;

fn shape(o: &Options) -> mlua::Result<Shape> {
    let bad = |m: &str| error("http", format!("load: {m}"));
    let think = o.think.unwrap_or_default();
    if o.think.is_some() && o.rate.is_some() {
        return Err(bad("think goes with virtual users (a rate sets its own pace)"));
    }
    let shape = match (&o.stages, o.rate, o.vus) {
        (Some(stages), None, None) => {
            if o.duration.is_some() {
                return Err(bad("stages carry their own durations; `duration` goes with rate or vus"));
            }
            if stages.is_empty() {
                return Err(bad("stages is empty"));
            }
            let mut out = Vec::new();
            for (i, st) in stages.iter().enumerate() {
                let duration = st.duration.ok_or_else(|| bad(&format!("stages[{}]: duration is required", i + 1)))?;
                out.push(Stage { duration, target: st.target });
            }
            Shape::Users(out, think)
        }
        (None, Some(rate), None) => {
            if !(rate > 0.0 && rate <= 1_000_000.0) {
                return Err(bad("rate: requests per second, more than 0 and at most 1,000,000"));
            }
            let duration = o.duration.ok_or_else(|| bad("rate needs a duration"))?;
            if rate * duration.as_secs_f64() < 1.0 {
                return Err(bad("rate and duration make less than one request"));
            }
            Shape::Rate { per_second: rate, duration, max_vus: o.max_vus.unwrap_or(100) }
        }
        (None, None, Some(vus)) => {
            let duration = o.duration.ok_or_else(|| bad("vus needs a duration"))?;
            Shape::Users(vec![Stage { duration: Duration::ZERO, target: vus }, Stage { duration, target: vus }], think)
        }
        _ => {
            return Err(bad(
                "give one of stages (virtual users ramping), vus (a constant number) or rate (requests per second)",
            ))
        }
    };
    if o.max_vus.is_some() && !matches!(shape, Shape::Rate { .. }) {
        return Err(bad("max_vus goes with rate (virtual users are the stages' targets)"));
    }
    let most = match &shape {
        Shape::Users(stages, _) => stages.iter().map(|s| s.target).max().unwrap_or(0),
        Shape::Rate { max_vus, .. } => *max_vus,
    };
    if most == 0 || most > MAX_VUS {
        return Err(bad(&format!("between 1 and {MAX_VUS} virtual users")));
    }
    if shape.total().is_zero() || shape.total() > MAX_LOAD {
        return Err(bad("the test lasts more than 0 and at most 24h"));
    }
    Ok(shape)
}

/// `http.load{ url, stages | vus | rate, duration, thresholds, ... }`: see `load.rs`.
async fn load(lua: Lua, opts: Value) -> mlua::Result<Value> {
    let parsed = parse(
        &lua,
        "load options",
        opts,
        &[
            (WAIT_ONLY, "belongs to http.wait_healthy"),
            (NOT_IN_LOAD, "has no place in a load test (each request is sent once)"),
        ],
    )?;
    let req = build(&lua, None, None, &parsed)?;
    let o = &parsed.opts;
    let shape = shape(o)?;
    let limits = o.thresholds.as_ref();
    if let Some(rate) = limits.and_then(|t| t.error_rate) {
        if !(0.0..=1.0).contains(&rate) {
            return Err(error("http", "load: thresholds.error_rate is a share between 0 and 1 (0.01 is 1%)"));
        }
    }
    let ctx = Ctx::from_lua(&lua)?;
    ctx.refuse_in_coroutine(&lua, "http.load")?;
    let shown = super::shown_url(&req.url);
    let total = crate::duration::human(shape.total());
    // Load is never sent by a dry run: it says what it would send.
    if let Some(p) = ctx.guard(&lua, "http", true, || format!("load test: {} {shown} for {total}", req.method))? {
        return Ok(p);
    }
    warn_insecure(&ctx, &req);
    let every = o.report_every.unwrap_or(Duration::from_secs(5)).max(Duration::from_millis(100));
    let report = super::load::run(&req, &shape, every, |p| {
        let message = format!(
            "load {} of {}: {} VUs, {:.0} req/s, {:.2}% errors, p95 {}",
            crate::duration::human(p.at),
            crate::duration::human(p.total),
            p.users,
            p.per_second,
            p.error_rate * 100.0,
            crate::duration::human(Duration::from_secs_f64(p.p95))
        );
        log(&ctx, Level::Info, &message, serde_json::Value::Null);
    })
    .await
    .map_err(|e| error("http", e))?;
    let q = |x: f64| report.quantile(x);
    let summary = format!(
        "{} requests in {} ({:.1} req/s), {:.2}% errors, p50 {}, p95 {}, p99 {}",
        report.requests,
        crate::duration::human(report.elapsed),
        report.per_second(),
        report.error_rate() * 100.0,
        crate::duration::human(Duration::from_secs_f64(q(0.5))),
        crate::duration::human(Duration::from_secs_f64(q(0.95))),
        crate::duration::human(Duration::from_secs_f64(q(0.99))),
    );
    log(&ctx, Level::Info, &format!("load test of {shown}: {summary}"), serde_json::Value::Null);
    let mut crossed = Vec::new();
    if let Some(t) = limits {
        for (name, limit, value) in [
            ("p50", t.p50, q(0.5)),
            ("p90", t.p90, q(0.9)),
            ("p95", t.p95, q(0.95)),
            ("p99", t.p99, q(0.99)),
            ("max", t.max, report.latency.max() as f64 / 1e6),
        ] {
            if let Some(limit) = limit {
                if value > limit.as_secs_f64() {
                    crossed.push(format!(
                        "{name} {} > {}",
                        crate::duration::human(Duration::from_secs_f64(value)),
                        crate::duration::human(limit)
                    ));
                }
            }
        }
        if let Some(limit) = t.error_rate {
            if report.error_rate() > limit {
                let causes =
                    if report.causes.is_empty() { String::new() } else { format!(" ({})", report.causes.join("; ")) };
                crossed.push(format!("error_rate {:.2}% > {:.2}%{causes}", report.error_rate() * 100.0, limit * 100.0));
            }
        }
    }
    if !crossed.is_empty() {
        return Err(error(
            "http",
            format!("load test of {shown} crossed its thresholds: {}; {summary}", crossed.join(", ")),
        ));
    }
    let t = lua.create_table()?;
    t.set("requests", report.requests)?;
    t.set("errors", report.errors)?;
    t.set("dropped", report.dropped)?;
    t.set("error_rate", report.error_rate())?;
    t.set("rps", report.per_second())?;
    t.set("duration", report.elapsed.as_secs_f64())?;
    t.set("peak_vus", report.peak_users)?;
    let statuses = lua.create_table()?;
    for (status, n) in &report.statuses {
        statuses.set(status.to_string(), *n)?;
    }
    t.set("statuses", statuses)?;
    let latency = lua.create_table()?;
    if !report.latency.is_empty() {
        latency.set("min", report.latency.min() as f64 / 1e6)?;
        latency.set("mean", report.latency.mean() / 1e6)?;
        for (name, x) in [("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)] {
            latency.set(name, q(x))?;
        }
        latency.set("max", report.latency.max() as f64 / 1e6)?;
    }
    t.set("latency", latency)?;
    let causes = lua.create_table()?;
    for c in &report.causes {
        causes.raw_push(c.as_str())?;
    }
    crate::lua::convert::mark_array(&lua, &causes)?;
    t.set("causes", causes)?;
    Ok(Value::Table(t))
}
