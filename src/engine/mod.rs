//! The engine: runs and steps. It knows the journal (to record) and the Lua layer (to evaluate),
//! never a database driver or a remote session.
//!
//! A run evaluates the runbook from the top. `step(name, fn)` consults the journal: a step that
//! completed earlier in this run returns its recorded result without running; any other step
//! runs, with its retries, timeout and undo, and its outcome is recorded before the next line of
//! the runbook executes. Code outside steps runs again on every resume.
mod declare;
mod params;
mod step;
pub mod watchdog;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use mlua::{Function, HookTriggers, Lua, LuaSerdeExt, Value, VmState};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::error::{exit, Error};
use crate::journal::{Journal, Owner, RunRecord, RunStatus, StepRecord};
use crate::lua::errors::{self, Location};
use crate::output::Reporter;

pub use declare::{new_run_id, Declaration};
pub use params::{ParamSpec, ParamType};
pub use step::{disable_prompts, PlanEntry, GATE_PREFIX};

/// What the engine does with the runbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Run for real (a new run, or a resumed one).
    Run,
    /// Evaluate step bodies, but every primitive that changes the world only says what it
    /// would do.
    DryRun,
    /// List the steps without running any of them or any primitive.
    Plan,
    /// Syntax and declaration checks.
    Check,
    /// The REPL's `:load` and `:attach`: top-level code runs for real (connections, helper
    /// functions), `runbook{}` creates no run, and every step is captured instead of run; a step
    /// the attached run completed returns its recorded result.
    Load,
}

impl Mode {
    /// Modes in which no primitive acts at all.
    pub fn is_static(self) -> bool {
        matches!(self, Mode::Plan | Mode::Check)
    }
}

/// Everything the command line asks of one evaluation.
pub struct Invocation {
    pub path: PathBuf,
    pub mode: Mode,
    pub params: Vec<(String, String)>,
    pub params_file: Option<PathBuf>,
    /// Values typed into the REPL (`:param NAME`), taken as a params file gives them: a secret
    /// never passes through a command line.
    pub supplied: toml::Table,
    pub yes: bool,
    pub trigger: String,
    pub max_memory: Option<usize>,
    /// How long to wait for the runbook's lock when another run holds it (none: exit 4 at once).
    pub lock_wait: Option<std::time::Duration>,
    /// The run being resumed, with its steps.
    pub resume: Option<(RunRecord, Vec<StepRecord>)>,
    /// `resume` is a queued run this process just claimed: it starts from its first step with
    /// the params it was queued with.
    pub queued: bool,
    /// The runbook's text, when it comes from the journal (a queued or taken-over run runs the
    /// text it was queued with) rather than from `path`.
    pub source: Option<String>,
    /// A signal lets the running step finish and stops the run before the next one (a second
    /// signal stops it at once): the scheduler's and worker's graceful shutdown.
    pub drain: bool,
    /// Roll the resumed run back now (`runbook rollback`, `runbook cancel` of a stopped
    /// `rollback = "auto"` run), for this reason.
    pub rollback: Option<String>,
    /// `runbook test`: the test's fakes, installed over the primitives.
    pub fakes: Option<crate::testing::Fakes>,
    /// `runbook test`'s crash proof: the run is owned by a process that looks dead once it
    /// stops, so that the resume takes it over as it would after a real crash.
    pub owner: Option<Owner>,
}

impl Invocation {
    /// An evaluation of `path` with nothing else asked.
    pub fn new(path: PathBuf, mode: Mode) -> Invocation {
        Invocation {
            path,
            mode,
            params: Vec::new(),
            params_file: None,
            supplied: toml::Table::new(),
            yes: false,
            trigger: "cli".into(),
            max_memory: None,
            lock_wait: None,
            resume: None,
            queued: false,
            source: None,
            drain: false,
            rollback: None,
            fakes: None,
            owner: None,
        }
    }
}

static DRAINING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process is shutting down gracefully: no new step starts.
pub fn draining() -> bool {
    DRAINING.load(std::sync::atomic::Ordering::SeqCst)
}

pub fn start_draining() {
    DRAINING.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Why a run stops other than by finishing: raised as a Lua error and also kept in the context,
/// so a runbook that catches it with `pcall` still stops at its next step.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Halt {
    #[error("invalid parameters")]
    Params(Vec<String>),
    /// The runbook is wrong (a bad declaration, a duplicate step name, bad options).
    #[error("{0}")]
    Declaration(String),
    #[error("{message}")]
    StepFailed { step: String, message: String },
    #[error("waiting for approval: {0}")]
    WaitingApproval(String),
    #[error("{0}")]
    Cancelled(String),
    #[error("lock '{name}' is held by run {run_id} ({status}, pid {pid} on {host})")]
    LockHeld { name: String, run_id: String, status: String, host: String, pid: i64 },
    #[error("journal: {0}")]
    Journal(String),
    /// Resuming a rollback: the completed steps are replayed up to here, then the undos run.
    #[error("rollback")]
    RollbackNow,
    /// Loading an attached run reached its first step not done: evaluation stops there.
    #[error("loaded up to step '{0}', the first step the run has not completed")]
    Loaded(String),
}

impl Halt {
    /// Halts that a `pcall` in the runbook must not be able to swallow.
    fn is_hard(&self) -> bool {
        !matches!(self, Halt::StepFailed { .. })
    }
}

impl From<crate::journal::JournalError> for Halt {
    fn from(e: crate::journal::JournalError) -> Self {
        Halt::Journal(e.to_string())
    }
}

/// Why the run is being stopped from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Signal(&'static str),
    CancelRequested,
    /// Another process took the run over: this runner must stop without writing.
    Lost,
}

impl StopReason {
    pub fn describe(&self) -> String {
        match self {
            StopReason::Signal(s) => format!("interrupted by {s}"),
            StopReason::CancelRequested => "cancelled by `runbook cancel`".into(),
            StopReason::Lost => "taken over by another process".into(),
        }
    }
}

/// A step definition that `Mode::Load` captured instead of running.
#[derive(Clone)]
pub struct Captured {
    pub name: String,
    pub func: Function,
    pub description: Option<String>,
    pub line: u32,
    pub timeout: Option<std::time::Duration>,
    pub has_undo: bool,
}

/// One undo to run on rollback.
pub(crate) struct UndoEntry {
    step: String,
    func: Function,
    result: serde_json::Value,
}

#[derive(Default)]
pub(crate) struct Counts {
    ok: usize,
    failed: usize,
    skipped: usize,
    recorded: usize,
}

