//! The built-in scheduler: `[[schedule]]` entries of runbook.toml, fired into the journal's
//! queue, and the workers that run what is queued.
//!
//! Exactly once: a fire time is claimed by inserting the row (schedule, fire_at) together with
//! its queued run, in one transaction. Whichever scheduler inserts it first fires it; the others
//! see the conflict and move on, whatever their number and however their clocks drift (the key
//! is the nominal time from the cron expression, not the time a scheduler woke up).
pub mod worker;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::engine::{Invocation, Mode};
use crate::error::{Error, Result};
use crate::journal::{FireRecord, Journal, Owner, RunFilter, RunRecord, RunStatus};

/// One `[[schedule]]` entry as written in runbook.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEntry {
    /// Unique among the schedules (default: the runbook file's stem).
    pub name: Option<String>,
    /// The runbook file, relative to runbook.toml.
    pub runbook: PathBuf,
    /// Five fields (minute granularity) or six (with seconds first); `@daily` and friends.
    pub cron: String,
    /// IANA time zone the cron expression is read in (default UTC).
    pub timezone: Option<String>,
    #[serde(default)]
    pub params: toml::Table,
    /// Each run starts up to this much later than its fire time (random, per fire).
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    pub jitter: Option<Duration>,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub catch_up: CatchUpSpec,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// After this many failed runs in a row, fires are recorded as `paused` until
    /// `runbook schedule --unpause NAME`.
    pub pause_after_failures: Option<u32>,
}

fn yes() -> bool {
    true
}

/// What a fire does while the previous run of its schedule is still queued or running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The fire is recorded as `skipped_overlap`; nothing runs.
    #[default]
    Skip,
    /// The run is queued and starts when the previous one ended.
    Queue,
    /// The previous run is cancelled, and the new one starts when it stopped.
    CancelPrevious,
}

/// `catch_up = "none" | "last" | { within = "6h" }`: fires missed while no scheduler ran.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum CatchUpSpec {
    #[default]
    #[serde(skip)]
    Unset,
    Word(String),
    Within(Within),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Within {
    #[serde(deserialize_with = "crate::duration::de_opt")]
    pub within: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    None,
    /// The newest missed fire runs, however old.
    Last,
    /// The newest missed fire runs if it is no older than this.
    Within(Duration),
}

/// A checked schedule, ready to compute fire times.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub runbook: PathBuf,
    pub cron: croner::Cron,
    pub cron_text: String,
    pub tz: chrono_tz::Tz,
    pub params: Vec<(String, String)>,
    pub jitter: Option<Duration>,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    pub enabled: bool,
    pub pause_after_failures: Option<u32>,
}

impl Schedule {
    pub fn queue_key(&self) -> String {
        format!("schedule:{}", self.name)
    }

    /// Fire times after `after` up to and including `until`, at most `max`.
    pub fn fires_between(&self, after: DateTime<Utc>, until: DateTime<Utc>, max: usize) -> Vec<DateTime<Utc>> {
        let start = after.with_timezone(&self.tz);
        self.cron.iter_after(start).map(|t| t.with_timezone(&Utc)).take_while(|t| *t <= until).take(max).collect()
    }

    pub fn next_fires(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        self.cron.iter_after(after.with_timezone(&self.tz)).take(n).map(|t| t.with_timezone(&Utc)).collect()
    }
}

