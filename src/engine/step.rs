//! `step(name, [opts], fn)` and `approve(message)`.
use std::time::{Duration, Instant};

use mlua::{Function, Lua, MultiValue, Table, Value};
use serde::Serialize;
use serde_json::json;

use super::{Ctx, Halt, Mode, UndoEntry};
use crate::journal::{now_ts, StepKind, StepRecord, StepStatus};
use crate::lua::convert;
use crate::lua::errors::{self, Location};
use crate::secret::{redact, redact_json};

/// Approval gates are journaled as rows named `approve: MESSAGE`; steps may not use the prefix.
pub const GATE_PREFIX: &str = "approve: ";

/// A step or gate as `plan` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct PlanEntry {
    pub kind: &'static str,
    pub name: String,
    pub line: u32,
    pub description: Option<String>,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// Exponential with "equal jitter": half the exponential delay, plus a random part of the
    /// other half, capped at `max`.
    fn delay(&self, failed_attempt: i64) -> Duration {
        let exp = self.base.as_secs_f64() * 2f64.powi((failed_attempt - 1).clamp(0, 30) as i32);
        let capped = exp.min(self.max.as_secs_f64());
        let jittered = capped / 2.0 + rand::random::<f64>() * capped / 2.0;
        Duration::from_secs_f64(jittered)
    }
}

enum When {
    Always,
    Flag(bool),
    Func(Function),
}

struct StepOpts {
    description: Option<String>,
    retries: i64,
    backoff: Backoff,
    timeout: Option<Duration>,
    when: When,
    continue_on_error: bool,
    undo: Option<Function>,
}

const OPTION_KEYS: &[&str] = &["description", "retries", "backoff", "timeout", "when", "continue_on_error", "undo"];

fn duration_value(v: &Value, what: &str) -> Result<Duration, String> {
    crate::duration::from_lua(v).map_err(|e| format!("{what}: {e}"))
}

fn parse_opts(t: Option<Table>) -> Result<StepOpts, String> {
    let mut o = StepOpts {
        description: None,
        retries: 0,
        backoff: Backoff { base: Duration::from_secs(1), max: Duration::from_secs(60) },
        timeout: None,
        when: When::Always,
        continue_on_error: false,
        undo: None,
    };
    let Some(t) = t else { return Ok(o) };
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| e.to_string())?;
        let key = match &k {
            Value::String(s) => s.to_string_lossy(),
            other => return Err(format!("step options: unexpected {} key", other.type_name())),
        };
        match (key.as_str(), v) {
            ("description", Value::String(s)) => o.description = Some(s.to_string_lossy()),
            ("retries", Value::Integer(i)) if (0..=100).contains(&i) => o.retries = i,
            ("retries", Value::Number(n)) if n.fract() == 0.0 && (0.0..=100.0).contains(&n) => o.retries = n as i64,
            ("retries", other) => {
                return Err(format!("step option `retries` is a whole number from 0 to 100, got {}", show(&other)))
            }
            ("backoff", Value::Table(b)) => {
                for pair in b.pairs::<Value, Value>() {
                    let (bk, bv) = pair.map_err(|e| e.to_string())?;
                    match bk.to_string().unwrap_or_default().as_str() {
                        "base" => o.backoff.base = duration_value(&bv, "backoff.base")?,
                        "max" => o.backoff.max = duration_value(&bv, "backoff.max")?,
                        other => {
                            return Err(format!("step option `backoff`: unknown key '{other}' (known: base, max)"))
                        }
                    }
                }
                if o.backoff.max < o.backoff.base {
                    o.backoff.max = o.backoff.base;
                }
            }
            ("backoff", v @ (Value::String(_) | Value::Integer(_) | Value::Number(_))) => {
                o.backoff.base = duration_value(&v, "backoff")?;
                o.backoff.max = o.backoff.max.max(o.backoff.base);
            }
            ("timeout", v) => {
                let d = duration_value(&v, "step option `timeout`")?;
                if d.is_zero() {
                    return Err("step option `timeout` must be more than zero".into());
                }
                o.timeout = Some(d);
            }
            ("when", Value::Boolean(b)) => o.when = When::Flag(b),
            ("when", Value::Function(f)) => o.when = When::Func(f),
            ("continue_on_error", Value::Boolean(b)) => o.continue_on_error = b,
            ("undo", Value::Function(f)) => o.undo = Some(f),
            (k, other) if OPTION_KEYS.contains(&k) => {
                let want = match k {
                    "description" => "a string",
                    "backoff" => "a duration or { base = ..., max = ... }",
                    "when" => "a boolean or a function",
                    "continue_on_error" => "a boolean",
                    _ => "a function",
                };
                return Err(format!("step option `{k}` must be {want}, got {}", show(&other)));
            }
            (k, _) => return Err(format!("unknown step option '{k}' (known: {})", OPTION_KEYS.join(", "))),
        }
    }
    Ok(o)
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{}\"", s.to_string_lossy()),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Boolean(b) => b.to_string(),
        other => format!("a {}", other.type_name()),
    }
}