#[derive(Default)]
pub(crate) struct State {
    decl: Option<Declaration>,
    run_id: Option<String>,
    seen: HashMap<String, Location>,
    seq: i64,
    current_step: Option<String>,
    /// Where the running step (or its `when`) was called, for errors raised inside it that Lua
    /// cannot locate.
    current_loc: Option<Location>,
    undo: Vec<UndoEntry>,
    halt: Option<Halt>,
    plan: Vec<PlanEntry>,
    gates: HashMap<String, usize>,
    counts: Counts,
    /// Steps of this run as the journal knows them, updated as they change.
    records: HashMap<String, StepRecord>,
    rollback_resume: bool,
    /// While resuming a rollback: completed steps whose undo is not registered yet.
    replay_pending: std::collections::HashSet<String>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    /// The lock taken, and the run id it was taken for.
    lock: Option<(String, String)>,
    run_started: Option<Instant>,
    /// The redactor's generation when this run's journal rows were last known clean.
    scrubbed_at: u64,
    /// The attempt number of the running step (all attempts of the run so far, this one
    /// included), for the work label.
    pub(crate) attempt: i64,
    /// The running step attempt (or undo) follows an earlier one of the same run that may have
    /// left work running on a server: a resumed run, a retry, the REPL's `:retry`.
    pub(crate) rerun: bool,
    /// Fan-outs (ssh.each/rolling) made so far by the running step attempt: their ordinal keys
    /// the items they journal, the same on every attempt and replay.
    pub(crate) fanouts: u32,
    /// Steps captured in `Mode::Load`.
    captured: Vec<Captured>,
}

/// The engine's state for one evaluation, reachable from every Lua callback.
pub struct Ctx {
    pub mode: Mode,
    /// The runbook path as given: chunk name and the FILE in `FILE:LINE` messages.
    pub file: String,
    pub abs_path: PathBuf,
    pub source: String,
    pub hash: String,
    pub journal: Option<Arc<dyn Journal>>,
    pub out: Reporter,
    pub inv_params: Vec<(String, String)>,
    pub params_file: Option<PathBuf>,
    /// See [`Invocation::supplied`].
    pub supplied: toml::Table,
    /// `runbook test`: the environment params' `env` read (the test's `fakes.env`), instead
    /// of the process's.
    pub test_env: Option<std::collections::BTreeMap<String, String>>,
    pub yes: bool,
    pub trigger: String,
    pub resume: Option<RunRecord>,
    /// `resume` is a freshly claimed queued run.
    pub queued: bool,
    pub drain: bool,
    /// Why this evaluation rolls the run back on demand (`Invocation::rollback`).
    pub rollback_reason: Option<String>,
    /// The memory limit of the Lua VM, which also bounds the output a command may hold.
    pub max_memory: Option<usize>,
    pub lock_wait: Option<std::time::Duration>,
    pub me: Owner,
    pub(crate) st: RefCell<State>,
    stop_tx: watch::Sender<Option<StopReason>>,
    /// Deadline of the running step, checked by an instruction hook so that a step stuck in
    /// a pure Lua loop still times out.
    deadline: Rc<Cell<Option<Instant>>>,
    /// A `runbook cancel` the runner acted on (rolling back): the heartbeat stops reporting it.
    cancel_ack: Arc<std::sync::atomic::AtomicBool>,
    /// False when the cancel asked for no rollback (`runbook cancel --no-rollback`).
    cancel_rollback: Arc<std::sync::atomic::AtomicBool>,
    /// What the watchdog thread watches (see `watchdog`).
    pub(crate) watch: watchdog::Shared,
}

impl Ctx {
    /// A context outside any run, for the REPL: `Mode::Run` for its live primitives, or
    /// `Mode::Load` to capture a runbook's steps (with the run being attached, if any). `file`
    /// names chunks in messages; relative paths resolve from `abs_path`'s folder. Params come
    /// as `key=value` pairs and as values typed into the REPL ([`Invocation::supplied`]).
    pub fn standalone(
        mode: Mode,
        file: String,
        abs_path: PathBuf,
        journal: Option<Arc<dyn Journal>>,
        out: Reporter,
        (params, supplied): (Vec<(String, String)>, toml::Table),
        attached: Option<(RunRecord, Vec<StepRecord>)>,
    ) -> Rc<Ctx> {
        let (resume, records) = match attached {
            Some((run, steps)) => (Some(run), steps.into_iter().map(|s| (s.name.clone(), s)).collect()),
            None => (None, HashMap::new()),
        };
        let (stop_tx, _) = watch::channel(None);
        Rc::new(Ctx {
            mode,
            file,
            abs_path,
            source: String::new(),
            hash: String::new(),
            journal,
            out,
            inv_params: params,
            params_file: None,
            supplied,
            test_env: None,
            yes: false,
            trigger: "repl".into(),
            resume,
            queued: false,
            drain: false,
            rollback_reason: None,
            max_memory: None,
            lock_wait: None,
            me: Owner::current(),
            st: RefCell::new(State { records, ..State::default() }),
            stop_tx,
            deadline: Rc::new(Cell::new(None)),
            cancel_ack: Default::default(),
            cancel_rollback: Arc::new(true.into()),
            watch: Default::default(),
        })
    }

    /// In the REPL's own (live) context, `runbook{}`, `step` and `approve` have no run to belong
    /// to: they say what to do instead.
    pub(crate) fn refuse_in_repl(&self, what: &str) -> mlua::Result<()> {
        if self.mode == Mode::Run && self.trigger == "repl" {
            return Err(mlua::Error::runtime(format!(
                "{what} belongs in a runbook; in the REPL, call the code directly, or `:load FILE` to get a runbook's steps as `steps[NAME]` (`:attach RUN` to work on a run)"
            )));
        }
        Ok(())
    }

    /// Makes this context that of a step of a run (the REPL retrying it): events and fan-out
    /// items are attributed to the step, and, with `attach`, events go to the run's journal.
    pub fn enter_step(&self, run_id: &str, step: &str, attempt: i64) {
        let mut st = self.st.borrow_mut();
        st.run_id = Some(run_id.to_string());
        st.current_step = Some(step.to_string());
        st.fanouts = 0;
        st.attempt = attempt;
        st.rerun = true;
    }

    /// Whom server-side work belongs to (a database session's `application_name`, a remote
    /// command's marker): the run, the step and its attempt.
    pub fn work_label(&self) -> WorkLabel {
        let st = self.st.borrow();
        WorkLabel::new(st.run_id.as_deref(), st.current_step.as_deref(), st.attempt, st.rerun)
    }