/// Checks the entries of a runbook.toml (in `dir`); errors name the entry.
pub fn check(entries: &[ScheduleEntry], dir: &Path) -> std::result::Result<Vec<Schedule>, String> {
    let parser = croner::parser::CronParser::builder().seconds(croner::parser::Seconds::Optional).build();
    let mut out: Vec<Schedule> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let name = match &e.name {
            Some(n) => n.clone(),
            None => e.runbook.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        let at = format!("[[schedule]] #{} ({name})", i + 1);
        if name.trim().is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(format!("{at}: `name` must be 1 to 100 printable characters"));
        }
        if out.iter().any(|s| s.name == name) {
            return Err(format!("{at}: two schedules are named '{name}'; give each a unique `name`"));
        }
        let cron = parser.parse(&e.cron).map_err(|err| format!("{at}: cron \"{}\": {err}", e.cron))?;
        let tz = match &e.timezone {
            None => chrono_tz::UTC,
            Some(t) => chrono_tz::Tz::from_str(t)
                .map_err(|_| format!("{at}: unknown time zone '{t}' (an IANA name such as Europe/Berlin)"))?,
        };
        let runbook = if e.runbook.is_absolute() { e.runbook.clone() } else { dir.join(&e.runbook) };
        if !runbook.is_file() {
            return Err(format!("{at}: runbook {} does not exist", runbook.display()));
        }
        let catch_up = match &e.catch_up {
            CatchUpSpec::Unset => CatchUp::None,
            CatchUpSpec::Word(w) if w == "none" => CatchUp::None,
            CatchUpSpec::Word(w) if w == "last" => CatchUp::Last,
            CatchUpSpec::Within(Within { within: Some(d) }) => CatchUp::Within(*d),
            _ => return Err(format!("{at}: catch_up is \"none\", \"last\" or {{ within = \"6h\" }}")),
        };
        let mut params = Vec::new();
        for (k, v) in &e.params {
            params.push((k.clone(), param_text(v).map_err(|m| format!("{at}: params.{k}: {m}"))?));
        }
        if e.pause_after_failures == Some(0) {
            return Err(format!("{at}: pause_after_failures must be at least 1"));
        }
        out.push(Schedule {
            name,
            runbook,
            cron,
            cron_text: e.cron.clone(),
            tz,
            params,
            jitter: e.jitter,
            overlap: e.overlap,
            catch_up,
            enabled: e.enabled,
            pause_after_failures: e.pause_after_failures,
        });
    }
    Ok(out)
}

/// A TOML param value as the command line would give it.
fn param_text(v: &toml::Value) -> std::result::Result<String, String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => {
            items.iter().map(param_text).collect::<std::result::Result<Vec<_>, _>>()?.join(",")
        }
        other => return Err(format!("a {} cannot be a param value", other.type_str())),
    })
}

/// A queued run of `path` with `params`, checked first: the runbook is evaluated statically, so
/// a syntax error, a missing param or a secret given as a param is refused now rather than at
/// 3 a.m. Secrets are never queued: a worker reads them from its own environment.
pub async fn queued_run(
    path: &Path,
    params: &[(String, String)],
    trigger: &str,
    queue_key: Option<String>,
    not_before: Option<DateTime<Utc>>,
) -> Result<RunRecord> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read runbook {}: {e}", path.display())))?;
    let inv = Invocation {
        params: params.to_vec(),
        source: Some(source.clone()),
        trigger: "enqueue".into(),
        ..Invocation::new(path.to_path_buf(), Mode::Plan)
    };
    let outcome = crate::engine::execute(inv, None, crate::output::Reporter::new(crate::output::Format::Text)).await?;
    let decl =
        outcome.decl.ok_or_else(|| Error::Runbook(format!("{}: no runbook{{...}} declaration", path.display())))?;
    for (k, _) in params {
        if decl.params.iter().any(|p| &p.name == k && p.ty == crate::engine::ParamType::Secret) {
            return Err(Error::Usage(format!(
                "param '{k}' is a secret: queued params are stored in the journal, so a secret is not queued; \
                 give it to the workers through the environment (its `env`)"
            )));
        }
    }
    let now = crate::journal::now_ts();
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(RunRecord {
        id: crate::engine::new_run_id(),
        runbook: decl.name.clone(),
        path: abs.display().to_string(),
        content_hash: crate::engine::content_hash(&source),
        source,
        params: serde_json::json!({}),
        user: crate::process::username(),
        owner: Owner::current(),
        trigger: trigger.to_string(),
        dry_run: false,
        rollback: decl.rollback.clone(),
        lock_name: decl.lock.clone(),
        status: RunStatus::Queued,
        error: None,
        created_at: now.clone(),
        started_at: now.clone(),
        finished_at: None,
        heartbeat_at: now,
        lease_secs: crate::engine::lease_secs(),
        cancel_requested: false,
        queue_key,
        not_before: not_before.map(ts),
        queued_params: Some(serde_json::Value::Object(
            params.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect(),
        )),
        max_memory: None,
        auto_resume: false,
        resumed_by: None,
    })
}

/// A time as the journal writes it.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// Run statuses that count as a failure for `pause_after_failures`.
fn is_failure(s: RunStatus) -> bool {
    matches!(s, RunStatus::Failed | RunStatus::RolledBack | RunStatus::RollbackFailed)
}

/// Runs of a schedule that are not over: a new fire overlaps them.
fn is_pending(s: RunStatus) -> bool {
    matches!(s, RunStatus::Queued | RunStatus::Running | RunStatus::RollingBack | RunStatus::Interrupted)
}

