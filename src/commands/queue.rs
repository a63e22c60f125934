//! `runbook enqueue`, `runbook worker` and `runbook schedule`: the queue and the scheduler.
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::cli::{ParamArgs, ScheduleArgs, WorkerArgs};
use crate::error::{exit, Error, Result};
use crate::journal::{self, Journal};
use crate::output::Format;
use crate::scheduler::{self, worker, Schedule};

pub async fn enqueue(state: Option<&str>, file: &Path, params: ParamArgs) -> Result<u8> {
    if !file.exists() {
        return Err(Error::Usage(format!("runbook file {} does not exist", file.display())));
    }
    if params.params_file.is_some() {
        return Err(Error::Usage("enqueue takes params with -p KEY=VALUE (a params file is not queued)".into()));
    }
    let run = scheduler::queued_run(file, &params.params, "enqueue", None, None).await?;
    let journal = journal::open(state).await?;
    let created = journal.create_run(&run).await;
    journal.close().await;
    created?;
    println!("{}", run.id);
    Ok(exit::OK)
}

pub async fn worker(state: Option<&str>, args: WorkerArgs) -> Result<u8> {
    crate::config::get().map_err(Error::Usage)?;
    let journal = journal::open(state).await?;
    let opts =
        worker::Options { concurrency: args.concurrency as usize, poll: args.poll, until_empty: args.until_empty };
    let summary = worker::run(journal.clone(), &opts, || async { Ok(Duration::from_secs(3600)) }).await;
    journal.close().await;
    let summary = summary?;
    if args.until_empty {
        println!("{}", summary_json(&summary));
    }
    Ok(exit::OK)
}

fn summary_json(s: &worker::Summary) -> serde_json::Value {
    let mut lat = s.claim_us.clone();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat[i] as f64 / 1000.0
    };
    json!({"runs": s.runs, "taken_over": s.taken_over, "failed": s.failed, "claims": lat.len(),
           "claim_ms_p50": pct(0.5), "claim_ms_p99": pct(0.99)})
}

fn event(name: &str, fields: serde_json::Value) {
    let mut obj = json!({"ts": journal::now_ts(), "event": name});
    if let (Some(o), serde_json::Value::Object(f)) = (obj.as_object_mut(), fields) {
        o.extend(f);
    }
    eprintln!("{}", crate::secret::redact(&obj.to_string()));
}

pub async fn schedule(state: Option<&str>, args: ScheduleArgs) -> Result<u8> {
    let config = crate::config::get().map_err(Error::Usage)?;
    let schedules = config.checked_schedules.clone();
    if schedules.is_empty() {
        let wher =
            config.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "no runbook.toml found".into());
        return Err(Error::Usage(format!("no [[schedule]] entries ({wher})")));
    }
    let journal = journal::open(state).await?;
    let result = match () {
        _ if args.list => list(journal.as_ref(), &schedules, args.output).await,
        _ if args.unpause.is_some() => {
            unpause(journal.as_ref(), &schedules, args.unpause.as_deref().unwrap_or("")).await
        }
        _ => serve(&journal, schedules, &args).await,
    };
    journal.close().await;
    result
}

async fn unpause(journal: &dyn Journal, schedules: &[Schedule], name: &str) -> Result<u8> {
    let Some(s) = schedules.iter().find(|s| s.name == name) else {
        let names: Vec<&str> = schedules.iter().map(|s| s.name.as_str()).collect();
        return Err(Error::Usage(format!("no schedule named '{name}' (known: {})", names.join(", "))));
    };
    journal.unpause(&s.name, &crate::process::username()).await?;
    println!("unpaused: {} fires again at its next time", s.name);
    Ok(exit::OK)
}

