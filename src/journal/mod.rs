//! The journal: the only code that writes run state. One interface, one schema, two backends:
//! SQLite (the embedded default, one machine) and PostgreSQL (many runners, schedulers and
//! workers sharing one journal). Both run the same SQL (see `sql.rs`).
//!
//! Every write is a single statement (an upsert or a compare-and-swap update), so a SIGKILL at
//! any instant leaves the journal consistent, and two processes sharing it never interleave
//! half-done changes.
mod postgres;
mod sql;
mod sqlite;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

pub use postgres::PgJournal;
pub use sqlite::SqliteJournal;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open the journal at {location}: {reason}")]
    Open { location: String, reason: String },
    #[error("journal: {0}")]
    Db(#[from] sqlx::Error),
    #[error("journal migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("no run matches '{0}' (see `runbook history`)")]
    NoSuchRun(String),
    #[error("no session matches '{0}' (see `runbook sessions`)")]
    NoSuchSession(String),
    #[error("'{0}' matches several runs: {1}")]
    Ambiguous(String, String),
    #[error("journal row is not valid: {0}")]
    Corrupt(String),
    /// Another process took the run over (its runner looked dead); this one must stop.
    #[error("run {0} was taken over by another process; this runner stops")]
    NotOwner(String),
}

pub type JResult<T> = Result<T, JournalError>;

/// Status of a run as stored. `Interrupted` is also what a `Running` run whose process is gone
/// is reported as (see [`RunRecord::effective_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting in the queue for a worker (`runbook enqueue`, a schedule's fire).
    Queued,
    Running,
    Succeeded,
    Failed,
    RollingBack,
    RolledBack,
    RollbackFailed,
    WaitingApproval,
    Cancelled,
    Interrupted,
    DryRun,
}

impl RunStatus {
    pub const ALL: [RunStatus; 11] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::RollingBack,
        RunStatus::RolledBack,
        RunStatus::RollbackFailed,
        RunStatus::WaitingApproval,
        RunStatus::Cancelled,
        RunStatus::Interrupted,
        RunStatus::DryRun,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::RollingBack => "rolling_back",
            RunStatus::RolledBack => "rolled_back",
            RunStatus::RollbackFailed => "rollback_failed",
            RunStatus::WaitingApproval => "waiting_approval",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
            RunStatus::DryRun => "dry_run",
        }
    }
    pub fn parse(s: &str) -> JResult<RunStatus> {
        RunStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| JournalError::Corrupt(format!("unknown run status '{s}'")))
    }
    /// A process is (or should be) working on the run.
    pub fn is_active(self) -> bool {
        matches!(self, RunStatus::Running | RunStatus::RollingBack)
    }
    /// The run ended for good: it cannot be resumed.
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::RolledBack | RunStatus::Cancelled | RunStatus::DryRun)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Running,
    Retrying,
    Succeeded,
    Failed,
    Skipped,
    Waiting,
    Approved,
    Declined,
    DryRun,
}

impl StepStatus {
    const ALL: [StepStatus; 9] = [
        StepStatus::Running,
        StepStatus::Retrying,
        StepStatus::Succeeded,
        StepStatus::Failed,
        StepStatus::Skipped,
        StepStatus::Waiting,
        StepStatus::Approved,
        StepStatus::Declined,
        StepStatus::DryRun,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Running => "running",
            StepStatus::Retrying => "retrying",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Waiting => "waiting",
            StepStatus::Approved => "approved",
            StepStatus::Declined => "declined",
            StepStatus::DryRun => "dry_run",
        }
    }
    pub fn parse(s: &str) -> JResult<StepStatus> {
        StepStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| JournalError::Corrupt(format!("unknown step status '{s}'")))
    }
    /// Completed: on resume the step is not run again.
    pub fn is_done(self) -> bool {
        matches!(self, StepStatus::Succeeded | StepStatus::Skipped | StepStatus::Approved)
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Step,
    Approval,
}

/// The process that owns a run or a lock.
#[derive(Debug, Clone, Serialize)]
pub struct Owner {
    pub host: String,
    pub pid: i64,
    /// Start time of the process (clock ticks since boot), to tell a reused pid apart.
    pub pid_start: Option<i64>,
}

