//! What each command does. The engine does the evaluating; these gather inputs and print.
pub mod doc;
mod init;
pub(crate) mod inspect;
mod metrics;
pub(crate) mod notify;
mod queue;

use std::path::{Path, PathBuf};

use crate::cli::{Cli, Command, ExecArgs, ParamArgs, ResumeArgs, RunArgs};
use crate::engine::{self, Invocation, Mode};
use crate::error::{exit, Error, Result};
use crate::journal::{self, RunStatus};
use crate::output::{Format, Reporter};

pub async fn dispatch(cli: Cli) -> Result<u8> {
    crate::config::init(cli.config.clone());
    // `state = ` in runbook.toml when neither --state nor RUNBOOK_STATE is given.
    let state = cli.state.clone().or_else(|| crate::config::get().ok().and_then(|c| c.state.clone()));
    let state = state.as_deref();
    match cli.command {
        Command::Run(args) => run(state, args).await,
        Command::Resume(args) => resume(state, args).await,
        Command::Plan(args) => inspect::plan(args).await,
        Command::Check { file } => inspect::check(&file).await,
        Command::Doc { file, params, output } => doc::doc(&file, params, output).await,
        Command::Init { dir } => init::init(&dir),
        Command::Stubs { dir } => init::stubs(&dir),
        Command::Test { paths, filter, output, crash, junit, coverage, from_run } => match from_run {
            Some(run) => crate::testing::from_run::skeleton(state, &run).await,
            None => {
                crate::testing::command(crate::testing::Options {
                    paths: &paths,
                    filter: filter.as_deref(),
                    json: output == Format::Json,
                    crash,
                    junit: junit.as_deref(),
                    coverage,
                })
                .await
            }
        },
        Command::History { runbook, limit, output } => inspect::history(state, runbook, limit, output).await,
        Command::Show { run, output, events } => inspect::show(state, &run, output, events).await,
        Command::Approve { run, reject, comment } => approve(state, &run, !reject, comment).await,
        Command::Cancel { run, no_rollback } => cancel(state, &run, !no_rollback).await,
        Command::Rollback { run, params, allow_changed, exec } => {
            let why = format!("rolled back on demand by {}", crate::process::username());
            roll_back(state, &run, params, allow_changed, &exec, why).await
        }
        Command::Unlock { name } => unlock(state, &name).await,
        Command::Enqueue { file, params } => queue::enqueue(state, &file, params).await,
        Command::Worker(args) => queue::worker(state, args).await,
        Command::Serve(args) if args.hash_password => crate::serve::hash_password_command(),
        Command::Serve(args) if args.new_token => crate::serve::new_token_command(),
        Command::Serve(args) => {
            let tls = args.tls_cert.zip(args.tls_key);
            let opts = crate::serve::Options {
                listen: args.listen,
                tls,
                workers: args.workers,
                allow_plain_http: args.allow_plain_http,
            };
            crate::serve::serve(state, opts).await
        }
        Command::Schedule(args) => queue::schedule(state, args).await,
        Command::Repl { run, last } => {
            let attach = if last { Some("last".to_string()) } else { run };
            crate::repl::run(crate::repl::Options { state: state.map(str::to_string), attach }).await
        }
        Command::Sessions { show, limit, output } => inspect::sessions(state, show, limit, output).await,
        Command::Completions { .. } => Ok(exit::OK),
    }
}

fn invocation(path: PathBuf, mode: Mode, params: ParamArgs, exec: &ExecArgs) -> Invocation {
    Invocation {
        params: params.params,
        params_file: params.params_file,
        yes: exec.yes,
        trigger: trigger(),
        max_memory: exec.max_memory,
        lock_wait: exec.lock_wait,
        ..Invocation::new(path, mode)
    }
}

/// A runbook evaluated in plan mode (nothing acts): its declaration and steps.
pub async fn evaluate_plan(path: &std::path::Path) -> Result<crate::engine::Outcome> {
    inspect::evaluate(path, Mode::Plan, vec![], None).await
}

/// How the run was started, as recorded in the journal.
fn trigger() -> String {
    std::env::var("RUNBOOK_TRIGGER").ok().filter(|t| !t.is_empty()).unwrap_or_else(|| "cli".into())
}