/// Whether the schedule is paused: its last N runs failed, all after it was last unpaused.
pub async fn paused(journal: &dyn Journal, s: &Schedule) -> Result<bool> {
    let Some(n) = s.pause_after_failures else { return Ok(false) };
    let filter = RunFilter { queue_key: Some(s.queue_key()), limit: n as i64, ..RunFilter::default() };
    let runs = journal.runs(&filter).await?;
    let since = journal.unpaused_at(&s.name).await?;
    Ok(runs.len() == n as usize
        && runs.iter().all(|r| is_failure(r.status) && since.as_deref().is_none_or(|u| r.created_at.as_str() > u)))
}

/// Fires one fire time of a schedule: claims it, and queues its run unless the schedule is
/// paused or (with `overlap = "skip"`) its previous run is still pending. Returns the outcome
/// recorded, or None when another scheduler had fired that time already.
pub async fn fire(journal: &Arc<dyn Journal>, s: &Schedule, at: DateTime<Utc>) -> Result<Option<String>> {
    let me = Owner::current();
    let key = s.queue_key();
    let recent = journal.runs(&RunFilter { queue_key: Some(key.clone()), limit: 50, ..RunFilter::default() }).await?;
    let pending: Vec<&RunRecord> = recent.iter().filter(|r| is_pending(r.effective_status())).collect();
    let outcome = if paused(journal.as_ref(), s).await? {
        "paused"
    } else if s.overlap == Overlap::Skip && !pending.is_empty() {
        "skipped_overlap"
    } else {
        "queued"
    };
    let run = if outcome == "queued" {
        let jitter = s.jitter.map(|j| Duration::from_millis(rand::random::<u64>() % (j.as_millis() as u64).max(1)));
        let not_before = jitter.map(|j| at + chrono::Duration::from_std(j).unwrap_or_default());
        let trigger = format!("schedule:{}", s.name);
        match queued_run(&s.runbook, &s.params, &trigger, Some(key.clone()), not_before).await {
            Ok(run) => Some(run),
            // The runbook no longer evaluates (edited midway, a param gone bad): the fire is
            // recorded with the reason, so the failure is seen, and later fires still happen.
            Err(e) => {
                let why = crate::secret::redact(&e.to_string()).chars().take(500).collect::<String>();
                let record = FireRecord {
                    schedule: s.name.clone(),
                    fire_at: ts(at),
                    run_id: None,
                    outcome: format!("error: {why}"),
                    fired_by: format!("{}:{}", me.host, me.pid),
                    fired_at: crate::journal::now_ts(),
                };
                return Ok(journal.fire(&record, None).await?.then_some(record.outcome));
            }
        }
    } else {
        None
    };
    let record = FireRecord {
        schedule: s.name.clone(),
        fire_at: ts(at),
        run_id: run.as_ref().map(|r| r.id.clone()),
        outcome: outcome.to_string(),
        fired_by: format!("{}:{}", me.host, me.pid),
        fired_at: crate::journal::now_ts(),
    };
    if !journal.fire(&record, run.as_ref()).await? {
        return Ok(None);
    }
    // Cancelled only by the scheduler that won this fire time, and only runs older than it.
    if s.overlap == Overlap::CancelPrevious && run.is_some() {
        let why = format!("cancelled by schedule '{}': a newer fire at {} replaces it", s.name, ts(at));
        for old in pending {
            // A run nobody works on is closed; a live one (or one a worker takes over meanwhile)
            // is asked to stop, and a worker taking it over closes it.
            let closed = match old.status {
                RunStatus::Queued | RunStatus::Interrupted => {
                    journal.close_stopped_run(&old.id, old.status, &old.owner, RunStatus::Cancelled, &why).await?
                }
                _ => false,
            };
            if !closed {
                journal.request_cancel(&old.id, true).await?;
            }
        }
    }
    Ok(Some(outcome.to_string()))
}

/// Where each schedule's fire search starts (now), and the catch-up fire (if any) for the
/// fires missed since the newest recorded one, while no scheduler ran. A missed time that
/// another scheduler is firing right now is harmless: the fire time is the key.
pub async fn start_cursor(
    journal: &dyn Journal,
    s: &Schedule,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, Option<DateTime<Utc>>)> {
    let last = journal.fires(&s.name, 1).await?.into_iter().next().and_then(|f| parse_ts(&f.fire_at));
    let Some(last) = last else { return Ok((now, None)) };
    let newest_missed = s.fires_between(last, now, 1_000_000).last().copied();
    Ok((now, catch_up_fire(s.catch_up, newest_missed, now)))
}