impl Owner {
    pub fn current() -> Owner {
        Owner {
            host: crate::process::hostname(),
            pid: std::process::id() as i64,
            pid_start: crate::process::start_ticks(std::process::id() as i64),
        }
    }
    /// Whether the holder of a run or lock is gone: on this host only its pid decides (a
    /// stopped or overloaded process with a late heartbeat is alive); on another host, a
    /// heartbeat older than the lease.
    pub fn is_gone(&self, heartbeat_at: &str, lease_secs: i64) -> bool {
        if self.host == crate::process::hostname() {
            return self.is_dead_here();
        }
        chrono::DateTime::parse_from_rfc3339(heartbeat_at)
            .map(|beat| {
                chrono::Utc::now().signed_duration_since(beat).num_milliseconds() > lease_secs.saturating_mul(1000)
            })
            .unwrap_or(true)
    }

    /// Whether the owner is certainly gone: a process on this host that no longer exists.
    pub fn is_dead_here(&self) -> bool {
        self.host == crate::process::hostname() && !crate::process::alive(self.pid, self.pid_start)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: String,
    pub runbook: String,
    pub path: String,
    pub content_hash: String,
    #[serde(skip)]
    pub source: String,
    pub params: serde_json::Value,
    pub user: String,
    #[serde(flatten)]
    pub owner: Owner,
    pub trigger: String,
    pub dry_run: bool,
    pub rollback: String,
    pub lock_name: Option<String>,
    pub status: RunStatus,
    pub error: Option<String>,
    pub created_at: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub heartbeat_at: String,
    pub lease_secs: i64,
    pub cancel_requested: bool,
    /// Runs with the same key run one at a time, in order (a schedule's runs).
    pub queue_key: Option<String>,
    /// A queued run is not started before this time (a schedule's jitter).
    pub not_before: Option<String>,
    /// The params a run was queued with, as the command line gives them (`{"k": "v"}`).
    pub queued_params: Option<serde_json::Value>,
    /// `--max-memory` in bytes, kept for the run's resumes.
    pub max_memory: Option<i64>,
    /// Left for a worker to resume (a gate decided, a resume asked for in the console),
    /// whoever started it.
    pub auto_resume: bool,
    /// Who asked the console to resume it (comma-separated).
    pub resumed_by: Option<String>,
}

impl RunRecord {
    /// The status to report: an active run whose process is gone (dead pid on this host, or a
    /// heartbeat older than its lease) is `interrupted`, and can be resumed.
    pub fn effective_status(&self) -> RunStatus {
        if self.status.is_active() && self.is_orphaned() {
            RunStatus::Interrupted
        } else {
            self.status
        }
    }

    /// Whether the run's process is gone. On this host only the pid decides (a stopped or
    /// overloaded runner with a late heartbeat is still alive); on another host, the heartbeat.
    pub fn is_orphaned(&self) -> bool {
        self.owner.is_gone(&self.heartbeat_at, self.lease_secs)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub name: String,
    pub seq: i64,
    pub kind: StepKind,
    pub status: StepStatus,
    pub attempts: i64,
    /// Attempts made before the current round: a resumed step after a final failure gets a
    /// fresh retry budget, an interrupted one continues its round.
    #[serde(skip)]
    pub budget_base: i64,
    pub line: Option<i64>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub next_attempt_at: Option<String>,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub undo_status: Option<String>,
    pub undo_error: Option<String>,
    pub actor: Option<String>,
}

impl StepRecord {
    pub fn new(name: &str, seq: i64, kind: StepKind, status: StepStatus, line: Option<i64>) -> Self {
        StepRecord {
            name: name.to_string(),
            seq,
            kind,
            status,
            attempts: 0,
            budget_base: 0,
            line,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            next_attempt_at: None,
            result: None,
            error: None,
            undo_status: None,
            undo_error: None,
            actor: None,
        }
    }
}

/// One line of the event stream, already redacted.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub run_id: String,
    pub ts: String,
    pub event: String,
    pub step: Option<String>,
    pub data: serde_json::Value,
}

/// A compare-and-swap takeover of a run by a resuming process.
pub struct Claim<'a> {
    pub id: &'a str,
    pub expected: RunStatus,
    pub previous: &'a Owner,
    pub new_status: RunStatus,
    pub me: &'a Owner,
    pub lease_secs: i64,
    /// A queued run starting: its resolved params, stored with its start time.
    pub params: Option<&'a serde_json::Value>,
    /// The runbook's text and hash when it changed since the run started (`--allow-changed`):
    /// the run continues with it, so later resumes and the REPL compare against it.
    pub source: Option<(&'a str, &'a str)>,
}