    /// The steps `Mode::Load` captured, in the order met.
    pub fn captured(&self) -> Vec<Captured> {
        self.st.borrow().captured.clone()
    }

    /// Where a `Mode::Load` of an attached run stopped: its first step not done.
    pub fn load_stopped_at(&self) -> Option<String> {
        match &self.st.borrow().halt {
            Some(Halt::Loaded(step)) => Some(step.clone()),
            _ => None,
        }
    }

    /// The declaration, once `runbook{}` ran.
    pub fn declaration(&self) -> Option<Declaration> {
        self.st.borrow().decl.clone()
    }

    pub fn from_lua(lua: &Lua) -> mlua::Result<Rc<Ctx>> {
        lua.app_data_ref::<Rc<Ctx>>()
            .map(|c| Rc::clone(&c))
            .ok_or_else(|| mlua::Error::runtime("this function is only available inside a runbook"))
    }

    /// A path as a runbook wrote it: relative ones are from the runbook's folder.
    pub fn resolve_path(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        match self.abs_path.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// The ordinal (1, 2, ...) of a new fan-out within the running step attempt.
    pub fn next_fanout(&self) -> u32 {
        let mut st = self.st.borrow_mut();
        st.fanouts += 1;
        st.fanouts
    }

    /// The declared runbook name, once `runbook{}` ran.
    pub fn runbook_name(&self) -> Option<String> {
        self.st.borrow().decl.as_ref().map(|d| d.name.clone())
    }

    pub fn run_id(&self) -> Option<String> {
        self.st.borrow().run_id.clone()
    }

    pub fn current_step(&self) -> Option<String> {
        self.st.borrow().current_step.clone()
    }

    /// Emits an event attributed to the running step.
    pub fn emit(&self, event: &str, fields: serde_json::Value) {
        let step = self.current_step();
        self.out.emit(event, step.as_deref(), fields);
    }

    /// Raises `halt` as a Lua error, remembering it if it must not be swallowed.
    pub(crate) fn raise(&self, halt: Halt) -> mlua::Error {
        if halt.is_hard() {
            self.st.borrow_mut().halt = Some(halt.clone());
        }
        mlua::Error::external(halt)
    }

    /// Re-raises a hard halt that the runbook caught with pcall.
    pub(crate) fn check_halt(&self) -> mlua::Result<()> {
        let halt = self.st.borrow().halt.clone();
        match halt {
            Some(h) => Err(mlua::Error::external(h)),
            None => Ok(()),
        }
    }

    /// In plan/check mode every primitive returns a placeholder; in a dry run, so does every
    /// primitive call that would change the world. Returns the placeholder to hand back, or
    /// `None` when the call should act.
    pub fn guard(
        &self,
        lua: &Lua,
        primitive: &str,
        mutating: bool,
        action: impl FnOnce() -> String,
    ) -> mlua::Result<Option<Value>> {
        // Nothing acts once the run was stopped (a gate, a cancel), even if the runbook caught it.
        if !self.mode.is_static() {
            self.check_halt()?;
        }
        match self.mode {
            Mode::Plan | Mode::Check => Ok(Some(crate::lua::placeholder(lua, primitive)?)),
            Mode::DryRun if mutating => {
                self.emit("dry_run", json!({ "primitive": primitive, "action": action() }));
                Ok(Some(crate::lua::placeholder(lua, primitive)?))
            }
            _ => Ok(None),
        }
    }

    /// Steps, gates and primitives that wait (async) cannot run inside a coroutine the runbook
    /// made itself: the engine could not resume it. Refused with a clear error.
    pub fn refuse_in_coroutine(&self, lua: &Lua, what: &str) -> mlua::Result<()> {
        let internal: mlua::Table = lua.named_registry_value("runbook.internal")?;
        if internal.get::<i64>("coroutine_depth").unwrap_or(0) > 0 {
            return Err(mlua::Error::runtime(format!(
                "{what} cannot be called inside a coroutine; call it from the runbook's top level or a step"
            )));
        }
        Ok(())
    }

    /// When a secret became known after the run started, scrubs what the run journaled so far.
    pub(crate) async fn scrub_if_needed(&self) -> Result<(), crate::journal::JournalError> {
        let generation = crate::secret::generation();
        let (Some(run_id), Some(journal)) = (self.run_id(), self.journal.clone()) else { return Ok(()) };
        if self.st.borrow().scrubbed_at == generation {
            return Ok(());
        }
        journal.scrub_run(&run_id, &self.me, crate::secret::redact_json).await?;
        for rec in self.st.borrow_mut().records.values_mut() {
            for text in [&mut rec.error, &mut rec.undo_error].into_iter().flatten() {
                *text = crate::secret::redact(text).into_owned();
            }
            if let Some(result) = &mut rec.result {
                crate::secret::redact_json(result);
            }
        }
        self.st.borrow_mut().scrubbed_at = generation;
        Ok(())
    }

    pub fn stop_requested(&self) -> Option<StopReason> {
        self.stop_tx.borrow().clone()
    }

    /// Tells the watchdog whether the engine runs the runbook's code now (false) or has its hands
    /// back (true: a stop request is being handled).
    pub(crate) fn set_reacted(&self, reacted: bool) {
        self.watch.lock().unwrap_or_else(|p| p.into_inner()).reacted = reacted;
    }
}

/// Whom server-side work belongs to: `runbook/<run id>/<step>#<attempt>`, at most 63 bytes of
/// printable ASCII (PostgreSQL's limit for `application_name`); the step part is shortened when
/// needed. Outside a run: `runbook/repl`. Never a secret: step names cannot hold one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkLabel {
    /// The whole label.
    pub text: String,
    /// What every label of the run starts with (`runbook/<run id>/`), when in a run.
    pub run_prefix: Option<String>,
    /// Work of earlier attempts of this run may still be running: look for it and stop it.
    pub rerun: bool,
    pub attempt: i64,
}

impl WorkLabel {
    pub const MAX: usize = 63;

    pub fn new(run_id: Option<&str>, step: Option<&str>, attempt: i64, rerun: bool) -> WorkLabel {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
                .collect::<String>()
                .replace("*/", "*?")
        };
        let Some(run) = run_id else {
            let text = REPL_LABEL.get().cloned().unwrap_or_else(|| "runbook/repl".into());
            return WorkLabel { text, run_prefix: None, rerun: false, attempt };
        };
        let prefix = format!("runbook/{}/", clean(run));
        let suffix = if step.is_some() { format!("#{attempt}") } else { String::new() };
        let room = Self::MAX.saturating_sub(prefix.len() + suffix.len());
        let step: String = clean(step.unwrap_or("-")).chars().take(room).collect();
        WorkLabel { text: format!("{prefix}{step}{suffix}"), run_prefix: Some(prefix), rerun, attempt }
    }
}

