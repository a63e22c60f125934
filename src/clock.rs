//! Time as runbooks see it. Real by default; under `runbook test` it is virtual: a sleep (the
//! `sleep` builtin, a step's retry backoff) advances the clock at once instead of waiting, and
//! `now()`, the journal's timestamps and the retry schedule read the advanced clock, so a
//! runbook whose retries back off for half an hour tests in milliseconds and a test can assert
//! on the times it would have taken.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

static VIRTUAL: AtomicBool = AtomicBool::new(false);
/// How far the virtual clock is ahead of the real one, in microseconds.
static AHEAD_US: AtomicU64 = AtomicU64::new(0);

/// Turns the virtual clock on (for the rest of the process: `runbook test` is a process of its own).
pub fn set_virtual() {
    VIRTUAL.store(true, Ordering::SeqCst);
}

pub fn is_virtual() -> bool {
    VIRTUAL.load(Ordering::Relaxed)
}

/// Waits `d`, or, on the virtual clock, moves it `d` ahead and returns at once.
pub async fn sleep(d: Duration) {
    if is_virtual() {
        AHEAD_US.fetch_add(d.as_micros().min(u128::from(u64::MAX / 4)) as u64, Ordering::SeqCst);
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(d).await;
    }
}

/// The current time on this clock.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    let real = chrono::Utc::now();
    match AHEAD_US.load(Ordering::Relaxed) {
        0 => real,
        us => real + chrono::Duration::microseconds(us.min(i64::MAX as u64) as i64),
    }
}