async fn run(state: Option<&str>, args: RunArgs) -> Result<u8> {
    if !args.file.exists() {
        return Err(Error::Usage(format!("runbook file {} does not exist", args.file.display())));
    }
    crate::config::get().map_err(Error::Usage)?;
    let journal = journal::open(state).await?;
    let mode = if args.dry_run { Mode::DryRun } else { Mode::Run };
    let inv = invocation(args.file, mode, args.params, &args.exec);
    let reporter = if args.cron { Reporter::for_cron() } else { Reporter::new(args.exec.output) };
    let outcome = engine::execute(inv, Some(journal.clone()), reporter).await;
    journal.close().await;
    let outcome = outcome?;
    after_run(state, &outcome, &args.exec, args.cron).await;
    Ok(outcome.exit_code())
}

async fn resume(state: Option<&str>, args: ResumeArgs) -> Result<u8> {
    crate::config::get().map_err(Error::Usage)?;
    let journal = journal::open(state).await?;
    let reference = if args.last { "last".to_string() } else { args.run.clone().unwrap_or_default() };
    let run = journal.find_run(&reference).await?;
    let path = resumable(&run, args.allow_changed, "resume anyway with --allow-changed").map_err(Error::Usage)?;
    let steps = journal.steps(&run.id).await?;
    let mut inv = invocation(display_path(&path), Mode::Run, args.params, &args.exec);
    inv.trigger = run.trigger.clone();
    inv.resume = Some((run, steps));
    let outcome = engine::execute(inv, Some(journal.clone()), Reporter::new(args.exec.output)).await;
    journal.close().await;
    let outcome = outcome?;
    after_run(state, &outcome, &args.exec, false).await;
    Ok(outcome.exit_code())
}

/// The runbook file of a run that may be resumed; otherwise why not: still running, queued,
/// ended, a dry run, or a runbook changed since the run started (unless `allow_changed`;
/// `allow_hint` says how to allow it). Shared by `runbook resume` and the REPL's `:resume`.
pub(crate) fn resumable(
    run: &journal::RunRecord,
    allow_changed: bool,
    allow_hint: &str,
) -> std::result::Result<PathBuf, String> {
    let status = run.effective_status();
    match status {
        RunStatus::Running | RunStatus::RollingBack => {
            return Err(format!(
                "run {} is still {} (pid {} on {}); wait for it, or `runbook cancel {}`",
                run.id, status, run.owner.pid, run.owner.host, run.id
            ))
        }
        RunStatus::Queued => {
            return Err(format!(
                "run {} is queued: a worker starts it (`runbook worker`), or `runbook cancel {}`",
                run.id, run.id
            ))
        }
        s if s.is_final() => return Err(format!("run {} already ended ({s}); there is nothing to resume", run.id)),
        _ => {}
    }
    if run.dry_run {
        return Err(format!("run {} was a dry run; start a real one with `runbook run`", run.id));
    }
    let path = PathBuf::from(&run.path);
    let current = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read the runbook of run {} at {}: {e}", run.id, path.display()))?;
    if engine::content_hash(&current) != run.content_hash && !allow_changed {
        return Err(format!(
            "runbook {} changed since run {} started ({}); {allow_hint}",
            path.display(),
            run.id,
            what_changed(&run.source, &current)
        ));
    }
    Ok(path)
}

/// After a run: `--metrics-file`, and the `[notify]` webhook of runbook.toml. A failure of
/// either is reported, and does not change the run's exit code.
pub(crate) async fn after_run(state: Option<&str>, outcome: &engine::Outcome, exec: &ExecArgs, json: bool) {
    let Some(run_id) = &outcome.run_id else { return };
    let notifies = crate::config::get().is_ok_and(|c| c.notify.is_some());
    // A dry run changed nothing: it neither overwrites the real metrics nor notifies.
    if (exec.metrics_file.is_none() && !notifies) || outcome.status == RunStatus::DryRun {
        return;
    }
    // At most 20 seconds, and a signal ends it at once: the run is over and journaled.
    let work = after_run_inner(state, run_id, exec, json);
    let stop = async {
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(std::time::Duration::from_secs(20), work) => {}
        _ = stop => complain("interrupted while writing metrics or notifying", json),
    }
}

async fn after_run_inner(state: Option<&str>, run_id: &str, exec: &ExecArgs, json: bool) {
    let j = match journal::open(state).await {
        Ok(j) => j,
        Err(e) => return complain(&format!("after the run: {e}"), json),
    };
    if let Some(path) = &exec.metrics_file {
        if let Err(e) = metrics::write(j.as_ref(), run_id, path).await {
            complain(&format!("writing metrics to {}: {e}", path.display()), json);
        }
    }
    if let Err(e) = notify::after_run(j.as_ref(), run_id).await {
        complain(&format!("notify webhook: {e}"), json);
    }
    j.close().await;
}