/// Who holds a lock, when it is refused.
#[derive(Debug, Clone)]
pub struct LockHolder {
    pub run_id: String,
    /// The holder run's status, when it is in the journal.
    pub status: Option<RunStatus>,
    pub owner: Owner,
    pub heartbeat_at: String,
}

#[derive(Debug)]
pub enum LockOutcome {
    Acquired,
    /// Taken over from a holder that is gone.
    TakenOver(LockHolder),
    Held(LockHolder),
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub runbook: Option<String>,
    pub queue_key: Option<String>,
    /// The stored status (the console's filter; `interrupted` also finds nothing active).
    pub status: Option<RunStatus>,
    /// Who started (or enqueued) the run.
    pub user: Option<String>,
    /// Runs created at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Keyset paging: runs strictly older than this (created_at, id), newest first.
    pub before: Option<(String, String)>,
    pub limit: i64,
}

/// One person's decision at an approval gate, as journaled.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VoteRecord {
    pub run_id: String,
    pub gate: String,
    pub actor: String,
    /// "approve" or "reject".
    pub decision: String,
    /// How it was given: "cli", "repl", "web", "api" or "local" (a console without logins).
    pub via: String,
    pub comment: Option<String>,
    pub at: String,
}

/// One action taken through the console or its API.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub at: String,
    pub actor: String,
    /// "login", "login_failed", "enqueue", "approve", "reject", "cancel", "resume", "unpause" ...
    pub action: String,
    /// The run, runbook or schedule acted on.
    pub target: String,
    pub detail: String,
    /// The client's address (and the way in: session or token).
    pub remote: String,
}

/// What a vote did to its gate.
#[derive(Debug, Clone, PartialEq)]
pub enum VoteOutcome {
    /// The run is not waiting at that gate any more (decided, cancelled or resumed meanwhile).
    Stale,
    /// This person already decided at this gate.
    AlreadyVoted,
    /// Recorded; the gate waits for more approvals.
    Pending { approvals: i64 },
    /// The quorum is met: the gate is approved and the run is left for a worker to resume.
    Approved { approvers: Vec<String> },
    /// A rejection ended the gate: the run is cancelled (or, with rollback = "auto", left for a
    /// worker to roll back).
    Rejected,
}

/// How a gate whose time ran out ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// The gate is declined and the run cancelled (rolled back with rollback = "auto").
    #[default]
    Cancel,
    /// The run fails, resumable: a resume meets the gate again, with a fresh timeout.
    Fail,
}

/// One fire time of a schedule, claimed by exactly one scheduler: the row's key is
/// (schedule, fire_at), whatever the number of schedulers and their clocks.
#[derive(Debug, Clone, Serialize)]
pub struct FireRecord {
    pub schedule: String,
    /// The nominal fire time from the cron expression (RFC 3339 UTC).
    pub fire_at: String,
    pub run_id: Option<String>,
    /// "queued", "skipped_overlap", "paused", "missed".
    pub outcome: String,
    pub fired_by: String,
    pub fired_at: String,
}

/// An incident session of `runbook repl`.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRecord {
    pub id: String,
    pub who: String,
    pub host: String,
    pub pid: i64,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// The run the session was attached to last.
    pub run_id: Option<String>,
    /// How many chunks and commands it evaluated (filled by `sessions`).
    pub events: i64,
}

/// One evaluated chunk or command of a session, already redacted.
#[derive(Debug, Clone, Serialize)]
pub struct SessionEvent {
    pub session_id: String,
    pub seq: i64,
    pub at: String,
    /// "lua" (a chunk) or "command" (`:retry`, `:skip` ...).
    pub kind: String,
    pub input: String,
    pub ok: bool,
    pub duration_ms: i64,
    /// The first lines of what it printed, or its error.
    pub output: String,
    /// The run it acted on, for commands on an attached run.
    pub run_id: Option<String>,
}

/// What the heartbeat learns about its run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Beat {
    pub cancel_requested: bool,
    /// A requested cancel runs the undos of a `rollback = "auto"` runbook (not `--no-rollback`).
    pub cancel_rollback: bool,
    /// False when another process took the run over: the runner must stop at once.
    pub owned: bool,
}

/// The outcome of one item of a step (a host of an ssh fan-out).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ItemRecord {
    pub step: String,
    /// Unique within the step: the fan-out's ordinal in the step and the item ("each#1/web-2").
    pub item: String,
    /// "ok", "failed" or "not_run".
    pub status: String,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub updated_at: String,
}

