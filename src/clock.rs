//! Time as runbooks see it. Real by default; under `runbook test` it is virtual: a sleep (the
//! `sleep` builtin, a step's retry backoff, a fake's health polls) advances the clock at once
//! instead of waiting, and `now()`, `os.time`, the journal's timestamps and the retry schedule
//! read the advanced clock, so a runbook whose retries back off for half an hour tests in
//! milliseconds and a test can assert on the times it would have taken. A step's `timeout` is
//! kept on the same clock: a sleep that would cross it ends the step as the real timeout would.
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static VIRTUAL: AtomicBool = AtomicBool::new(false);
// Per thread: `runbook test` runs its test files on threads of their own, each a world with its
// own virtual time (a runbook's run stays on its thread: Lua states are not Send).
thread_local! {
    /// How far the virtual clock is ahead of the real one, in microseconds.
    static AHEAD_US: Cell<u64> = const { Cell::new(0) };
    /// The running step's timeout on the virtual clock (as AHEAD_US would read then; 0: none),
    /// and the timeout itself, in microseconds.
    static DEADLINE_US: Cell<u64> = const { Cell::new(0) };
    static LIMIT_US: Cell<u64> = const { Cell::new(0) };
}
/// A run that sleeps longer than this in all is stopped: a loop waiting for what no fake will
/// ever answer.
const MOST_US: u64 = 366 * 24 * 3600 * 1_000_000;

fn set(cell: &'static std::thread::LocalKey<Cell<u64>>, v: u64) {
    cell.with(|c| c.set(v));
}

/// Turns the virtual clock on (for the rest of the process: `runbook test` is a process of its own).
pub fn set_virtual() {
    VIRTUAL.store(true, Ordering::SeqCst);
}

pub fn is_virtual() -> bool {
    VIRTUAL.load(Ordering::Relaxed)
}

/// Back to the real time (a new run of a test).
pub fn reset() {
    set(&AHEAD_US, 0);
    set(&DEADLINE_US, 0);
}

/// How far ahead the virtual clock is (to put it back after a detour, see `set_offset`).
pub fn offset() -> u64 {
    AHEAD_US.with(Cell::get)
}

pub fn set_offset(us: u64) {
    set(&AHEAD_US, us);
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Time elapsed on the runbook's clock (monotonic; the virtual clock's moves included).
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    real: std::time::Instant,
    ahead: u64,
}

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch { real: std::time::Instant::now(), ahead: AHEAD_US.with(Cell::get) }
    }

    pub fn elapsed(&self) -> Duration {
        let moved = AHEAD_US.with(Cell::get).saturating_sub(self.ahead);
        self.real.elapsed() + Duration::from_micros(moved)
    }
}

/// Waits `d`, or, on the virtual clock, moves it `d` ahead and returns at once.
pub async fn sleep(d: Duration) {
    if is_virtual() {
        let ahead = AHEAD_US.with(Cell::get);
        set(&AHEAD_US, ahead.saturating_add(micros(d)).min(MOST_US));
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(d).await;
    }
}

/// A sleep inside a step: on the virtual clock, one that would cross the step's timeout ends
/// there (`Err(timeout)`), and one past a year of virtual time in all is refused.
pub async fn sleep_in_step(d: Duration) -> Result<(), String> {
    if !is_virtual() {
        tokio::time::sleep(d).await;
        return Ok(());
    }
    let ahead = AHEAD_US.with(Cell::get);
    let to = ahead.saturating_add(micros(d));
    let deadline = DEADLINE_US.with(Cell::get);
    if deadline != 0 && to > deadline {
        set(&AHEAD_US, deadline);
        let limit = Duration::from_micros(LIMIT_US.with(Cell::get));
        return Err(format!("timed out after {}", crate::duration::human(limit)));
    }
    if to > MOST_US {
        return Err("the run slept more than a year of virtual time: a loop waiting for what no fake answers?".into());
    }
    set(&AHEAD_US, to);
    tokio::task::yield_now().await;
    Ok(())
}

/// The running step's timeout, on the virtual clock (none: `None`).
pub fn set_step_timeout(limit: Option<Duration>) {
    match limit.filter(|_| is_virtual()) {
        Some(l) => {
            set(&LIMIT_US, micros(l));
            set(&DEADLINE_US, AHEAD_US.with(Cell::get).saturating_add(micros(l)).max(1));
        }
        None => set(&DEADLINE_US, 0),
    }
}

/// The current time on this clock.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    let real = chrono::Utc::now();
    match AHEAD_US.with(Cell::get) {
        0 => real,
        us => real
            .checked_add_signed(chrono::Duration::microseconds(i64::try_from(us).unwrap_or(i64::MAX)))
            .unwrap_or(real),
    }
}