async fn list(journal: &dyn Journal, schedules: &[Schedule], output: Format) -> Result<u8> {
    let mut rows = Vec::new();
    for s in schedules {
        rows.push(scheduler::describe(journal, s, Utc::now()).await?);
    }
    if output == Format::Json {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
        return Ok(exit::OK);
    }
    for r in &rows {
        let state = match (r["enabled"].as_bool(), r["paused"].as_bool()) {
            (Some(false), _) => " [disabled]",
            (_, Some(true)) => " [paused: `runbook schedule --unpause NAME`]",
            _ => "",
        };
        println!("{}{state}", r["name"].as_str().unwrap_or(""));
        println!("  runbook  {}", r["runbook"].as_str().unwrap_or(""));
        println!("  cron     {} ({})", r["cron"].as_str().unwrap_or(""), r["timezone"].as_str().unwrap_or(""));
        let next: Vec<&str> = r["next"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
        println!("  next     {}", next.join(", "));
        match r["last_fire"].as_object() {
            Some(f) => {
                let run = &r["last_run"];
                println!(
                    "  last     {} {}{}",
                    f["fire_at"].as_str().unwrap_or(""),
                    f["outcome"].as_str().unwrap_or(""),
                    run.get("id")
                        .map(|id| format!(
                            ", run {} {}",
                            id.as_str().unwrap_or(""),
                            run["status"].as_str().unwrap_or("")
                        ))
                        .unwrap_or_default()
                );
            }
            None => println!("  last     never fired"),
        }
    }
    Ok(exit::OK)
}

/// Fires one time of a schedule and says what happened; false when the journal failed (the
/// fire is to be tried again).
async fn fire_logged(journal: &Arc<dyn Journal>, s: &Schedule, at: DateTime<Utc>, why: &str) -> bool {
    match scheduler::fire(journal, s, at).await {
        Ok(Some(outcome)) => {
            let name = if outcome.starts_with("error") { "error" } else { "schedule_fired" };
            event(name, json!({"schedule": s.name, "fire_at": scheduler::ts(at), "outcome": outcome, "why": why}));
            true
        }
        Ok(None) => true,
        Err(e) => {
            event(
                "error",
                json!({"schedule": s.name, "fire_at": scheduler::ts(at), "message": format!("cannot fire schedule '{}' (tried again): {e}", s.name)}),
            );
            false
        }
    }
}

/// The scheduler in the foreground (or `--once`): fires due times, and works the queue.
async fn serve(journal: &Arc<dyn Journal>, schedules: Vec<Schedule>, args: &ScheduleArgs) -> Result<u8> {
    let active: Vec<Schedule> = schedules.into_iter().filter(|s| s.enabled).collect();
    let now = Utc::now();
    let mut cursors = HashMap::new();
    for s in &active {
        let (mut cursor, catch) = scheduler::start_cursor(journal.as_ref(), s, now).await?;
        if let Some(at) = catch {
            fire_logged(journal, s, at, "catch_up").await;
        }
        // `--once` on a schedule that never fired: its newest time of the last minute is due.
        if args.once && journal.fires(&s.name, 1).await?.is_empty() {
            cursor = now - chrono::Duration::seconds(60);
            if let Some(at) = s.fires_between(cursor, now, 100_000).last() {
                cursor = *at - chrono::Duration::milliseconds(1);
            }
        }
        cursors.insert(s.name.clone(), cursor);
    }
    event(
        "scheduler_started",
        json!({"schedules": active.iter().map(|s| s.name.clone()).collect::<Vec<_>>(), "journal": journal.location()}),
    );
    let cursors = Rc::new(RefCell::new(cursors));
    let active = Rc::new(active);
    let (once, started) = (args.once, Utc::now());
    let tick = || {
        let (journal, cursors, active) = (journal.clone(), cursors.clone(), active.clone());
        async move {
            let now = Utc::now();
            // `--once` fires what was due when it started, not what falls due while it runs.
            let until = if once { now.min(started) } else { now };
            let mut next_in = Duration::from_secs(60);
            for s in active.iter() {
                let cursor = cursors.borrow().get(&s.name).copied().unwrap_or(now);
                // A fire the journal refused (a transient error) is tried again next time: the
                // cursor stays before it, and the fire time as key makes the retry safe.
                let mut reached = until;
                for at in s.fires_between(cursor, until, 1000) {
                    if !fire_logged(&journal, s, at, "due").await {
                        reached = at - chrono::Duration::milliseconds(1);
                        break;
                    }
                }
                cursors.borrow_mut().insert(s.name.clone(), reached);
                if let Some(next) = s.next_fires(now, 1).first() {
                    next_in = next_in.min((*next - now).to_std().unwrap_or_default());
                }
            }
            // Wake a little after the fire time, never busy-loop.
            Ok(next_in.max(Duration::from_millis(20)) + Duration::from_millis(5))
        }
    };
    let opts = worker::Options {
        concurrency: args.concurrency as usize,
        poll: Duration::from_secs(1),
        until_empty: args.once,
    };
    let summary = worker::run(journal.clone(), &opts, tick).await?;
    event(
        "scheduler_stopped",
        json!({"runs": summary.runs, "failed": summary.failed, "taken_over": summary.taken_over}),
    );
    Ok(exit::OK)
}