fn option_summary(o: &StepOpts) -> Vec<String> {
    let mut v = Vec::new();
    if o.retries > 0 {
        v.push(format!(
            "retries={} (backoff {}..{})",
            o.retries,
            crate::duration::human(o.backoff.base),
            crate::duration::human(o.backoff.max)
        ));
    }
    if let Some(t) = o.timeout {
        v.push(format!("timeout={}", crate::duration::human(t)));
    }
    match o.when {
        When::Flag(false) => v.push("when=false (skipped)".into()),
        When::Func(_) => v.push("when=<condition>".into()),
        _ => {}
    }
    if o.continue_on_error {
        v.push("continue_on_error".into());
    }
    if o.undo.is_some() {
        v.push("undo".into());
    }
    v
}

/// `Mode::Load`: captures the step. A step the attached run completed returns its recorded
/// result, as on resume; the first one it did not complete ends the load (what follows depends
/// on it); without an attached run every step returns a placeholder.
fn load_step(
    lua: &Lua,
    ctx: &Ctx,
    name: String,
    opts: StepOpts,
    func: Function,
    loc: &Location,
) -> mlua::Result<Value> {
    ctx.st.borrow_mut().captured.push(super::Captured {
        name: name.clone(),
        func,
        description: opts.description.clone(),
        line: loc.line,
        timeout: opts.timeout,
        has_undo: opts.undo.is_some(),
    });
    let prior = ctx.st.borrow().records.get(&name).cloned();
    match prior.filter(|p| p.status.is_done()) {
        Some(p) if p.status == StepStatus::Skipped => Ok(Value::Nil),
        Some(p) => convert::from_json(lua, &p.result.unwrap_or(serde_json::Value::Null)),
        None if ctx.resume.is_some() => Err(ctx.raise(Halt::Loaded(name))),
        None => crate::lua::placeholder(lua, &format!("step '{name}'")),
    }
}

/// Common checks before a step or a gate: the runbook is declared, nothing is nested, the run
/// has not been halted.
fn enter(lua: &Lua, ctx: &Ctx, what: &str, loc: &Location) -> mlua::Result<()> {
    ctx.check_halt()?;
    ctx.stop_if_draining();
    if let Some(reason) = ctx.stop_requested() {
        return Err(mlua::Error::external(Halt::Cancelled(reason.describe())));
    }
    ctx.refuse_in_coroutine(lua, what)?;
    if ctx.st.borrow().decl.is_none() {
        return Err(
            ctx.raise(Halt::Declaration(format!("{loc}: {what} before runbook{{...}}: declare the runbook first")))
        );
    }
    if let Some(outer) = ctx.current_step() {
        return Err(ctx.raise(Halt::Declaration(format!(
            "{loc}: {what} inside step '{outer}': steps and approvals cannot be nested"
        ))));
    }
    Ok(())
}

/// Where a step or gate was called: Lua's stack, else the step it runs inside, else the file.
fn location(lua: &Lua, ctx: &Ctx) -> Location {
    errors::caller(lua)
        .or_else(|| ctx.st.borrow().current_loc.clone())
        .unwrap_or(Location { file: ctx.file.clone(), line: 0 })
}