/// The label of this process's REPL session (`runbook/repl/<session>`), for its database
/// sessions outside any run: Ctrl-C cancels exactly those on the server.
pub static REPL_LABEL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// How an evaluation ended.
#[derive(Debug)]
pub struct Outcome {
    pub run_id: Option<String>,
    pub status: RunStatus,
    pub plan: Vec<PlanEntry>,
    pub decl: Option<Declaration>,
    /// Problems found while evaluating in plan/check mode that do not make the runbook wrong.
    pub notes: Vec<String>,
    /// An exit code other than the status's own (a lock refused inside a run, a rollback
    /// interrupted by a signal).
    pub exit: Option<u8>,
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        if let Some(code) = self.exit {
            return code;
        }
        match self.status {
            RunStatus::Succeeded | RunStatus::DryRun => exit::OK,
            RunStatus::WaitingApproval => exit::WAITING_APPROVAL,
            RunStatus::Interrupted => exit::INTERRUPTED,
            _ => exit::FAILED,
        }
    }
}

pub fn content_hash(source: &str) -> String {
    let digest = Sha256::digest(source.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Lua memory limit of unattended runs when none is given: 1 GiB.
pub const DEFAULT_UNATTENDED_MEMORY: usize = 1 << 30;

/// Started by cron (`--cron`, RUNBOOK_NONINTERACTIVE), a worker or a schedule: nobody watches.
fn unattended(trigger: &str) -> bool {
    std::env::var_os("RUNBOOK_NONINTERACTIVE").is_some() || trigger == "enqueue" || trigger.starts_with("schedule:")
}

/// Reads, evaluates and journals one runbook.
pub async fn execute(inv: Invocation, journal: Option<Arc<dyn Journal>>, out: Reporter) -> Result<Outcome, Error> {
    let file = inv.path.display().to_string();
    let fakes = inv.fakes.clone();
    let owner = inv.owner.clone().unwrap_or_else(Owner::current);
    let source = match inv.source {
        Some(s) => s,
        None => {
            std::fs::read_to_string(&inv.path).map_err(|e| Error::Usage(format!("cannot read runbook {file}: {e}")))?
        }
    };
    // A file saved with a UTF-8 byte order mark (some Windows editors) is still Lua.
    let source = match source.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => source,
    };
    let abs_path = std::fs::canonicalize(&inv.path).unwrap_or_else(|_| inv.path.clone());
    let dir = abs_path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let (stop_tx, _) = watch::channel(None);
    // Not in a worker or scheduler (`drain`): their runs share one thread, and one run's busy
    // Lua would look like another's stuck one; ending the process would end them all.
    let watched = if inv.mode.is_static() || inv.drain {
        watchdog::Shared::default()
    } else {
        watchdog::spawn(stop_tx.subscribe())
    };
    let (resume, records) = match inv.resume {
        Some((run, steps)) => {
            let records = steps.into_iter().map(|s| (s.name.clone(), s)).collect();
            (Some(run), records)
        }
        None => (None, HashMap::new()),
    };
    // `--max-memory` as given, else as the run was started with (a resume keeps it), else, for
    // unattended runs (cron, workers, schedules), a default that keeps a runaway runbook from
    // taking the host's memory.
    let max_memory = inv
        .max_memory
        .or_else(|| resume.as_ref().and_then(|r| r.max_memory).and_then(|m| usize::try_from(m).ok()))
        .or_else(|| unattended(&inv.trigger).then_some(DEFAULT_UNATTENDED_MEMORY));
    let rollback_resume = resume.as_ref().is_some_and(|r| {
        inv.rollback.is_some() || matches!(r.status, RunStatus::RollingBack | RunStatus::RollbackFailed)
    });
    let replay_pending = if rollback_resume {
        records
            .values()
            .filter(|r: &&StepRecord| {
                r.kind == crate::journal::StepKind::Step
                    && r.status == crate::journal::StepStatus::Succeeded
                    && matches!(r.undo_status.as_deref(), Some("pending" | "running" | "failed"))
            })
            .map(|r| r.name.clone())
            .collect()
    } else {
        Default::default()
    };
    let ctx = Rc::new(Ctx {
        mode: inv.mode,
        file: file.clone(),
        abs_path,
        hash: content_hash(&source),
        source,
        journal,
        out,
        inv_params: inv.params,
        params_file: inv.params_file,
        supplied: inv.supplied,
        test_env: fakes.as_ref().map(|f| {
            f.spec["env"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                        .collect()
                })
                .unwrap_or_default()
        }),
        yes: inv.yes,
        lock_wait: inv.lock_wait,
        trigger: inv.trigger,
        resume,
        queued: inv.queued,
        drain: inv.drain,
        rollback_reason: inv.rollback,
        max_memory,
        me: owner,
        st: RefCell::new(State { records, rollback_resume, replay_pending, ..State::default() }),
        stop_tx,
        deadline: Rc::new(Cell::new(None)),
        cancel_ack: Default::default(),
        cancel_rollback: Arc::new(true.into()),
        watch: watched,
    });

    let lua = crate::lua::new_sandbox(&dir, max_memory)
        .map_err(|e| Error::Io(format!("cannot start the Lua runtime: {e}")))?;
    lua.set_app_data(Rc::clone(&ctx));
    register(&lua, &ctx).map_err(|e| Error::Io(format!("cannot set up the runbook environment: {e}")))?;
    if let Some(f) = &fakes {
        crate::testing::install(&lua, f).map_err(|e| Error::Io(format!("cannot install the test's fakes: {e}")))?;
    }

    let func = crate::lua::compile(&lua, &ctx.source, &file).map_err(|(msg, loc)| {
        Error::Runbook(match loc {
            Some(l) => format!("{l}: syntax error: {msg}"),
            None => format!("{file}: syntax error: {msg}"),
        })
    })?;

    let signals = spawn_signal_watch(&ctx, inv.drain);
    let mut stop_rx = ctx.stop_tx.subscribe();
    let result = tokio::select! {
        r = func.call_async::<()>(()) => Some(r),
        _ = stop_rx.wait_for(|r| r.is_some()) => None,
    };
    ctx.set_reacted(true);
    let outcome = finish(&lua, &ctx, result).await;
    // Also when `finish` stopped early on a journal error: the heartbeat must not keep a run
    // alive in a long-lived worker. A lock taken for a run that was never recorded is released;
    // a recorded run keeps its lock until it ends (see `finish`).
    if let Some(h) = ctx.st.borrow_mut().heartbeat.take() {
        h.abort();
    }
    // (A resumed run's lock stays the run's, even when this process could not take it over.)
    if ctx.run_id().is_none() && ctx.resume.is_none() {
        release_lock(&ctx).await;
    }
    signals.abort();
    let _ = ctx.out.flush().await;
    // The run is recorded. Closing the VM runs the runbook's finalizers: one that loops is cut
    // short by the hook (its error becomes a warning), one stuck in C by the watchdog.
    let code = match &outcome {
        Ok(o) => o.exit_code(),
        Err(e) => e.exit_code(),
    };
    ctx.watch.lock().unwrap_or_else(|p| p.into_inner()).closing = Some((Instant::now(), code));
    let _ = lua.set_hook(HookTriggers::new().every_nth_instruction(1_000), |_, _| {
        Err(mlua::Error::runtime("the run is over: a finalizer of the runbook was stopped"))
    });
    lua.remove_app_data::<Rc<Ctx>>();
    drop(lua);
    outcome
}

