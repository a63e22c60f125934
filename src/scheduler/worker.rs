//! Workers: take queued runs (and runs whose worker died) from the journal and run them here.
//!
//! Runs execute inside the worker process, so a worker that dies takes its runs with it; their
//! heartbeats stop, and another worker resumes them from their last completed step once the
//! lease ran out (at once on the same host, where a dead pid is certain).
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::{self, Invocation, Mode};
use crate::journal::{Claim, Journal, Owner, RunRecord, RunStatus};
use crate::output::Reporter;

pub struct Options {
    /// Runs at once in this process.
    pub concurrency: usize,
    /// How often an idle worker looks for work.
    pub poll: Duration,
    /// Stop when the queue is empty and nothing runs (benchmarks, `schedule --once`).
    pub until_empty: bool,
}

/// What a worker did, for its exit summary.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    pub runs: u64,
    pub taken_over: u64,
    pub failed: u64,
    /// Claim statement latencies, in microseconds (successful claims only).
    #[serde(skip)]
    pub claim_us: Vec<u64>,
}

/// One unit of work: a run this process now owns.
struct Job {
    run: RunRecord,
    /// A queued run starting from its first step (else a takeover, resumed).
    fresh: bool,
}

/// Takes the next job: a run whose process is gone comes first (it was started before
/// anything still queued), then the oldest queued run that may start.
async fn next_job(
    journal: &Arc<dyn Journal>,
    me: &Owner,
    summary: &mut Summary,
    busy: &HashSet<String>,
    scan_orphans: bool,
) -> crate::error::Result<Option<Job>> {
    let candidates = if scan_orphans { journal.takeover_candidates().await? } else { Vec::new() };
    for run in candidates {
        if busy.contains(&run.id) {
            continue;
        }
        // A run this worker set back itself is not taken again at once, unless someone asked
        // for it (an approved gate, a resume from the console).
        let mine = run.owner.host == me.host && run.owner.pid == me.pid;
        let stopped = run.status == RunStatus::Interrupted && (run.auto_resume || !mine);
        if !(stopped || run.is_orphaned()) {
            continue;
        }
        if run.cancel_requested {
            let why = "cancelled (requested while its worker was gone)";
            journal.close_stopped_run(&run.id, run.status, &run.owner, RunStatus::Cancelled, why).await?;
            if let Some(name) = &run.lock_name {
                journal.release_lock(name, &run.id).await?;
            }
            continue;
        }
        let claim = Claim {
            id: &run.id,
            expected: run.status,
            previous: &run.owner,
            new_status: run.status,
            me,
            lease_secs: engine::lease_secs(),
            params: None,
            source: None,
        };
        if journal.claim_run(&claim).await? {
            summary.taken_over += 1;
            let fresh =
                run.params.as_object().is_some_and(|o| o.is_empty()) && journal.steps(&run.id).await?.is_empty();
            let run = RunRecord { owner: me.clone(), ..run };
            return Ok(Some(Job { run, fresh }));
        }
    }
    let started = Instant::now();
    let claimed = journal.claim_queued(me, engine::lease_secs()).await?;
    if let Some(run) = claimed {
        summary.claim_us.push(started.elapsed().as_micros() as u64);
        return Ok(Some(Job { run, fresh: true }));
    }
    Ok(None)
}

/// Runs one job to its end (or to a stop), and tidies what the engine could not.
async fn execute(journal: Arc<dyn Journal>, job: Job) -> (String, bool) {
    let me = Owner::current();
    let id = job.run.id.clone();
    let lock = job.run.lock_name.clone();
    let fresh = job.fresh;
    let steps = if job.fresh { Vec::new() } else { journal.steps(&id).await.unwrap_or_default() };
    let params: Vec<(String, String)> = job
        .run
        .queued_params
        .as_ref()
        .and_then(|p| p.as_object())
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let path = PathBuf::from(&job.run.path);
    let inv = Invocation {
        params,
        trigger: job.run.trigger.clone(),
        source: Some(job.run.source.clone()),
        queued: fresh,
        drain: true,
        resume: Some((job.run, steps)),
        ..Invocation::new(path, Mode::Run)
    };
    let result = engine::execute(inv, Some(journal.clone()), Reporter::for_cron()).await;
    // Whatever the engine could not record (a runbook that no longer evaluates, a stop before
    // its declaration): a run this process still holds never stays `running`.
    let failed = match &result {
        Ok(o) => !matches!(o.status, RunStatus::Succeeded),
        Err(_) => true,
    };
    // A run that ended normally was closed by the engine; look at the others.
    let settled = result.as_ref().is_ok_and(|o| o.status != RunStatus::Interrupted && o.run_id.is_some());
    let record = if settled { Ok(None) } else { journal.run(&id).await };
    if let Ok(Some(run)) = record {
        let mine = run.owner.host == me.host && run.owner.pid == me.pid;
        let closed = match (&result, run.status) {
            _ if !mine => None,
            // Stopped by a graceful shutdown before its declaration: a queued run goes back to
            // the queue, a taken-over one stays resumable.
            (Ok(o), RunStatus::Running) if o.status == RunStatus::Interrupted => {
                let back = if fresh { RunStatus::Queued } else { RunStatus::Interrupted };
                Some(journal.set_run_status(&id, &me, back, None).await)
            }
            (Ok(o), RunStatus::Running) => Some(
                journal
                    .finish_run(&id, &me, RunStatus::Failed, Some(&format!("stopped before it started ({})", o.status)))
                    .await,
            ),
            // A run that cannot go on here (a secret missing from this worker's environment)
            // is failed, not handed from worker to worker forever.
            (Err(e), RunStatus::Running | RunStatus::Interrupted | RunStatus::RollingBack) => Some(
                journal.finish_run(&id, &me, RunStatus::Failed, Some(&crate::secret::redact(&e.to_string()))).await,
            ),
            _ => None,
        };
        if let Some(Err(e)) = closed {
            tracing::warn!("could not close run {id}: {e}");
        }
        // A lock the engine could not release (it stopped on a journal error) would hold every
        // later run of that lock off while this worker lives.
        if let (true, Some(name)) = (mine && run.status.is_final(), &lock) {
            let _ = journal.release_lock(name, &id).await;
        }
    }
    if let Err(e) = &result {
        let text = crate::secret::redact(&e.to_string()).into_owned();
        eprintln!("{}", serde_json::json!({"event": "error", "run_id": id, "message": text}));
    }
    if let Err(e) = crate::commands::notify::after_run(journal.as_ref(), &id).await {
        let text = crate::secret::redact(&e).into_owned();
        eprintln!(
            "{}",
            serde_json::json!({"event": "error", "run_id": id, "message": format!("notify webhook: {text}")})
        );
    }
    (id, failed)
}