pub(crate) async fn step(lua: Lua, args: MultiValue) -> mlua::Result<Value> {
    let ctx = Ctx::from_lua(&lua)?;
    ctx.refuse_in_repl("step()")?;
    let loc = location(&lua, &ctx);
    let mut args = args.into_iter();
    let name = match args.next() {
        Some(Value::String(s)) => s.to_string_lossy(),
        other => {
            let got = other.map(|v| v.type_name()).unwrap_or("nothing");
            return Err(ctx.raise(Halt::Declaration(format!(
                "{loc}: step expects a name: step(\"name\", [options], function() ... end), got {got}"
            ))));
        }
    };
    let (opts_table, func) = match (args.next(), args.next()) {
        (Some(Value::Function(f)), None) => (None, f),
        (Some(Value::Table(t)), Some(Value::Function(f))) => (Some(t), f),
        (Some(Value::Nil), Some(Value::Function(f))) => (None, f),
        _ => {
            return Err(ctx.raise(Halt::Declaration(format!(
                "{loc}: step '{name}': expected step(name, [options], function() ... end)"
            ))))
        }
    };
    enter(&lua, &ctx, &format!("step '{name}'"), &loc)?;
    if name.trim().is_empty() || name.len() > 200 {
        return Err(ctx.raise(Halt::Declaration(format!("{loc}: a step name is 1 to 200 characters"))));
    }
    if name.starts_with(GATE_PREFIX) {
        return Err(ctx.raise(Halt::Declaration(format!(
            "{loc}: step names cannot start with \"{GATE_PREFIX}\" (approval gates are journaled under it)"
        ))));
    }
    if crate::secret::redact(&name) != name {
        return Err(ctx.raise(Halt::Declaration(format!(
            "{loc}: a step name contains the value of a secret; names are shown and stored in clear: name the step without it"
        ))));
    }
    let first = ctx.st.borrow().seen.get(&name).cloned();
    if let Some(first) = first {
        return Err(ctx.raise(Halt::Declaration(format!(
            "{loc}: duplicate step name '{name}' (first at {first}); step names are unique in a run: a step made in a loop carries the loop key in its name, e.g. step(\"vacuum \" .. table, ...)"
        ))));
    }
    ctx.st.borrow_mut().seen.insert(name.clone(), loc.clone());
    let opts =
        parse_opts(opts_table).map_err(|m| ctx.raise(Halt::Declaration(format!("{loc}: step '{name}': {m}"))))?;
    let seq = {
        let mut st = ctx.st.borrow_mut();
        st.seq += 1;
        st.seq
    };

    if ctx.mode == Mode::Load {
        return load_step(&lua, &ctx, name, opts, func, &loc);
    }
    if ctx.mode.is_static() {
        ctx.st.borrow_mut().plan.push(PlanEntry {
            kind: "step",
            name: name.clone(),
            line: loc.line,
            description: opts.description.clone(),
            options: option_summary(&opts),
        });
        return crate::lua::placeholder(&lua, &format!("step '{name}'"));
    }
    let run_id = ctx.run_id().ok_or_else(|| mlua::Error::runtime("no run"))?;
    let journal = ctx.journal.clone().ok_or_else(|| mlua::Error::runtime("no journal"))?;

    // Completed earlier in this run: hand back what it returned, do not run it again.
    let prior = ctx.st.borrow().records.get(&name).cloned();
    if let Some(prior) = prior.as_ref().filter(|p| p.status.is_done()) {
        let result = prior.result.clone().unwrap_or(serde_json::Value::Null);
        let value = if prior.status == StepStatus::Skipped { Value::Nil } else { convert::from_json(&lua, &result)? };
        if let (Some(undo), StepStatus::Succeeded) = (&opts.undo, prior.status) {
            ctx.st.borrow_mut().undo.push(UndoEntry { step: name.clone(), func: undo.clone(), result });
        }
        {
            let mut st = ctx.st.borrow_mut();
            st.counts.recorded += 1;
            st.replay_pending.remove(&name);
        }
        ctx.out.emit("step_recorded", Some(&name), json!({"status": prior.status.as_str(), "attempt": prior.attempts}));
        return Ok(value);
    }
    if ctx.st.borrow().rollback_resume {
        // Resuming a rollback: replay until every step recorded as completed has registered its
        // undo (steps that failed or never ran in between are passed over, returning nil), then
        // roll back.
        if ctx.st.borrow().replay_pending.is_empty() {
            return Err(ctx.raise(Halt::RollbackNow));
        }
        if let Some(p) = prior.as_ref().filter(|p| p.status == StepStatus::Failed && !opts.continue_on_error) {
            // What the original run saw: a `pcall` around it takes the same branch.
            let message = p.error.clone().unwrap_or_else(|| format!("step '{name}' failed"));
            return Err(ctx.raise(Halt::StepFailed { step: name, message }));
        }
        ctx.out.emit("step_recorded", Some(&name), json!({"status": "not_run", "note": "rolling back: not run"}));
        return Ok(Value::Nil);
    }

    ctx.out.settle().await;
    if let Some(why) = ctx.out.journal_failure() {
        return Err(ctx.raise(Halt::Journal(format!(
            "{why}; stopping before step '{name}' (resume the run once the journal has room)"
        ))));
    }
    ctx.scrub_if_needed().await.map_err(|e| ctx.raise(e.into()))?;
    let mut rec = prior
        .clone()
        .unwrap_or_else(|| StepRecord::new(&name, seq, StepKind::Step, StepStatus::Running, Some(loc.line as i64)));
    rec.seq = seq;
    rec.line = Some(loc.line as i64);
    let put = |rec: &StepRecord| {
        let journal = journal.clone();
        let run_id = run_id.clone();
        let rec = rec.clone();
        let ctx = ctx.clone();
        async move {
            journal.put_step(&run_id, &ctx.me, &rec).await.map_err(|e| ctx.raise(e.into()))?;
            ctx.st.borrow_mut().records.insert(rec.name.clone(), rec);
            Ok::<(), mlua::Error>(())
        }
    };

    let run_it = match &opts.when {
        When::Always => true,
        When::Flag(b) => *b,
        When::Func(f) => {
            // Nothing may nest inside `when` either: it decides, it does not act.
            {
                let mut st = ctx.st.borrow_mut();
                st.current_step = Some(name.clone());
                st.current_loc = Some(loc.clone());
            }
            let v = f.call_async::<Value>(()).await;
            {
                let mut st = ctx.st.borrow_mut();
                st.current_step = None;
                st.current_loc = None;
            }
            match v {
                Ok(v) => !matches!(v, Value::Nil | Value::Boolean(false)),
                Err(e) => {
                    if let Some(h) = e.chain().find_map(|c| c.downcast_ref::<Halt>()).filter(|h| h.is_hard()) {
                        return Err(ctx.raise(h.clone()));
                    }
                    return Err(step_error(&ctx, &name, &loc, &e, "when"));
                }
            }
        }
    };
    if !run_it {
        rec.status = StepStatus::Skipped;
        rec.finished_at = Some(now_ts());
        rec.result = None;
        put(&rec).await?;
        ctx.st.borrow_mut().counts.skipped += 1;
        ctx.out.emit(
            "step_finished",
            Some(&name),
            json!({"status": "skipped", "attempt": rec.attempts, "duration_ms": 0, "result": null, "error": null}),
        );
        return Ok(Value::Nil);
    }

    // A failed step that is resumed gets a fresh retry budget; an interrupted one continues.
    if rec.status == StepStatus::Failed {
        rec.budget_base = rec.attempts;
    }
    if let (StepStatus::Retrying, Some(at)) = (rec.status, rec.next_attempt_at.as_deref()) {
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(at) {
            let wait = at.signed_duration_since(crate::clock::now());
            if let Ok(wait) = wait.to_std() {
                ctx.out.emit("log", Some(&name), json!({"level": "info", "message": format!("waiting {} before the next attempt, as scheduled before the restart", crate::duration::human(wait))}));
                crate::clock::sleep(wait).await;
            }
        }
    }
    let max_attempts = opts.retries + 1;
    loop {
        rec.attempts += 1;
        let attempt = rec.attempts - rec.budget_base;
        rec.status = StepStatus::Running;
        rec.started_at = Some(now_ts());
        rec.finished_at = None;
        rec.next_attempt_at = None;
        put(&rec).await?;
        {
            let mut st = ctx.st.borrow_mut();
            st.current_step = Some(name.clone());
            st.current_loc = Some(loc.clone());
            st.fanouts = 0;
            st.attempt = rec.attempts;
            // An earlier attempt (in this process or a dead one) may have left work running.
            st.rerun = rec.attempts > 1 || (ctx.resume.is_some() && !ctx.queued);
        }
        let label = ctx.work_label();
        ctx.out.emit("step_started", Some(&name), json!({"status": "running", "attempt": attempt}));
        let started = Instant::now();
        ctx.watch.lock().unwrap_or_else(|p| p.into_inner()).step = Some(super::watchdog::WatchedStep {
            deadline: opts.timeout.and_then(|t| started.checked_add(t)),
            timeout: opts.timeout,
            record: rec.clone(),
            label: label.clone(),
        });
        crate::clock::set_step_timeout(opts.timeout);
        let outcome = match opts.timeout {
            Some(limit) => {
                ctx.deadline.set(started.checked_add(limit));
                let r = tokio::time::timeout(limit, func.call_async::<Value>(attempt)).await;
                ctx.deadline.set(None);
                ctx.watch.lock().unwrap_or_else(|p| p.into_inner()).step = None;
                match r {
                    Ok(r) => r,
                    Err(_) => {
                        // The client stopped waiting: stop what the attempt left on servers too.
                        crate::primitives::stop_abandoned(&ctx, &label).await;
                        Err(mlua::Error::runtime(format!("timed out after {}", crate::duration::human(limit))))
                    }
                }
            }
            None => func.call_async::<Value>(attempt).await,
        };
        crate::clock::set_step_timeout(None);
        ctx.watch.lock().unwrap_or_else(|p| p.into_inner()).step = None;
        {
            let mut st = ctx.st.borrow_mut();
            st.current_step = None;
            st.current_loc = None;
        }
        let elapsed = started.elapsed();
        rec.duration_ms = Some(elapsed.as_millis() as i64);
        let failure = match outcome {
            Ok(value) => match convert::to_json(&value) {
                Ok(mut json) => {
                    redact_json(&mut json);
                    rec.status = if ctx.mode == Mode::DryRun { StepStatus::DryRun } else { StepStatus::Succeeded };
                    rec.finished_at = Some(now_ts());
                    rec.result = Some(json.clone());
                    rec.error = None;
                    // Journaled with the step: a resumed rollback knows which undos are due.
                    rec.undo_status = opts.undo.as_ref().map(|_| "pending".to_string());
                    put(&rec).await?;
                    ctx.st.borrow_mut().counts.ok += 1;
                    ctx.out.emit(
                        "step_finished",
                        Some(&name),
                        json!({"status": rec.status.as_str(), "attempt": attempt, "duration_ms": elapsed.as_millis() as u64, "result": json, "error": null}),
                    );
                    if let Some(undo) = &opts.undo {
                        ctx.st.borrow_mut().undo.push(UndoEntry {
                            step: name.clone(),
                            func: undo.clone(),
                            result: json.clone(),
                        });
                    }
                    // Later code sees exactly what a resumed run would: the recorded value.
                    return convert::from_json(&lua, &json);
                }
                // A result that cannot be stored will not be fixed by a retry.
                Err(why) => (format!("{loc}: step '{name}': {why}"), false),
            },
            Err(e) => {
                if let Some(h) = e.chain().find_map(|c| c.downcast_ref::<Halt>()).filter(|h| h.is_hard()) {
                    ctx.st.borrow_mut().current_step = Some(name.clone());
                    return Err(ctx.raise(h.clone()));
                }
                (format_failure(&ctx, &name, &loc, &e), true)
            }
        };
        let (message, retryable) = failure;
        let message = redact(&message).into_owned();
        rec.error = Some(message.clone());
        if retryable && attempt < max_attempts {
            let delay = opts.backoff.delay(attempt);
            rec.status = StepStatus::Retrying;
            rec.next_attempt_at = Some(
                (crate::clock::now() + chrono::Duration::from_std(delay).unwrap_or_default())
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            );
            put(&rec).await?;
            ctx.out.emit(
                "step_retry",
                Some(&name),
                json!({"status": "retrying", "attempt": attempt, "error": message, "delay_ms": delay.as_millis() as u64, "duration_ms": elapsed.as_millis() as u64}),
            );
            crate::clock::sleep(delay).await;
            continue;
        }
        rec.status = StepStatus::Failed;
        rec.finished_at = Some(now_ts());
        put(&rec).await?;
        ctx.st.borrow_mut().counts.failed += 1;
        ctx.out.emit(
            "step_finished",
            Some(&name),
            json!({"status": "failed", "attempt": attempt, "duration_ms": elapsed.as_millis() as u64, "error": message, "result": null}),
        );
        if opts.continue_on_error {
            ctx.out.emit("warning", Some(&name), json!({"message": "step failed; continuing (continue_on_error)"}));
            return Ok(Value::Nil);
        }
        return Err(ctx.raise(Halt::StepFailed { step: name, message }));
    }
}

