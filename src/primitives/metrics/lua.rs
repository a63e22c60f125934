//! Lua binding of `metrics`: `metrics.prometheus(url, {token, user, password, headers,
//! timeout, ca, insecure})` returns a handle with `query(promql, {at})`, `value(promql, {at})`
//! and `range(promql, {last | start, end, step})`. Queries only read, so they run under
//! `--dry-run` too.
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mlua::{Lua, MetaMethod, Table, UserData, UserDataMethods, Value};
use serde::de::IgnoredAny;

use super::analysis::{self, Op, Rule, Tally, Verdict};
use super::{Answer, Prometheus};
use crate::engine::Ctx;
use crate::primitives::error;
use crate::primitives::http::{self, ClientKey};
use crate::primitives::log::Level;
use crate::secret::Secret;

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let t = lua.create_table()?;
    t.set("prometheus", lua.create_function(prometheus)?)?;
    t.set("analyze", lua.create_async_function(analyze)?)?;
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
    /// `stop`, or `["end"]` as Prometheus names it (`end` is a Lua keyword).
    #[serde(alias = "end")]
    stop: Option<f64>,
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    step: Option<Duration>,
}

fn text(v: Value, what: &str) -> mlua::Result<(String, bool)> {
    crate::primitives::text_and_secrecy("metrics", what, v)
}