/// Installs the engine's globals (`runbook`, `step`, `approve`, `null`) and every primitive.
pub fn register_globals(lua: &Lua) -> mlua::Result<()> {
    let g = lua.globals();
    g.set("null", lua.null())?;
    g.set("runbook", lua.create_async_function(declare::runbook)?)?;
    g.set("step", lua.create_async_function(step::step)?)?;
    g.set("approve", lua.create_async_function(step::approve)?)?;
    crate::primitives::register_all(lua)
}

fn register(lua: &Lua, ctx: &Rc<Ctx>) -> mlua::Result<()> {
    register_globals(lua)?;
    // Checked every 20,000 instructions: a step's deadline, and a stop (signal, cancel), so that
    // a runbook spinning in pure Lua still times out and still stops.
    let deadline = Rc::clone(&ctx.deadline);
    let stop = ctx.stop_tx.subscribe();
    lua.set_global_hook(HookTriggers::new().every_nth_instruction(20_000), move |_lua, _debug| {
        pending_stop(&stop, &deadline, None)?;
        Ok(VmState::Continue)
    })?;
    // ... and `pcall` cannot swallow them (nor a gate that stopped the run): see stoppable.lua.
    let (deadline, stop, weak) = (Rc::clone(&ctx.deadline), ctx.stop_tx.subscribe(), Rc::downgrade(ctx));
    let must_stop = lua.create_function(move |_, ()| {
        let halt = weak.upgrade().and_then(|c| c.st.borrow().halt.clone());
        pending_stop(&stop, &deadline, halt)
    })?;
    let install: Function = lua.unpack(crate::lua::run_internal(lua, "internal.stoppable")?)?;
    install.call::<()>(must_stop)
}

/// The error a pending stop raises: a stop request (signal, cancel), a hard halt kept in the
/// context (a gate that stopped the run), or the running step's deadline.
fn pending_stop(
    stop: &watch::Receiver<Option<StopReason>>,
    deadline: &Cell<Option<Instant>>,
    halt: Option<Halt>,
) -> mlua::Result<()> {
    if let Some(reason) = stop.borrow().clone() {
        return Err(mlua::Error::external(Halt::Cancelled(reason.describe())));
    }
    if let Some(h) = halt {
        return Err(mlua::Error::external(h));
    }
    match deadline.get() {
        Some(d) if Instant::now() >= d => Err(mlua::Error::runtime("step timed out")),
        _ => Ok(()),
    }
}

/// SIGINT and SIGTERM stop the run gracefully: the running step (or undo) is abandoned, its
/// child processes killed, its record left as interrupted, and the run can be resumed.
///
/// With `drain`, the first signal only stops the run before its next step (see [`draining`]);
/// a second one stops it at once.
fn spawn_signal_watch(ctx: &Rc<Ctx>, drain: bool) -> tokio::task::JoinHandle<()> {
    let tx = ctx.stop_tx.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        let mut name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        if drain {
            start_draining();
            name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
        }
        tx.send_replace(Some(StopReason::Signal(name)));
        // One more ends the process at once, whatever the runbook is doing; the run stays
        // resumable (its process is gone: `interrupted`).
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        if SECOND_SIGNAL_EXITS.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!("runbook: second signal: stopping at once; resume the run with `runbook resume`");
            std::process::exit(i32::from(crate::error::exit::INTERRUPTED));
        }
    })
}

static SECOND_SIGNAL_EXITS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// The REPL keeps its process on a second Ctrl-C during `:resume` (it handles Ctrl-C itself).
pub fn keep_process_on_second_signal() {
    SECOND_SIGNAL_EXITS.store(false, std::sync::atomic::Ordering::SeqCst);
}

impl Ctx {
    /// Under a graceful shutdown, stops the run before a new step starts.
    pub(crate) fn stop_if_draining(&self) {
        if self.drain && draining() && self.stop_requested().is_none() {
            self.stop_tx.send_replace(Some(StopReason::Signal("SIGTERM (graceful shutdown)")));
        }
    }
}

/// Keeps the run's heartbeat (and its lock's) fresh, notices `runbook cancel`, and stops the
/// runner at once if another process took the run over.
pub(crate) fn spawn_heartbeat(ctx: &Ctx, run_id: String, journal: Arc<dyn Journal>) -> tokio::task::JoinHandle<()> {
    let tx = ctx.stop_tx.clone();
    let me = ctx.me.clone();
    let (ack, rollback) = (Arc::clone(&ctx.cancel_ack), Arc::clone(&ctx.cancel_rollback));
    let every = std::time::Duration::from_millis((lease_secs() as u64 * 1000 / 3).max(200));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            match journal.heartbeat(&run_id, &me).await {
                Ok(beat) if !beat.owned => {
                    tx.send_replace(Some(StopReason::Lost));
                    return;
                }
                Ok(beat) if beat.cancel_requested && !ack.load(std::sync::atomic::Ordering::SeqCst) => {
                    rollback.store(beat.cancel_rollback, std::sync::atomic::Ordering::SeqCst);
                    // Checked again under the channel's lock: a cancel the engine acknowledged
                    // meanwhile (it is rolling back) is not requested again.
                    tx.send_if_modified(|v| {
                        if ack.load(std::sync::atomic::Ordering::SeqCst) {
                            return false;
                        }
                        *v = Some(StopReason::CancelRequested);
                        true
                    });
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("heartbeat of run {run_id} failed: {e}"),
            }
        }
    })
}

