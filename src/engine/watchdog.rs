//! The watchdog: a run always stops. The instruction hook stops a step that spins in Lua, but
//! one long call in C (`string.find` on a pathological pattern) or a finalizer never returns to
//! the hook. A thread watches the running step's deadline and any stop request (signal, cancel);
//! when the engine has not reacted within [`GRACE`] of either, it records the step's fate in the
//! journal (through the runtime's other threads: the engine's thread is the one stuck), stops the
//! attempt's work on servers, and ends the process. The run stays resumable.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{StopReason, WorkLabel};
use crate::journal::{Journal, Owner, RunStatus, StepRecord, StepStatus};

/// How long the engine has to react to a timeout or a stop before the watchdog ends the process.
pub const GRACE: Duration = Duration::from_secs(2);

/// What the engine tells the watchdog.
#[derive(Default)]
pub struct Watched {
    /// The running step attempt: its deadline (if any), its record and work label.
    pub step: Option<WatchedStep>,
    /// The run and the journal recording it.
    pub run: Option<(String, Arc<dyn Journal>, Owner)>,
    /// The engine returned from the runbook's code: stop requests are being handled.
    pub reacted: bool,
    /// The Lua VM is being closed (finalizers run), after the run was recorded: its exit code.
    pub closing: Option<(Instant, u8)>,
}

pub struct WatchedStep {
    pub deadline: Option<Instant>,
    pub timeout: Option<Duration>,
    pub record: StepRecord,
    pub label: WorkLabel,
}

pub type Shared = Arc<Mutex<Watched>>;

/// Starts the watchdog for one evaluation; it ends when `shared` is dropped by the engine.
pub fn spawn(stop: watch::Receiver<Option<StopReason>>) -> Shared {
    let shared: Shared = Arc::default();
    let weak = Arc::downgrade(&shared);
    let handle = tokio::runtime::Handle::try_current().ok();
    let _ = std::thread::Builder::new().name("runbook-watchdog".into()).spawn(move || {
        let mut stop_seen: Option<Instant> = None;
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let Some(shared) = weak.upgrade() else { return };
            let now = Instant::now();
            let reason = stop.borrow().clone();
            stop_seen = match (&reason, stop_seen) {
                (Some(_), None) => Some(now),
                (Some(_), seen) => seen,
                (None, _) => None,
            };
            let fate = {
                let w = shared.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((since, code)) = w.closing {
                    (now >= since + GRACE).then_some(Fate::Closing(code))
                } else if w.reacted {
                    None
                } else if let (Some(r), Some(seen)) = (&reason, stop_seen) {
                    (now >= seen + GRACE).then(|| Fate::Stopped(r.clone()))
                } else {
                    match &w.step {
                        Some(WatchedStep { deadline: Some(d), timeout, .. }) if now >= *d + GRACE => {
                            Some(Fate::TimedOut(timeout.unwrap_or_default()))
                        }
                        _ => None,
                    }
                }
            };
            if let Some(fate) = fate {
                end(&shared, fate, handle.as_ref());
            }
        }
    });
    shared
}

enum Fate {
    TimedOut(Duration),
    Stopped(StopReason),
    Closing(u8),
}

/// Records what happened and ends the process.
fn end(shared: &Shared, fate: Fate, handle: Option<&tokio::runtime::Handle>) -> ! {
    let (step, run) = {
        let mut w = shared.lock().unwrap_or_else(|p| p.into_inner());
        (w.step.take(), w.run.clone())
    };
    let stuck = format!(
        "the runbook did not return to the engine within {}s (one long call in C, or a finalizer that never ends), so the process was ended",
        GRACE.as_secs()
    );
    let (code, step_status, run_status, why) = match &fate {
        Fate::Closing(code) => {
            eprintln!("runbook: the run is recorded; a finalizer of the runbook did not end, so the process was ended");
            std::process::exit(i32::from(*code));
        }
        Fate::TimedOut(t) => (
            crate::error::exit::FAILED,
            StepStatus::Failed,
            Some(RunStatus::Failed),
            format!("timed out after {}; {stuck}", crate::duration::human(*t)),
        ),
        Fate::Stopped(StopReason::CancelRequested) => (
            crate::error::exit::FAILED,
            StepStatus::Running,
            Some(RunStatus::Cancelled),
            format!("cancelled by `runbook cancel`; {stuck}"),
        ),
        Fate::Stopped(r) => {
            (crate::error::exit::INTERRUPTED, StepStatus::Running, None, format!("{}; {stuck}", r.describe()))
        }
    };
    let why = crate::secret::redact(&why).into_owned();
    eprintln!("runbook: {why}");
    if let (Some(handle), Some((run_id, journal, me))) = (handle, run) {
        let record = async {
            if let Some(s) = &step {
                let mut rec = s.record.clone();
                rec.status = step_status;
                rec.error = Some(why.clone());
                rec.finished_at = (step_status == StepStatus::Failed).then(crate::journal::now_ts);
                let _ = journal.put_step(&run_id, &me, &rec).await;
                for said in crate::primitives::db::orphans::stop_abandoned(&s.label).await {
                    eprintln!("runbook: {}", crate::secret::redact(&said));
                }
            }
            if let Some(status) = run_status {
                let _ = journal.finish_run(&run_id, &me, status, Some(&why)).await;
            }
        };
        // At most a few seconds more: the process ends whatever the journal does.
        // (The timer is made inside the runtime's context, which block_on enters.) Whatever goes
        // wrong here, the process still ends.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handle.block_on(async { tokio::time::timeout(Duration::from_secs(5), record).await })
        }));
    }
    std::process::exit(i32::from(code));
}