fn prometheus(lua: &Lua, (url, opts): (Value, Option<Table>)) -> mlua::Result<Handle> {
    let secret_name = match &url {
        Value::UserData(ud) => ud.borrow::<Secret>().ok().map(|s| s.name().to_string()),
        _ => None,
    };
    let (url, url_secret) = text(url, "metrics.prometheus: the URL")?;
    let mut base = http::parse_url(&url).map_err(|e| error("metrics", e))?;
    if let Some(name) = secret_name {
        // As in http: the URL as shown (normalised, credentials stripped) must stay secret too.
        crate::secret::register(base.as_str(), &name);
        crate::secret::register(&http::shown_url(&base), &name);
    }
    if base.query().is_some() || base.fragment().is_some() {
        return Err(error(
            "metrics",
            "metrics.prometheus: give the server's base URL, without a query string or fragment",
        ));
    }
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
    let own_auth = headers.iter().any(|(n, _, _)| n.eq_ignore_ascii_case("authorization"));
    if own_auth && (token.is_some() || opts.user.is_some()) {
        return Err(error("metrics", "metrics.prometheus: an Authorization header and token/user: give one"));
    }
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

/// The answer of a query, its warnings logged (a partial answer says so).
fn answered(lua: &Lua, r: Result<super::Reply, super::MetricsError>) -> mlua::Result<Answer> {
    let reply = r.map_err(|e| error("metrics", e))?;
    if let Ok(ctx) = Ctx::from_lua(lua) {
        for w in &reply.warnings {
            crate::primitives::log::log(&ctx, Level::Warn, &format!("Prometheus warns: {w}"), serde_json::Value::Null);
        }
    }
    Ok(reply.answer)
}

/// The one value of an instant query, or nil when it has no samples.
fn one_value(a: &Answer, query: &str) -> mlua::Result<Option<f64>> {
    match a {
        Answer::Vector(s) if s.is_empty() => Ok(None),
        // NaN is what a ratio gives without traffic (0/0): no data, not a number to judge by.
        Answer::Vector(s) if s.len() == 1 => Ok(Some(s[0].value).filter(|v| !v.is_nan())),
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
            let a = answered(&lua, this.0.query(&query, o.at).await)?;
            Ok(Value::Table(answer_to_lua(&lua, &a)?))
        });
        methods.add_async_method("value", |lua, this, (query, opts): (String, Option<Value>)| async move {
            let o: QueryOptions = crate::primitives::options(&lua, "metrics", "value", opts)?;
            if let Some(p) = guard(&lua, "metrics value")? {
                return Ok(p);
            }
            let a = answered(&lua, this.0.query(&query, o.at).await)?;
            Ok(one_value(&a, &query)?.map(num).unwrap_or(Value::Nil))
        });
        methods.add_async_method("range", |lua, this, (query, opts): (String, Option<Value>)| async move {
            let o: RangeOptions = crate::primitives::options(&lua, "metrics", "range", opts)?;
            let (start, end) = match (o.last, o.start, o.stop) {
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
            if !start.is_finite() || !end.is_finite() || end < start {
                return Err(error("metrics", "range: start and stop must be Unix times in seconds, start first"));
            }
            // About a hundred points by default, never under a second apart.
            let step = match o.step {
                Some(s) => s,
                None => Duration::try_from_secs_f64(((end - start) / 100.0).max(1.0).round())
                    .map_err(|_| error("metrics", "range: too long a range"))?,
            };
            let a = answered(&lua, this.0.query_range(&query, start, end, step).await)?;
            Ok(Value::Table(answer_to_lua(&lua, &a)?))
        });
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AnalyzeOptions {
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    duration: Option<Duration>,
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    interval: Option<Duration>,
    on_no_data: Option<String>,
    raise: Option<bool>,
    // Read by hand (a handle, functions); named here so an unknown key's error lists them.
    #[allow(dead_code)]
    prometheus: Option<IgnoredAny>,
    #[allow(dead_code)]
    checks: Option<IgnoredAny>,
    #[allow(dead_code)]
    queries: Option<IgnoredAny>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckTable {
    name: String,
    query: Option<String>,
    below: Option<serde_json::Value>,
    above: Option<serde_json::Value>,
    #[serde(default, rename = "for", deserialize_with = "crate::duration::de_opt")]
    hold: Option<Duration>,
    #[allow(dead_code)]
    #[serde(rename = "fn")]
    function: Option<IgnoredAny>,
}

enum Source {
    Query(String),
    Function(mlua::Function),
}

struct Check {
    rule: Rule,
    source: Source,
}

#[derive(Clone, Copy, PartialEq)]
enum NoData {
    Fail,
    Pause,
    Continue,
}

fn threshold_value(v: &serde_json::Value, what: &str) -> mlua::Result<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64().ok_or_else(|| error("metrics", format!("{what}: not a number"))),
        serde_json::Value::String(s) => analysis::threshold(s).map_err(|e| error("metrics", format!("{what}: {e}"))),
        _ => Err(error("metrics", format!("{what}: expected a number, a percentage or a duration"))),
    }
}

fn checks_of(lua: &Lua, opts: &Table) -> mlua::Result<Vec<Check>> {
    let queries: Option<Table> = opts.get("queries")?;
    let Value::Table(list) = opts.get::<Value>("checks")? else {
        return Err(error("metrics", "analyze: checks is required: a list such as { \"error_rate < 0.05 for 5m\" }"));
    };
    let mut out: Vec<Check> = Vec::new();
    for (i, item) in list.sequence_values::<Value>().enumerate() {
        let what = format!("analyze: checks[{}]", i + 1);
        let check = match item? {
            Value::String(s) => {
                let rule =
                    analysis::parse_rule(&s.to_string_lossy()).map_err(|e| error("metrics", format!("{what}: {e}")))?;
                let source = match queries.as_ref().map(|q| q.get::<Value>(rule.name.as_str())).transpose()? {
                    Some(Value::String(q)) => Source::Query(q.to_string_lossy()),
                    Some(Value::Function(f)) => Source::Function(f),
                    _ => {
                        return Err(error(
                            "metrics",
                            format!(
                            "{what}: no query for '{}': give it in queries = {{ {} = \"<PromQL>\" }} (or a function)",
                            rule.name, rule.name
                        ),
                        ))
                    }
                };
                Check { rule, source }
            }
            Value::Table(t) => {
                let function: Option<mlua::Function> = t.get("fn")?;
                // Functions have no serde form: `fn` is read above and only named in CheckTable.
                let plain = lua.create_table()?;
                for pair in t.pairs::<Value, Value>() {
                    let (k, v) = pair?;
                    if k.as_string().map(|s| s.to_string_lossy()).as_deref() != Some("fn") {
                        plain.set(k, v)?;
                    }
                }
                let c: CheckTable = crate::primitives::options(lua, "metrics", &what, Some(Value::Table(plain)))?;
                let (op, limit) = match (&c.below, &c.above) {
                    (Some(b), None) => (Op::Below, threshold_value(b, &format!("{what}: below"))?),
                    (None, Some(a)) => (Op::Above, threshold_value(a, &format!("{what}: above"))?),
                    _ => return Err(error("metrics", format!("{what}: give one of below or above"))),
                };
                let source = match (c.query, function) {
                    (Some(q), None) => Source::Query(q),
                    (None, Some(f)) => Source::Function(f),
                    _ => {
                        return Err(error(
                            "metrics",
                            format!("{what}: give one of query (PromQL) or fn (a function returning a number or nil)"),
                        ))
                    }
                };
                let rule = Rule {
                    name: c.name,
                    op,
                    threshold: limit,
                    written: analysis::number(limit),
                    hold: c.hold.unwrap_or_default(),
                    hold_written: None,
                };
                Check { rule, source }
            }
            other => {
                return Err(error(
                    "metrics",
                    format!("{what}: expected a rule string or a table, got a {}", other.type_name()),
                ))
            }
        };
        if out.iter().any(|o| o.rule.name == check.rule.name) {
            return Err(error("metrics", format!("{what}: a second check named '{}'", check.rule.name)));
        }
        out.push(check);
    }
    if out.is_empty() {
        return Err(error("metrics", "analyze: checks is empty: an analysis that checks nothing would always pass"));
    }
    Ok(out)
}

/// A value for the journal: NaN has no JSON form, so it is left out (nil).
fn kept(v: Option<f64>) -> Value {
    match v {
        Some(v) if !v.is_nan() => num(v),
        _ => Value::Nil,
    }
}

async fn analyze(lua: Lua, opts: Table) -> mlua::Result<Value> {
    let prometheus: Option<mlua::AnyUserData> = opts.get("prometheus")?;
    let checks = checks_of(&lua, &opts)?;
    let plain = lua.create_table()?;
    for pair in opts.pairs::<Value, Value>() {
        let (k, v) = pair?;
        if !matches!(k.as_string().map(|s| s.to_string_lossy()).as_deref(), Some("prometheus" | "checks" | "queries")) {
            plain.set(k, v)?;
        }
    }
    let o: AnalyzeOptions = crate::primitives::options(&lua, "metrics", "analyze", Some(Value::Table(plain)))?;
    let duration = o.duration.ok_or_else(|| {
        error("metrics", "analyze: duration is required: how long the stage is watched (e.g. \"5m\")")
    })?;
    let interval = o.interval.unwrap_or(Duration::from_secs(15)).max(Duration::from_millis(100));
    let policy = match o.on_no_data.as_deref() {
        None | Some("fail") => NoData::Fail,
        Some("pause") => NoData::Pause,
        Some("continue") => NoData::Continue,
        Some(other) => {
            return Err(error("metrics", format!("analyze: on_no_data '{other}': expected fail, pause or continue")))
        }
    };
    for c in &checks {
        // A rule whose `for` is the whole analysis could only fail on its very last sample.
        if c.rule.hold >= duration && !c.rule.hold.is_zero() {
            return Err(error(
                "metrics",
                format!(
                    "analyze: `{}` holds as long as the analysis ({}) or longer: it could hardly fail (make the hold longer than the rule's `for`)",
                    c.rule.describe(),
                    crate::duration::human(duration)
                ),
            ));
        }
    }
    let prom = match &prometheus {
        Some(ud) => Some(
            ud.borrow::<Handle>()
                .map_err(|_| error("metrics", "analyze: prometheus must be a metrics.prometheus(...) handle"))?
                .0
                .clone(),
        ),
        None => None,
    };
    if prom.is_none() && checks.iter().any(|c| matches!(c.source, Source::Query(_))) {
        return Err(error(
            "metrics",
            "analyze: a check has a query but no prometheus = metrics.prometheus(...) was given",
        ));
    }
    let ctx = Ctx::from_lua(&lua)?;
    ctx.refuse_in_coroutine(&lua, "metrics.analyze")?;
    if let Some(p) = ctx.guard(&lua, "metrics", false, String::new)? {
        return Ok(p);
    }
    // A dry run takes one sample of each check and reports it, without waiting out the stage.
    let once = ctx.mode == crate::engine::Mode::DryRun;
    // On the runbook's clock: under `runbook test` a stage of ten minutes is watched in no time.
    let start = crate::clock::Stopwatch::start();
    let mut tallies = vec![Tally::default(); checks.len()];
    let mut verdicts = vec![Verdict::Fine; checks.len()];
    let mut rounds = 0u32;
    let outcome = 'watch: loop {
        rounds += 1;
        let at = start.elapsed().as_secs_f64();
        for (i, c) in checks.iter().enumerate() {
            let value = match &c.source {
                Source::Query(q) => {
                    let p = prom.as_ref().ok_or_else(|| error("metrics", "analyze: a query check needs prometheus"))?;
                    let reply = p
                        .query(q, None)
                        .await
                        .map_err(|e| error("metrics", format!("check '{}': {e}", c.rule.name)))?;
                    let a = answered(&lua, Ok(reply))?;
                    one_value(&a, q)?
                }
                Source::Function(f) => match f.call_async::<Value>(()).await? {
                    Value::Nil => None,
                    Value::Integer(n) => Some(n as f64),
                    Value::Number(n) => Some(n),
                    other => {
                        return Err(error(
                            "metrics",
                            format!(
                                "check '{}': its function returned a {}; return a number, or nil for no data",
                                c.rule.name,
                                other.type_name()
                            ),
                        ))
                    }
                },
            };
            verdicts[i] = tallies[i].record(&c.rule, value, at);
        }
        let line: Vec<String> = checks
            .iter()
            .zip(&tallies)
            .zip(&verdicts)
            .map(|((c, t), v)| {
                let value =
                    t.last.filter(|_| *v != Verdict::NoData).map(analysis::number).unwrap_or_else(|| "no data".into());
                let said = v.as_str();
                format!("{}={value} ({} {}: {said})", c.rule.name, c.rule.op.symbol(), c.rule.written)
            })
            .collect();
        let message = format!(
            "analysis {} of {}: {}",
            crate::duration::human(start.elapsed()),
            crate::duration::human(duration),
            line.join(", ")
        );
        crate::primitives::log::log(&ctx, Level::Info, &message, serde_json::json!({}));
        if verdicts.contains(&Verdict::Failed) {
            break 'watch "failed";
        }
        if verdicts.contains(&Verdict::NoData) && policy != NoData::Continue {
            break 'watch "no_data";
        }
        let elapsed = start.elapsed();
        if once || elapsed >= duration {
            break 'watch "passed";
        }
        crate::clock::sleep_in_step(interval.min(duration - elapsed)).await.map_err(|e| error("metrics", e))?;
    };
    // A check that never had a sample judged nothing, whatever the policy said of single ones.
    let outcome = if outcome == "passed" && tallies.iter().any(|t| t.samples == 0) { "no_data" } else { outcome };
    let elapsed = start.elapsed();
    let result = lua.create_table()?;
    result.set("outcome", outcome)?;
    result.set("elapsed", elapsed.as_secs_f64())?;
    result.set("rounds", rounds)?;
    let per = lua.create_table()?;
    for ((c, t), v) in checks.iter().zip(&tallies).zip(&verdicts) {
        let e = lua.create_table()?;
        e.set("rule", c.rule.describe())?;
        e.set("last", kept(t.last))?;
        e.set("worst", kept(t.worst))?;
        e.set("samples", t.samples)?;
        e.set("no_data", t.no_data)?;
        e.set("verdict", v.as_str())?;
        per.set(c.rule.name.as_str(), e)?;
    }
    result.set("checks", per)?;
    let raise = o.raise.unwrap_or(true);
    let after = crate::duration::human(elapsed);
    match outcome {
        "failed" if raise => {
            let failed: Vec<String> = checks
                .iter()
                .zip(&tallies)
                .zip(&verdicts)
                .filter(|(_, v)| **v == Verdict::Failed)
                .map(|((c, t), _)| {
                    format!(
                        "{} = {} broke `{}` (worst {})",
                        c.rule.name,
                        t.last.map(analysis::number).unwrap_or_default(),
                        c.rule.describe(),
                        t.worst.map(analysis::number).unwrap_or_default()
                    )
                })
                .collect();
            Err(error("metrics", format!("analysis failed after {after}: {}", failed.join("; "))))
        }
        "no_data" if raise && policy != NoData::Pause => {
            let missing: Vec<String> = checks
                .iter()
                .zip(&verdicts)
                .zip(&tallies)
                .filter(|((_, v), t)| **v == Verdict::NoData || t.samples == 0)
                .map(|((c, _), _)| c)
                .map(|c| match &c.source {
                    Source::Query(q) => format!("{} (`{q}`)", c.rule.name),
                    Source::Function(_) => format!("{} (its function returned nil)", c.rule.name),
                })
                .collect();
            let why = if policy == NoData::Continue {
                "not one sample in the whole analysis (\"continue\" ignores samples without data, not all of them)"
            } else {
                "on_no_data = \"fail\"; \"pause\" returns to decide, \"continue\" ignores such samples"
            };
            Err(error(
                "metrics",
                format!("analysis inconclusive after {after}: no data for {} ({why})", missing.join(", ")),
            ))
        }
        _ => Ok(Value::Table(result)),
    }
}