/// Seconds after its last heartbeat that a run (or lock) on another host counts as abandoned.
pub fn lease_secs() -> i64 {
    std::env::var("RUNBOOK_LEASE_SECS")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
        .map(|v| v.clamp(1, 86_400))
        .unwrap_or(30)
}

/// Releases the lock this evaluation took, if any (also when no run was recorded).
async fn release_lock(ctx: &Ctx) {
    let lock = ctx.st.borrow_mut().lock.take();
    if let (Some((name, run_id)), Some(journal)) = (lock, &ctx.journal) {
        if let Err(e) = journal.release_lock(&name, &run_id).await {
            tracing::warn!("could not release lock '{name}': {e}");
        }
    }
}

/// Records how the evaluation ended, runs the rollback when due, and releases the lock.
async fn finish(lua: &Lua, ctx: &Rc<Ctx>, result: Option<mlua::Result<()>>) -> Result<Outcome, Error> {
    let stopped_by = ctx.stop_requested();
    let halt_kept = ctx.st.borrow_mut().halt.take();
    let (halt, failure): (Option<Halt>, Option<String>) = match result {
        None => (Some(Halt::Cancelled(stopped_by.clone().unwrap_or(StopReason::Signal("signal")).describe())), None),
        Some(Ok(())) => (halt_kept, None),
        Some(Err(e)) => match halt_kept.or_else(|| e.chain().find_map(|c| c.downcast_ref::<Halt>().cloned())) {
            Some(h) => (Some(h), None),
            None => {
                let (msg, loc) = errors::describe(&e);
                let loc = loc.or_else(|| errors::caller(lua));
                (
                    None,
                    Some(match loc {
                        Some(l) => format!("{l}: {msg}"),
                        None => format!("{}: {msg}", ctx.file),
                    }),
                )
            }
        },
    };
    // Redacted before anything is written or printed.
    let failure = match &halt {
        Some(Halt::StepFailed { message, .. }) => Some(message.clone()),
        _ => failure,
    }
    .map(|m| crate::secret::redact(&m).into_owned());
    let interrupted = matches!(stopped_by, Some(StopReason::Signal(_)));

    if matches!(stopped_by, Some(StopReason::Lost)) {
        ctx.out.discard();
        let id = ctx.run_id().unwrap_or_default();
        return Err(Error::Io(format!("run {id} was taken over by another process (this runner looked dead); this runner stopped without recording more")));
    }
    if ctx.mode.is_static() {
        let st = ctx.st.borrow();
        let mut notes = Vec::new();
        match &halt {
            Some(Halt::Declaration(msg)) => return Err(Error::Runbook(msg.clone())),
            Some(Halt::Params(problems)) => return Err(Error::Params(problems.clone())),
            _ => {}
        }
        if let Some(f) = failure {
            notes.push(format!(
                "evaluation stopped at {f}; steps after it are not listed (expected when code depends on step results)"
            ));
        }
        if st.decl.is_none() {
            return Err(Error::Runbook(format!(
                "{}: no runbook{{...}} declaration: a runbook starts with runbook {{ name = \"...\" }}",
                ctx.file
            )));
        }
        return Ok(Outcome {
            run_id: None,
            status: RunStatus::Succeeded,
            plan: st.plan.clone(),
            decl: st.decl.clone(),
            notes,
            exit: None,
        });
    }
    let Some(run_id) = ctx.run_id() else {
        // Nothing was journaled for this run: report why. (A resumed run keeps its lock.)
        if ctx.resume.is_none() {
            release_lock(ctx).await;
        }
        if interrupted {
            let why = stopped_by.map(|r| r.describe()).unwrap_or_default();
            ctx.out.warn_line(&format!("{}: {why} before the run started", ctx.file));
            return Ok(Outcome {
                run_id: None,
                status: RunStatus::Interrupted,
                plan: vec![],
                decl: None,
                notes: vec![],
                exit: None,
            });
        }
        return Err(match halt {
            Some(Halt::Params(problems)) => Error::Params(problems),
            Some(Halt::LockHeld { name, run_id, status, host, pid }) => {
                Error::LockHeld { name, run_id, status, host, pid }
            }
            Some(Halt::Journal(msg)) => Error::Io(format!("journal: {msg}")),
            Some(h) => Error::Runbook(failure.unwrap_or_else(|| h.to_string())),
            None => Error::Runbook(failure.unwrap_or_else(|| {
                format!(
                    "{}: no runbook{{...}} declaration: a runbook starts with runbook {{ name = \"...\" }}",
                    ctx.file
                )
            })),
        });
    };
    let Some(journal) = ctx.journal.clone() else {
        return Err(Error::Io("internal: a run without a journal".into()));
    };
    let taken_over = |e: crate::journal::JournalError| match e {
        crate::journal::JournalError::NotOwner(_) => Error::Io(e.to_string()),
        other => Error::Journal(other),
    };

    // A step that was running when the run was stopped from outside stays `running` (so a
    // resume continues its retry budget), with the reason.
    let label = ctx.work_label();
    let cut_off = ctx.st.borrow_mut().current_step.take();
    if let (Some(step), Some(reason)) = (cut_off, &stopped_by) {
        // What the abandoned attempt left running on servers is stopped too (a cancel, a
        // signal), so a resume never runs beside it.
        crate::primitives::stop_abandoned(ctx, &label).await;
        let rec = ctx.st.borrow().records.get(&step).cloned();
        if let Some(mut rec) = rec.filter(|r| r.status == crate::journal::StepStatus::Running) {
            let ms = rec
                .started_at
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| chrono::Utc::now().signed_duration_since(t).num_milliseconds().max(0));
            rec.status = crate::journal::StepStatus::Running;
            rec.error = Some(reason.describe());
            rec.duration_ms = ms;
            journal.put_step(&run_id, &ctx.me, &rec).await.map_err(taken_over)?;
            ctx.out.emit(
                "step_finished",
                Some(&step),
                json!({"status": "interrupted", "error": rec.error, "attempt": rec.attempts, "duration_ms": ms}),
            );
        }
    }

    let rollback_auto = ctx.st.borrow().decl.as_ref().is_some_and(|d| d.rollback_auto());
    let rollback_resume = ctx.st.borrow().rollback_resume;
    let cancelled = matches!(stopped_by, Some(StopReason::CancelRequested));
    // A `rollback = "auto"` runbook is rolled back when cancelled (unless `--no-rollback`) or
    // when a gate is declined, as for a failure.
    let cancel_rolls_back = rollback_auto
        && !rollback_resume
        && match (&halt, &stopped_by) {
            (Some(Halt::Cancelled(_)), Some(StopReason::CancelRequested)) => {
                ctx.cancel_rollback.load(std::sync::atomic::Ordering::SeqCst)
            }
            (Some(Halt::Cancelled(_)), None) => true,
            _ => false,
        };
    let (status, error, exit_override) = match (&halt, failure) {
        (Some(Halt::Cancelled(msg)), _) if cancel_rolls_back => {
            // The cancel is acted on: the undos run; only a signal stops them now. The cut-off
            // step's deadline is not theirs.
            ctx.deadline.set(None);
            ctx.watch.lock().unwrap_or_else(|p| p.into_inner()).step = None;
            ctx.cancel_ack.store(true, std::sync::atomic::Ordering::SeqCst);
            ctx.stop_tx.send_replace(None);
            journal.set_run_status(&run_id, &ctx.me, RunStatus::RollingBack, Some(msg)).await.map_err(taken_over)?;
            (rollback(lua, ctx, &journal, &run_id).await.map_err(taken_over)?, Some(msg.clone()), None)
        }
        // Resuming a rollback never records a forward status: a signal leaves it rolling back,
        // anything that stops the replay other than a failure is a failed rollback.
        (Some(Halt::Cancelled(_)), _) if rollback_resume && interrupted => (RunStatus::RollingBack, None, None),
        (
            Some(
                h @ (Halt::Declaration(_)
                | Halt::Journal(_)
                | Halt::Params(_)
                | Halt::LockHeld { .. }
                | Halt::WaitingApproval(_)),
            ),
            _,
        ) if rollback_resume => (RunStatus::RollbackFailed, Some(format!("rollback stopped: {h}")), None),
        (Some(Halt::WaitingApproval(msg)), _) => {
            (RunStatus::WaitingApproval, Some(format!("waiting for approval: {msg}")), None)
        }
        (Some(Halt::Cancelled(msg)), _) if interrupted => (RunStatus::Interrupted, Some(msg.clone()), None),
        (Some(Halt::Cancelled(msg)), _) => (RunStatus::Cancelled, Some(msg.clone()), None),
        (Some(Halt::Journal(msg)), _) => (RunStatus::Failed, Some(format!("journal: {msg}")), None),
        // Only the REPL's loads stop this way, and they record no run.
        (Some(h @ Halt::Loaded(_)), _) => (RunStatus::Failed, Some(h.to_string()), None),
        (Some(Halt::Declaration(msg)), _) => (RunStatus::Failed, Some(msg.clone()), Some(exit::USAGE)),
        (Some(h @ Halt::Params(_)), _) => (RunStatus::Failed, Some(h.to_string()), Some(exit::USAGE)),
        (Some(h @ Halt::LockHeld { .. }), _) => (RunStatus::Failed, Some(h.to_string()), Some(exit::LOCK_HELD)),
        (Some(Halt::RollbackNow), _) => (rollback(lua, ctx, &journal, &run_id).await.map_err(taken_over)?, None, None),
        (Some(Halt::StepFailed { .. }) | None, Some(message)) => {
            if rollback_auto || rollback_resume {
                journal
                    .set_run_status(&run_id, &ctx.me, RunStatus::RollingBack, Some(&message))
                    .await
                    .map_err(taken_over)?;
                (rollback(lua, ctx, &journal, &run_id).await.map_err(taken_over)?, Some(message), None)
            } else {
                (RunStatus::Failed, Some(message), None)
            }
        }
        (Some(Halt::StepFailed { .. }), None) => (RunStatus::Failed, None, None),
        (None, None) if rollback_resume => {
            (rollback(lua, ctx, &journal, &run_id).await.map_err(taken_over)?, None, None)
        }
        (None, None) if ctx.mode == Mode::DryRun => (RunStatus::DryRun, None, None),
        (None, None) => (RunStatus::Succeeded, None, None),
    };
    // A rollback stopped by `runbook cancel` is cancelled; by a signal, it stays rolling back.
    // (Read again: the cancel may have arrived during the rollback itself.)
    let cancelled =
        (cancelled && !cancel_rolls_back) || matches!(ctx.stop_requested(), Some(StopReason::CancelRequested));
    let status = if status == RunStatus::RollingBack && cancelled { RunStatus::Cancelled } else { status };
    // Undos that the replay never reached cannot have run: the rollback is not complete.
    let unreached: Vec<String> = {
        let st = ctx.st.borrow();
        let mut v: Vec<String> = st.replay_pending.iter().cloned().collect();
        v.sort();
        v
    };
    let (status, error) = if rollback_resume && status == RunStatus::RolledBack && !unreached.is_empty() {
        let why = format!(
            "the undo of step(s) {} did not run: replaying the runbook did not reach them (did its control flow change?)",
            unreached.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
        );
        (RunStatus::RollbackFailed, Some(why))
    } else {
        (status, error)
    };
    // A rollback stopped by a signal stays `rolling_back`: resuming continues it.
    let exit_override = if status == RunStatus::RollingBack { Some(exit::INTERRUPTED) } else { exit_override };
    // A resumed rollback keeps the failure that started it; one asked for says why.
    let earlier = if rollback_resume { ctx.resume.as_ref().and_then(|r| r.error.clone()) } else { None };
    let error = match (&ctx.rollback_reason, error) {
        (Some(why), None) => Some(match earlier {
            Some(e) => format!("{why} (it was stopped: {e})"),
            None => why.clone(),
        }),
        (_, error) => error.or(earlier),
    }
    .map(|e| crate::secret::redact(&e).into_owned());
    if let Some(h) = ctx.st.borrow_mut().heartbeat.take() {
        h.abort();
    }
    let elapsed = ctx.st.borrow().run_started.map(|t| t.elapsed().as_millis() as u64).unwrap_or(0);
    let summary = {
        let st = ctx.st.borrow();
        let c = &st.counts;
        json!({"status": status.as_str(), "duration_ms": elapsed, "error": error, "ok": c.ok, "failed": c.failed, "skipped": c.skipped, "recorded": c.recorded})
    };
    ctx.out.emit("run_finished", None, summary);
    // Nothing is claimed that was not recorded: a run whose log the journal refused (a full
    // disk) did not succeed; it stops, resumable once there is room.
    let (status, error) = match ctx.out.flush().await {
        Some(why) if matches!(status, RunStatus::Succeeded | RunStatus::DryRun) => (
            RunStatus::Failed,
            Some(format!("journal: {why}; the run is not recorded whole (resume it once the journal has room)")),
        ),
        _ => (status, error),
    };
    ctx.scrub_if_needed().await.map_err(taken_over)?;
    journal.finish_run(&run_id, &ctx.me, status, error.as_deref()).await.map_err(taken_over)?;
    // The lock is the run's until it ends for good; a run that can be resumed (waiting for
    // approval, failed, interrupted) keeps it, so no second run starts beside it.
    if status.is_final() {
        release_lock(ctx).await;
    } else {
        ctx.st.borrow_mut().lock = None;
    }
    if !ctx.out.is_json() {
        // An error returned to the caller is printed by it; print the others here.
        let wrong_runbook = exit_override == Some(exit::USAGE);
        let shown = if wrong_runbook { None } else { error.as_deref() };
        print_summary(ctx, &run_id, status, elapsed, shown, !wrong_runbook);
    }
    if let (Some(exit::USAGE), Some(e)) = (exit_override, &error) {
        return Err(Error::Runbook(e.clone()));
    }
    let (plan, decl) = {
        let st = ctx.st.borrow();
        (st.plan.clone(), st.decl.clone())
    };
    Ok(Outcome { run_id: Some(run_id), status, plan, decl, notes: Vec::new(), exit: exit_override })
}