/// The missed fire to run, by the policy: only ever the newest one.
pub fn catch_up_fire(
    policy: CatchUp,
    newest_missed: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match (policy, newest_missed) {
        (CatchUp::Last, Some(m)) => Some(m),
        (CatchUp::Within(d), Some(m)) if now - m <= chrono::Duration::from_std(d).unwrap_or_default() => Some(m),
        _ => None,
    }
}

/// Whether workers may run this run: it was queued or scheduled, not a person's own
/// `runbook run` (the same rule as the journal's `WORKER_TRIGGERS`).
pub fn worker_run(run: &RunRecord) -> bool {
    run.trigger == "enqueue" || run.trigger.starts_with("schedule:")
}

/// A schedule as `schedule --list` and the console show it: its next fires, whether failures
/// paused it, and its last fire and run.
pub async fn describe(journal: &dyn Journal, s: &Schedule, now: DateTime<Utc>) -> Result<serde_json::Value> {
    let last_fire = journal.fires(&s.name, 1).await?.into_iter().next();
    let last_run = journal
        .runs(&RunFilter { queue_key: Some(s.queue_key()), limit: 1, ..RunFilter::default() })
        .await?
        .into_iter()
        .next();
    let paused = paused(journal, s).await?;
    let next: Vec<String> = s.next_fires(now, 3).into_iter().map(ts).collect();
    Ok(serde_json::json!({
        "name": s.name,
        "runbook": s.runbook.display().to_string(),
        "cron": s.cron_text,
        "timezone": s.tz.name(),
        "enabled": s.enabled,
        "paused": paused,
        "overlap": format!("{:?}", s.overlap).to_lowercase(),
        "next": next,
        "last_fire": last_fire.as_ref().map(|f| serde_json::json!({"fire_at": f.fire_at, "outcome": f.outcome, "run_id": f.run_id})),
        "last_run": last_run.as_ref().map(|r| serde_json::json!({"id": r.id, "status": r.effective_status().as_str(), "finished_at": r.finished_at})),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        parse_ts(s).unwrap()
    }

    #[test]
    fn catch_up_runs_only_the_newest_missed_fire_within_its_window() {
        let now = at("2026-11-22T09:00:00Z");
        let missed = Some(at("2026-11-22T03:00:00Z"));
        assert_eq!(catch_up_fire(CatchUp::None, missed, now), None);
        assert_eq!(catch_up_fire(CatchUp::Last, missed, now), missed);
        assert_eq!(catch_up_fire(CatchUp::Within(Duration::from_secs(6 * 3600)), missed, now), missed);
        assert_eq!(catch_up_fire(CatchUp::Within(Duration::from_secs(5 * 3600)), missed, now), None);
        assert_eq!(catch_up_fire(CatchUp::Last, None, now), None);
    }

    #[test]
    fn schedules_are_checked_with_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.lua"), "runbook { name = 'b' }").unwrap();
        let entry = |extra: &str| -> std::result::Result<Vec<Schedule>, String> {
            let text = format!("runbook = \"b.lua\"\ncron = \"0 3 * * *\"\n{extra}");
            let e: ScheduleEntry = toml::from_str(&text).map_err(|e| e.to_string())?;
            check(&[e], dir.path())
        };
        let ok = entry("timezone = \"Europe/Berlin\"\ncatch_up = { within = \"6h\" }").unwrap();
        assert_eq!(ok[0].name, "b");
        assert_eq!(ok[0].catch_up, CatchUp::Within(Duration::from_secs(6 * 3600)));
        // 03:00 in Berlin is 02:00 UTC in winter.
        let next = ok[0].next_fires(at("2026-11-22T12:00:00Z"), 1);
        assert_eq!(ts(next[0]), "2026-11-23T02:00:00.000Z");
        assert!(entry("timezone = \"Mars/Olympus\"").unwrap_err().contains("unknown time zone"));
        assert!(entry("catch_up = \"all\"").unwrap_err().contains("catch_up is"));
        assert!(entry("overlap = \"maybe\"").unwrap_err().contains("unknown variant"));
        assert!(entry("colour = 1").unwrap_err().contains("unknown field"));
        let bad = toml::from_str::<ScheduleEntry>("runbook = \"b.lua\"\ncron = \"61 * * * *\"").unwrap();
        assert!(check(&[bad], dir.path()).unwrap_err().contains("cron \"61 * * * *\""));
    }
}