/// `FILE:LINE: step 'NAME': cause`, where LINE is where the error happened when it happened in
/// a file, else the step's own line.
fn format_failure(ctx: &Ctx, name: &str, step_loc: &Location, e: &mlua::Error) -> String {
    let (msg, loc) = errors::describe(e);
    let at = loc.unwrap_or_else(|| step_loc.clone());
    let _ = ctx;
    format!("{at}: step '{name}': {msg}")
}

fn step_error(ctx: &Ctx, name: &str, loc: &Location, e: &mlua::Error, what: &str) -> mlua::Error {
    let (msg, _) = errors::describe(e);
    ctx.raise(Halt::Declaration(format!("{loc}: step '{name}': `{what}` failed: {msg}")))
}

pub(crate) async fn approve(lua: Lua, (message, opts): (Value, Option<Value>)) -> mlua::Result<bool> {
    let ctx = Ctx::from_lua(&lua)?;
    ctx.refuse_in_repl("approve()")?;
    let loc = location(&lua, &ctx);
    let policy: Option<crate::approval::Policy> = match opts {
        None | Some(Value::Nil) => None,
        Some(v) => {
            let p: crate::approval::Policy = crate::primitives::options(&lua, "approve", "options", Some(v))
                .map_err(|e| ctx.raise(Halt::Declaration(format!("{loc}: {}", errors::describe(&e).0))))?;
            p.check().map_err(|e| ctx.raise(Halt::Declaration(format!("{loc}: approve: {e}"))))?;
            Some(p)
        }
    };
    let message = match message {
        Value::String(s) => s.to_string_lossy(),
        other => {
            return Err(ctx.raise(Halt::Declaration(format!(
                "{loc}: approve expects a message string, got a {}",
                other.type_name()
            ))))
        }
    };
    enter(&lua, &ctx, "approve()", &loc)?;
    // Gate messages are shown and stored: never with a secret's value in them.
    let message = crate::secret::redact(&message).into_owned();
    let name = {
        let mut st = ctx.st.borrow_mut();
        let n = st.gates.entry(message.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            format!("{GATE_PREFIX}{message}")
        } else {
            format!("{GATE_PREFIX}{message} ({n})")
        }
    };
    let seq = {
        let mut st = ctx.st.borrow_mut();
        st.seq += 1;
        st.seq
    };
    match ctx.mode {
        // Loading into the REPL: a gate the attached run has not passed ends the load (nothing
        // after it may be retried by hand); without a run, gates pass.
        Mode::Load => {
            let approved = ctx.st.borrow().records.get(&name).is_some_and(|r| r.status == StepStatus::Approved);
            if ctx.resume.is_some() && !approved {
                return Err(ctx.raise(Halt::Loaded(name)));
            }
            return Ok(true);
        }
        Mode::Plan | Mode::Check => {
            ctx.st.borrow_mut().plan.push(PlanEntry {
                kind: "approval",
                name: message,
                line: loc.line,
                description: None,
                options: policy.iter().map(|p| format!("approvers: {}", p.describe())).collect(),
            });
            return Ok(true);
        }
        Mode::DryRun => {
            ctx.out.emit("approval", Some(&name), json!({"status": "dry_run", "message": message}));
            return Ok(true);
        }
        Mode::Run => {}
    }
    let run_id = ctx.run_id().ok_or_else(|| mlua::Error::runtime("no run"))?;
    let journal = ctx.journal.clone().ok_or_else(|| mlua::Error::runtime("no journal"))?;
    let prior = ctx.st.borrow().records.get(&name).cloned();
    if ctx.st.borrow().rollback_resume && prior.as_ref().is_none_or(|p| p.status != StepStatus::Approved) {
        // Resuming a rollback never asks: replay on while completed steps remain, else roll back.
        if ctx.st.borrow().replay_pending.is_empty() {
            return Err(ctx.raise(Halt::RollbackNow));
        }
        return Ok(true);
    }
    if let Some(p) = prior.as_ref().filter(|p| p.status == StepStatus::Approved) {
        ctx.st.borrow_mut().counts.recorded += 1;
        ctx.out.emit(
            "approval",
            Some(&name),
            json!({"status": "approved", "message": message, "actor": p.actor, "run_id": run_id}),
        );
        return Ok(true);
    }
    // Rejected (or timed out) while no process held the run: the run ends here, cancelled.
    if let Some(p) = prior.as_ref().filter(|p| p.status == StepStatus::Declined) {
        ctx.st.borrow_mut().counts.recorded += 1;
        let why =
            p.error.clone().unwrap_or_else(|| format!("approval declined by {}", p.actor.as_deref().unwrap_or("?")));
        ctx.out.emit(
            "approval",
            Some(&name),
            json!({"status": "declined", "message": message, "actor": p.actor, "run_id": run_id}),
        );
        return Err(ctx.raise(Halt::Cancelled(format!("{loc}: {why}"))));
    }
    let mut rec = prior
        .unwrap_or_else(|| StepRecord::new(&name, seq, StepKind::Approval, StepStatus::Waiting, Some(loc.line as i64)));
    rec.seq = seq;
    rec.started_at.get_or_insert_with(now_ts);
    // The gate's rules travel with it: whoever decides later reads them from the journal.
    let requested_by = ctx.resume.as_ref().map(|r| r.user.clone()).unwrap_or_else(crate::process::username);
    let deadline = policy
        .as_ref()
        .and_then(|p| p.timeout.as_deref())
        .and_then(|t| crate::duration::parse(t).ok())
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .map(|d| (crate::clock::now() + d).to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    rec.result = Some(json!(crate::approval::GateState {
        message: message.clone(),
        policy: policy.clone(),
        requested_by: requested_by.clone(),
        deadline,
        resumed_by: resumers(&ctx),
    }));
    rec.error = None;
    let user = crate::process::username();
    let alone = crate::approval::passes_alone(policy.as_ref(), &crate::approval::Voter::os_user());
    let decision = if !alone {
        None
    } else if ctx.yes {
        Some((true, format!("{user} (--yes)")))
    } else if interactive() {
        let prompt = format!("{message} [y/N] ");
        let answer = tokio::task::spawn_blocking(move || ask(&prompt)).await.unwrap_or(None);
        Some((answer.unwrap_or(false), user))
    } else {
        None
    };
    match decision {
        Some((approved, actor)) => {
            rec.status = if approved { StepStatus::Approved } else { StepStatus::Declined };
            rec.actor = Some(actor.clone());
            rec.finished_at = Some(now_ts());
            journal.put_step(&run_id, &ctx.me, &rec).await.map_err(|e| ctx.raise(e.into()))?;
            ctx.st.borrow_mut().records.insert(name.clone(), rec);
            let status = if approved { "approved" } else { "declined" };
            ctx.out.emit(
                "approval",
                Some(&name),
                json!({"status": status, "message": message, "actor": actor, "run_id": run_id}),
            );
            if approved {
                Ok(true)
            } else {
                Err(ctx.raise(Halt::Cancelled(format!("{loc}: approval declined: {message}"))))
            }
        }
        None => {
            rec.status = StepStatus::Waiting;
            journal.put_step(&run_id, &ctx.me, &rec).await.map_err(|e| ctx.raise(e.into()))?;
            ctx.st.borrow_mut().records.insert(name.clone(), rec);
            let policy = policy.as_ref().map(|p| p.describe());
            ctx.out.emit(
                "approval",
                Some(&name),
                json!({"status": "waiting", "message": message, "run_id": run_id, "policy": policy}),
            );
            Err(ctx.raise(Halt::WaitingApproval(message)))
        }
    }
}

/// Who asked for this run to go on besides its requester: those who had the console resume
/// it, and the person resuming it now from the command line or the REPL (a worker is nobody).
fn resumers(ctx: &Ctx) -> Vec<String> {
    let Some(run) = ctx.resume.as_ref() else { return vec![] };
    let mut all: Vec<String> =
        run.resumed_by.as_deref().map(|b| b.split(',').map(str::to_string).collect()).unwrap_or_default();
    let me = crate::process::username();
    if !ctx.drain && !ctx.queued && me != run.user && !all.contains(&me) {
        all.push(me);
    }
    all
}

static NO_PROMPTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Gates never ask in this process (the REPL owns the terminal: a gate met by `:resume` stops
/// the run at `waiting_approval`).
pub fn disable_prompts() {
    NO_PROMPTS.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Gates ask only when a person is at the terminal, and never under cron or `--cron`.
fn interactive() -> bool {
    use std::io::IsTerminal;
    !NO_PROMPTS.load(std::sync::atomic::Ordering::SeqCst)
        && std::io::stdin().is_terminal()
        && std::io::stderr().is_terminal()
        && std::env::var_os("RUNBOOK_NONINTERACTIVE").is_none()
}

fn ask(prompt: &str) -> Option<bool> {
    use std::io::{BufRead, Write};
    let mut err = std::io::stderr();
    let _ = write!(err, "? {prompt}");
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).ok()?;
    Some(matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}