fn complain(message: &str, json: bool) {
    let message = crate::secret::redact(message);
    let message = message.as_ref();
    if json {
        eprintln!("{}", serde_json::json!({"event": "error", "message": message}));
    } else {
        eprintln!("error: {message}");
    }
}

/// A path relative to the current directory when it is below it, for shorter messages.
fn display_path(path: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(&cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
}

/// Names the lines that differ between two versions of a runbook.
pub fn what_changed(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..].iter().rev().zip(b[prefix..].iter().rev()).take_while(|(x, y)| x == y).count();
    let (old_n, new_n) = (a.len() - prefix - suffix, b.len() - prefix - suffix);
    let first = prefix + 1;
    match (old_n, new_n) {
        (0, n) => format!("{n} line(s) added at line {first}"),
        (n, 0) => format!("{n} line(s) removed at line {first}"),
        (_, 1) => format!("line {first} changed: now `{}`", b[prefix].trim()),
        (_, n) => format!("lines {first}-{} changed", first + n - 1),
    }
}

async fn approve(state: Option<&str>, reference: &str, yes: bool, comment: Option<String>) -> Result<u8> {
    use crate::approval::{self, Decision, Voter};
    use crate::journal::VoteOutcome;
    let journal = journal::open(state).await?;
    let run = journal.find_run(reference).await?;
    let voter = Voter::os_user();
    let decision = Decision { approve: yes, comment, via: "cli" };
    let result = approval::decide(journal.as_ref(), &run, &voter, &decision).await;
    journal.close().await;
    let (gate, outcome) = result?;
    let message = gate.name.trim_start_matches(crate::engine::GATE_PREFIX);
    match outcome {
        VoteOutcome::Pending { approvals } => {
            let need = approval::GateState::of(&gate).and_then(|g| g.policy).map_or(1, |p| p.quorum);
            println!("approval recorded: {message} (run {}): {approvals} of {need}; waiting for more", run.id);
        }
        VoteOutcome::Approved { approvers } => {
            println!("approved: {message} (run {}) by {}", run.id, approvers.join(", "));
            if crate::scheduler::worker_run(&run) {
                println!("a worker resumes it (runbook worker, or runbook serve --workers N)");
            } else {
                println!("continue with: runbook resume {}", run.id);
            }
        }
        VoteOutcome::Rejected if run.rollback == "auto" => {
            let who = if crate::scheduler::worker_run(&run) { "a worker rolls it back" } else { "roll it back with" };
            println!("rejected: {message} (run {}); {who} (rollback = \"auto\"): runbook resume {}", run.id, run.id);
        }
        VoteOutcome::Rejected => println!("rejected: {message} (run {}); the run is cancelled", run.id),
        // `decide` turns these into errors.
        VoteOutcome::Stale | VoteOutcome::AlreadyVoted => {}
    }
    Ok(exit::OK)
}

async fn cancel(state: Option<&str>, reference: &str, rollback: bool) -> Result<u8> {
    let journal = journal::open(state).await?;
    let run = journal.find_run(reference).await?;
    let status = run.effective_status();
    if status.is_final() {
        return Err(Error::Usage(format!("run {} already ended ({status})", run.id)));
    }
    let who = crate::process::username();
    if status.is_active() {
        journal.request_cancel(&run.id, rollback).await?;
        let undo = if run.rollback == "auto" && rollback && status == RunStatus::Running {
            "; it rolls back (rollback = \"auto\")"
        } else {
            ""
        };
        println!(
            "cancellation requested: run {} (pid {} on {}) stops at its next heartbeat{undo}",
            run.id, run.owner.pid, run.owner.host
        );
    } else if run.rollback == "auto" && rollback && !run.dry_run && status != RunStatus::Queued {
        // A stopped run of a `rollback = "auto"` runbook: its undos run here, now.
        journal.close().await;
        println!("cancelling run {} (was {status}): rolling back (rollback = \"auto\"; --no-rollback to skip)", run.id);
        let exec = crate::cli::ExecArgs::default();
        return roll_back(
            state,
            &run.id,
            crate::cli::ParamArgs::default(),
            false,
            &exec,
            format!("cancelled by {who}"),
        )
        .await;
    } else {
        // Only if nobody resumed it meanwhile (compare-and-swap on status and owner).
        let why = format!("cancelled by {who}");
        if !journal.close_stopped_run(&run.id, run.status, &run.owner, RunStatus::Cancelled, &why).await? {
            return Err(Error::Usage(format!(
                "run {} changed while cancelling (it was resumed?); see `runbook show {}`",
                run.id, run.id
            )));
        }
        if let Some(lock) = &run.lock_name {
            journal.release_lock(lock, &run.id).await?;
        }
        println!("cancelled: run {} (was {status})", run.id);
    }
    journal.close().await;
    Ok(exit::OK)
}