#[async_trait]
pub trait Journal: Send + Sync {
    /// Where the journal lives, for messages (never with a password).
    fn location(&self) -> String;
    async fn create_run(&self, run: &RunRecord) -> JResult<()>;
    async fn run(&self, id: &str) -> JResult<Option<RunRecord>>;
    /// A run by full id, unique prefix, or `last`.
    async fn find_run(&self, reference: &str) -> JResult<RunRecord>;
    async fn runs(&self, filter: &RunFilter) -> JResult<Vec<RunRecord>>;
    /// Takes over a run for this process, provided it is still in `expected` status and owned by
    /// `previous` (compare-and-swap): two resumes of one run never both proceed.
    async fn claim_run(&self, claim: &Claim<'_>) -> JResult<bool>;
    /// Sets the status of a run this process owns (else [`JournalError::NotOwner`]).
    async fn set_run_status(&self, id: &str, me: &Owner, status: RunStatus, error: Option<&str>) -> JResult<()>;
    /// Finishes a run this process owns: status, error, finished_at.
    async fn finish_run(&self, id: &str, me: &Owner, status: RunStatus, error: Option<&str>) -> JResult<()>;
    /// Closes a run no process is working on (cancel), if it is still in `expected` status and
    /// owned by `previous`.
    async fn close_stopped_run(
        &self,
        id: &str,
        expected: RunStatus,
        previous: &Owner,
        status: RunStatus,
        error: &str,
    ) -> JResult<bool>;
    async fn heartbeat(&self, id: &str, me: &Owner) -> JResult<Beat>;
    /// Asks the live runner of a run to stop; `rollback`: and to run the undos when its runbook
    /// says `rollback = "auto"`.
    async fn request_cancel(&self, id: &str, rollback: bool) -> JResult<()>;
    async fn steps(&self, run_id: &str) -> JResult<Vec<StepRecord>>;
    /// Writes a step of a run this process owns (else [`JournalError::NotOwner`]).
    async fn put_step(&self, run_id: &str, me: &Owner, step: &StepRecord) -> JResult<()>;
    /// The recorded items of a run's step (all of its steps when `step` is None).
    async fn items(&self, run_id: &str, step: Option<&str>) -> JResult<Vec<ItemRecord>>;
    /// Records an item's outcome; only while `me` owns the run.
    async fn put_item(&self, run_id: &str, me: &Owner, item: &ItemRecord) -> JResult<()>;
    /// Leaves a stopped run (failed, or interrupted: its process gone) for a worker to resume,
    /// if it is still in `expected` status and owned by `previous` (compare-and-swap).
    /// Only runs a worker may take (queued or scheduled ones): a person's own `runbook run`
    /// is theirs to resume. `by` is recorded: it may not approve the run's gates.
    async fn request_resume(&self, id: &str, expected: RunStatus, previous: &Owner, by: &str) -> JResult<bool>;
    /// Records a journaled step of a stopped run (failed, or interrupted) as skipped by `actor`,
    /// with the reason (compare-and-swap on the run, which no process may hold): a resume then
    /// passes over it, as after the REPL's `:skip`.
    async fn skip_step(
        &self,
        run_id: &str,
        expected: RunStatus,
        previous: &Owner,
        step: &str,
        actor: &str,
        reason: &str,
    ) -> JResult<bool>;
    /// Records a person's decision at the gate a waiting run stopped at, and decides the gate in
    /// the same transaction: a rejection ends it, `quorum` distinct approvals pass it. The run
    /// row is locked first, so two approvers voting at once both count.
    async fn vote(&self, vote: &VoteRecord, quorum: i64, rollback_auto: bool) -> JResult<VoteOutcome>;
    /// Every decision taken at a run's gates, oldest first.
    async fn votes(&self, run_id: &str) -> JResult<Vec<VoteRecord>>;
    /// Ends a gate whose time ran out (compare-and-swap on the waiting run and gate).
    async fn expire_gate(
        &self,
        run_id: &str,
        gate: &str,
        end: OnTimeout,
        rollback_auto: bool,
        why: &str,
    ) -> JResult<bool>;
    async fn append_events(&self, events: &[EventRecord]) -> JResult<()>;
    async fn events(&self, run_id: &str) -> JResult<Vec<EventRecord>>;
    /// A run's events after the one numbered `after` (0: from the start), with their numbers,
    /// at most `limit`: what a live view tails.
    async fn events_since(&self, run_id: &str, after: i64, limit: i64) -> JResult<Vec<(i64, EventRecord)>>;
    /// The number of a run's newest event (0: none yet).
    async fn last_event_id(&self, run_id: &str) -> JResult<i64>;
    async fn audit(&self, record: &AuditRecord) -> JResult<()>;
    /// The audit log, newest first.
    async fn audit_log(&self, limit: i64) -> JResult<Vec<AuditRecord>>;
    /// Marks an approval link's nonce used; false when it was used before.
    async fn use_link(&self, nonce: &str, by: &str) -> JResult<bool>;
    /// Takes the oldest queued run that may start now (its `not_before` passed, no earlier run
    /// with its queue key still queued or active) for this process, as `running`.
    async fn claim_queued(&self, me: &Owner, lease_secs: i64) -> JResult<Option<RunRecord>>;
    /// Active or interrupted runs started by a schedule or a queue: a worker resumes those
    /// whose process is gone.
    async fn takeover_candidates(&self) -> JResult<Vec<RunRecord>>;
    /// Runs waiting at a gate, oldest first (whose deadlines come first).
    async fn waiting_runs(&self, limit: i64) -> JResult<Vec<RunRecord>>;
    /// Claims a schedule's fire time and queues its run, in one transaction; false when
    /// another scheduler claimed that fire time first.
    async fn fire(&self, fire: &FireRecord, run: Option<&RunRecord>) -> JResult<bool>;
    /// The latest fires of a schedule, newest first.
    async fn fires(&self, schedule: &str, limit: i64) -> JResult<Vec<FireRecord>>;
    /// When a schedule paused by failures was last unpaused.
    async fn unpaused_at(&self, schedule: &str) -> JResult<Option<String>>;
    async fn unpause(&self, schedule: &str, actor: &str) -> JResult<()>;
    async fn acquire_lock(&self, name: &str, run_id: &str, me: &Owner, lease_secs: i64) -> JResult<LockOutcome>;
    /// Records a new REPL session, or updates its end time and attached run.
    async fn put_session(&self, session: &SessionRecord) -> JResult<()>;
    /// Records an event of a session, or replaces it (same session and seq): an event is written
    /// before its chunk runs and completed after.
    async fn session_event(&self, event: &SessionEvent) -> JResult<()>;
    /// Sessions, newest first, with their event counts.
    async fn sessions(&self, limit: i64) -> JResult<Vec<SessionRecord>>;
    /// A session by id, unique prefix, or `last`.
    async fn find_session(&self, reference: &str) -> JResult<SessionRecord>;
    async fn session_events(&self, session_id: &str) -> JResult<Vec<SessionEvent>>;
    async fn release_lock(&self, name: &str, run_id: &str) -> JResult<()>;
    /// Who holds a lock, if anyone.
    async fn lock_holder(&self, name: &str) -> JResult<Option<LockHolder>>;
    /// Re-applies `scrub` to what a run already journaled (its params, error, events), after a
    /// secret became known midway through the run.
    async fn scrub_run(&self, run_id: &str, me: &Owner, scrub: for<'v> fn(&'v mut serde_json::Value)) -> JResult<()>;
    /// Waits for every write to reach the database and closes it.
    async fn close(&self);
}