fn print_summary(ctx: &Ctx, run_id: &str, status: RunStatus, elapsed_ms: u64, error: Option<&str>, resumable: bool) {
    let st = ctx.st.borrow();
    let c = &st.counts;
    let took = crate::duration::human(std::time::Duration::from_millis(elapsed_ms));
    let mut parts = vec![format!("{} ok", c.ok)];
    if c.recorded > 0 {
        parts.push(format!("{} done earlier", c.recorded));
    }
    if c.skipped > 0 {
        parts.push(format!("{} skipped", c.skipped));
    }
    if c.failed > 0 {
        parts.push(format!("{} failed", c.failed));
    }
    ctx.out.line(&format!("run {run_id} {status} in {took}: {}", parts.join(", ")));
    match status {
        RunStatus::Failed | RunStatus::Interrupted | RunStatus::RollbackFailed | RunStatus::RollingBack
            if resumable =>
        {
            ctx.out.line(&format!("resume with: runbook resume {run_id}"));
        }
        _ => {}
    }
    if let (
        Some(e),
        RunStatus::Failed
        | RunStatus::RolledBack
        | RunStatus::RollbackFailed
        | RunStatus::Cancelled
        | RunStatus::Interrupted,
    ) = (error, status)
    {
        if !ctx.out.is_silent() {
            eprintln!("{}", crate::secret::redact(e));
        }
    }
}