/// Rolls a stopped run back now: the runbook is replayed (completed steps return their results
/// and register their undo), then the undos run newest first, each journaled.
async fn roll_back(
    state: Option<&str>,
    reference: &str,
    params: ParamArgs,
    allow_changed: bool,
    exec: &ExecArgs,
    why: String,
) -> Result<u8> {
    crate::config::get().map_err(Error::Usage)?;
    let journal = journal::open(state).await?;
    let run = journal.find_run(reference).await?;
    let status = run.effective_status();
    if status.is_active() {
        return Err(Error::Usage(format!(
            "run {} is {status} now (pid {} on {}): wait for it, or `runbook cancel {}`",
            run.id, run.owner.pid, run.owner.host, run.id
        )));
    }
    if !matches!(
        status,
        RunStatus::Failed
            | RunStatus::Cancelled
            | RunStatus::Interrupted
            | RunStatus::WaitingApproval
            | RunStatus::RollbackFailed
            | RunStatus::RollingBack
    ) || run.dry_run
    {
        let what = if run.dry_run { "a dry run".to_string() } else { status.to_string() };
        return Err(Error::Usage(format!(
            "run {} is {what}: only a failed, cancelled, interrupted or waiting run is rolled back",
            run.id
        )));
    }
    // A cancelled run is final for `resume`, not for a rollback: check the rest as resume does.
    let check = journal::RunRecord { status: RunStatus::Failed, ..run.clone() };
    let path = resumable(&check, allow_changed, "roll back anyway with --allow-changed").map_err(Error::Usage)?;
    let steps = journal.steps(&run.id).await?;
    let mut inv = invocation(display_path(&path), Mode::Run, params, exec);
    inv.trigger = run.trigger.clone();
    inv.resume = Some((run, steps));
    inv.rollback = Some(why);
    let outcome = engine::execute(inv, Some(journal.clone()), Reporter::new(exec.output)).await;
    journal.close().await;
    let outcome = outcome?;
    after_run(state, &outcome, exec, false).await;
    // Rolled back is what was asked for.
    Ok(if outcome.status == RunStatus::RolledBack { exit::OK } else { outcome.exit_code() })
}

/// `runbook unlock NAME`: releases a lock whatever its run, and says so in that run's events.
async fn unlock(state: Option<&str>, name: &str) -> Result<u8> {
    let journal = journal::open(state).await?;
    let Some(holder) = journal.lock_holder(name).await? else {
        journal.close().await;
        return Err(Error::Usage(format!("lock '{name}' is not held")));
    };
    let live = holder.status.is_some_and(|s| s.is_active())
        && !holder.owner.is_gone(&holder.heartbeat_at, engine::lease_secs());
    if live {
        journal.close().await;
        return Err(Error::Usage(format!(
            "lock '{name}' is held by run {}, which is running now (pid {} on {}); cancel it instead: `runbook cancel {}`",
            holder.run_id, holder.owner.pid, holder.owner.host, holder.run_id
        )));
    }
    journal.release_lock(name, &holder.run_id).await?;
    let who = crate::process::username();
    if holder.status.is_some() {
        journal
            .append_events(&[journal::EventRecord {
                run_id: holder.run_id.clone(),
                ts: journal::now_ts(),
                event: "lock_released".into(),
                step: None,
                data: serde_json::json!({"lock": name, "actor": who, "via": "runbook unlock"}),
            }])
            .await?;
    }
    let status = holder.status.map(|s| s.to_string()).unwrap_or_else(|| "not in the journal".into());
    println!("released lock '{name}' held by run {} ({status})", holder.run_id);
    println!("resuming that run later needs the lock again");
    journal.close().await;
    Ok(exit::OK)
}

/// Used by `plan` and `check`, which never touch a journal.
pub(crate) fn static_reporter() -> Reporter {
    Reporter::new(Format::Text)
}