/// Opens the journal named by `--state` / `RUNBOOK_STATE`, or the default
/// `.runbook/state.db` in the current directory.
pub async fn open(state: Option<&str>) -> JResult<Arc<dyn Journal>> {
    match state {
        None => Ok(Arc::new(SqliteJournal::open(Path::new(".runbook/state.db"), true).await?)),
        Some(url) if url.starts_with("sqlite://") => {
            let path = url.trim_start_matches("sqlite://");
            Ok(Arc::new(SqliteJournal::open(Path::new(path), false).await?))
        }
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Arc::new(PgJournal::open(url).await?))
        }
        Some(url) if url.contains("://") => Err(JournalError::Open {
            location: url.split("://").next().unwrap_or("").to_string() + "://…",
            reason: "unknown journal scheme; use a file path, sqlite://PATH or postgres://…".into(),
        }),
        Some(path) => Ok(Arc::new(SqliteJournal::open(Path::new(path), false).await?)),
    }
}

/// A journal private to one run of `runbook test` (see `SqliteJournal::scratch`).
pub async fn open_scratch(path: &Path) -> JResult<Arc<dyn Journal>> {
    Ok(Arc::new(SqliteJournal::scratch(path).await?))
}

/// Current time as the journal writes it: RFC 3339, UTC, milliseconds.
pub fn now_ts() -> String {
    crate::clock::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