/// Runs the undo of every completed step in reverse order, each journaled; an undo recorded as
/// done is never run again. A signal or a cancel stops it between or during undos: the run
/// stays `rolling_back` and a resume continues it (an undo cut off midway runs again).
async fn rollback(
    lua: &Lua,
    ctx: &Rc<Ctx>,
    journal: &Arc<dyn Journal>,
    run_id: &str,
) -> Result<RunStatus, crate::journal::JournalError> {
    let entries = std::mem::take(&mut ctx.st.borrow_mut().undo);
    journal.set_run_status(run_id, &ctx.me, RunStatus::RollingBack, None).await?;
    ctx.out.emit("rollback_started", None, json!({"steps": entries.len()}));
    let mut stop = ctx.stop_tx.subscribe();
    for entry in entries.into_iter().rev() {
        if ctx.stop_requested().is_some() {
            return Ok(RunStatus::RollingBack);
        }
        let rec = ctx.st.borrow().records.get(&entry.step).cloned();
        let Some(mut rec) = rec else { continue };
        if rec.undo_status.as_deref() == Some("done") {
            ctx.out.emit("undo_finished", Some(&entry.step), json!({"status": "already_done"}));
            continue;
        }
        rec.undo_status = Some("running".into());
        journal.put_step(run_id, &ctx.me, &rec).await?;
        {
            let mut st = ctx.st.borrow_mut();
            st.current_step = Some(format!("undo {}", entry.step));
            st.fanouts = 0;
            st.attempt = 1;
            st.rerun = ctx.resume.is_some();
        }
        let label = ctx.work_label();
        let arg = crate::lua::convert::from_json(lua, &entry.result).unwrap_or(Value::Nil);
        let started = Instant::now();
        ctx.set_reacted(false);
        let res = tokio::select! {
            r = entry.func.call_async::<()>(arg) => Some(r),
            _ = stop.wait_for(|r| r.is_some()) => None,
        };
        ctx.set_reacted(true);
        ctx.st.borrow_mut().current_step = None;
        let ms = started.elapsed().as_millis() as u64;
        match res {
            None => {
                crate::primitives::stop_abandoned(ctx, &label).await;
                let why = ctx.stop_requested().map(|r| r.describe()).unwrap_or_default();
                ctx.out.emit(
                    "undo_finished",
                    Some(&entry.step),
                    json!({"status": "interrupted", "error": why, "duration_ms": ms}),
                );
                return Ok(RunStatus::RollingBack);
            }
            Some(Ok(())) => {
                rec.undo_status = Some("done".into());
                rec.undo_error = None;
                journal.put_step(run_id, &ctx.me, &rec).await?;
                ctx.st.borrow_mut().records.insert(rec.name.clone(), rec);
                ctx.out.emit("undo_finished", Some(&entry.step), json!({"status": "done", "duration_ms": ms}));
            }
            Some(Err(e)) => {
                let stopping = ctx.stop_requested().is_some();
                if stopping || e.chain().any(|c| matches!(c.downcast_ref::<Halt>(), Some(Halt::Cancelled(_)))) {
                    return Ok(RunStatus::RollingBack);
                }
                let (msg, loc) = errors::describe(&e);
                let msg = match loc {
                    Some(l) => format!("{l}: undo of step '{}': {msg}", entry.step),
                    None => format!("undo of step '{}': {msg}", entry.step),
                };
                let msg = crate::secret::redact(&msg).into_owned();
                rec.undo_status = Some("failed".into());
                rec.undo_error = Some(msg.clone());
                journal.put_step(run_id, &ctx.me, &rec).await?;
                ctx.st.borrow_mut().records.insert(rec.name.clone(), rec);
                ctx.out.emit(
                    "undo_finished",
                    Some(&entry.step),
                    json!({"status": "failed", "error": msg, "duration_ms": ms}),
                );
                return Ok(RunStatus::RollbackFailed);
            }
        }
    }
    Ok(RunStatus::RolledBack)
}