/// The worker loop: runs up to `concurrency` jobs at once until a signal (then lets each
/// running step finish, see [`engine::draining`]) or, with `until_empty`, an empty queue.
/// `tick` runs between claims (the scheduler fires its due times there).
pub async fn run<F, Fut>(journal: Arc<dyn Journal>, opts: &Options, mut tick: F) -> crate::error::Result<Summary>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::error::Result<Duration>>,
{
    let me = Owner::current();
    let mut summary = Summary::default();
    let local = tokio::task::LocalSet::new();
    let result: crate::error::Result<()> = local
        .run_until(async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut int = signal(SignalKind::interrupt()).map_err(|e| crate::error::Error::Io(e.to_string()))?;
            let mut term = signal(SignalKind::terminate()).map_err(|e| crate::error::Error::Io(e.to_string()))?;
            let mut running: tokio::task::JoinSet<(String, bool)> = tokio::task::JoinSet::new();
            let mut busy: HashSet<String> = HashSet::new();
            let mut tasks: std::collections::HashMap<tokio::task::Id, String> = Default::default();
            // Runs of dead workers are looked for about once a second, not before every claim.
            let mut last_scan: Option<Instant> = None;
            loop {
                let next_fire = if engine::draining() { Duration::from_secs(3600) } else { tick().await? };
                let mut wait = next_fire;
                if !engine::draining() {
                    while running.len() < opts.concurrency.max(1) {
                        let scan = last_scan.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
                        if scan {
                            last_scan = Some(Instant::now());
                            // Gates whose time ran out end as their policy says (a rollback
                            // one is then resumed below, like an approved one).
                            if let Err(e) = crate::approval::expire_due(journal.as_ref()).await {
                                tracing::warn!("worker: cannot end timed-out gates: {e}");
                            }
                        }
                        match next_job(&journal, &me, &mut summary, &busy, scan).await {
                            Ok(Some(job)) => {
                                busy.insert(job.run.id.clone());
                                let run_id = job.run.id.clone();
                                let handle = running.spawn_local(execute(journal.clone(), job));
                                tasks.insert(handle.id(), run_id);
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!("worker: cannot claim work: {e}");
                                break;
                            }
                        }
                    }
                    // Busy: wake for the next fire or a finished run; idle: also poll the queue.
                    if running.len() < opts.concurrency.max(1) {
                        wait = next_fire.min(opts.poll);
                    }
                }
                if running.is_empty() && (engine::draining() || opts.until_empty) {
                    break;
                }
                tokio::select! {
                    done = running.join_next_with_id(), if !running.is_empty() => {
                        match done {
                            Some(Ok((task, (id, failed)))) => {
                                tasks.remove(&task);
                                busy.remove(&id);
                                summary.runs += 1;
                                summary.failed += failed as u64;
                            }
                            // A run that panicked: closed as failed, never left `running`.
                            Some(Err(e)) => {
                                let id = tasks.remove(&e.id()).unwrap_or_default();
                                busy.remove(&id);
                                summary.runs += 1;
                                summary.failed += 1;
                                let why = format!("the worker's task for this run panicked: {e}");
                                if let Err(e) = journal.finish_run(&id, &me, RunStatus::Failed, Some(&why)).await {
                                    tracing::warn!("could not close run {id}: {e}");
                                }
                            }
                            None => {}
                        }
                    }
                    _ = tokio::time::sleep(wait) => {}
                    _ = int.recv() => engine::start_draining(),
                    _ = term.recv() => engine::start_draining(),
                }
            }
            Ok(())
        })
        .await;
    result.map(|_| summary)
}
