//! The crash proof of `runbook test`: a journal that stops dead before its Nth write. Every
//! write that records progress (a run created or ended, a step's record, an item, a gate, a
//! lock) is a crash point; once dead, every call fails as if the process were gone, so the
//! engine stops there, and a resume on the same file (with a fresh Lua state and a journal
//! handle of its own) shows what a real crash at that point would leave.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::journal::*;

/// Where a test stops the process dead: before a step's end is recorded (its body ran), or
/// right after it was (`run(..., { kill = { inside = "migrate" } | { after = "migrate" } })`).
#[derive(Debug, Clone)]
pub enum Kill {
    Inside(String),
    After(String),
}

impl Kill {
    /// Whether the process stops before write `what`, the one before it being `before`.
    fn hits(&self, what: &str, before: Option<&str>) -> bool {
        let ended = |w: &str, step: &str| {
            w.strip_prefix(&format!("step '{step}' ")).is_some_and(|s| s != "running" && s != "waiting")
        };
        match self {
            Kill::Inside(step) => ended(what, step),
            Kill::After(step) => before.is_some_and(|b| b == format!("step '{step}' succeeded")),
        }
    }
}

pub struct CrashJournal {
    inner: Arc<dyn Journal>,
    /// The write before which the process stops (none: it never does; the writes are counted).
    crash_at: Option<u64>,
    /// Or the write a test's `kill` names.
    kill: Option<Kill>,
    points: AtomicU64,
    pub dead: Arc<AtomicBool>,
    /// What each write was, in order (for naming crash points).
    pub seen: Mutex<Vec<String>>,
}

impl CrashJournal {
    pub fn new(inner: Arc<dyn Journal>, crash_at: Option<u64>, dead: Arc<AtomicBool>) -> CrashJournal {
        CrashJournal { inner, crash_at, kill: None, points: AtomicU64::new(0), dead, seen: Mutex::default() }
    }

    /// A journal that stops the process dead where a test's `kill` says.
    pub fn killing(inner: Arc<dyn Journal>, kill: Kill, dead: Arc<AtomicBool>) -> CrashJournal {
        CrashJournal {
            inner,
            crash_at: None,
            kill: Some(kill),
            points: AtomicU64::new(0),
            dead,
            seen: Mutex::default(),
        }
    }

    fn gone() -> JournalError {
        JournalError::NotOwner("(the process stopped at a crash point of runbook test)".into())
    }

    fn alive(&self) -> JResult<()> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(Self::gone());
        }
        Ok(())
    }

    fn point(&self, what: String) -> JResult<()> {
        self.alive()?;
        let n = self.points.fetch_add(1, Ordering::SeqCst) + 1;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let killed = self.kill.as_ref().is_some_and(|k| k.hits(&what, seen.last().map(String::as_str)));
        seen.push(what);
        drop(seen);
        if Some(n) == self.crash_at || killed {
            self.dead.store(true, Ordering::SeqCst);
            return Err(Self::gone());
        }
        Ok(())
    }

    /// The writes made so far.
    pub fn writes(&self) -> u64 {
        self.points.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Journal for CrashJournal {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn create_run(&self, run: &RunRecord) -> JResult<()> {
        self.point("create_run".to_string())?;
        self.inner.create_run(run).await
    }
    async fn run(&self, id: &str) -> JResult<Option<RunRecord>> {
        self.alive()?;
        self.inner.run(id).await
    }
    async fn find_run(&self, reference: &str) -> JResult<RunRecord> {
        self.alive()?;
        self.inner.find_run(reference).await
    }
    async fn runs(&self, filter: &RunFilter) -> JResult<Vec<RunRecord>> {
        self.alive()?;
        self.inner.runs(filter).await
    }
    async fn claim_run(&self, claim: &Claim<'_>) -> JResult<bool> {
        self.point("claim_run".to_string())?;
        self.inner.claim_run(claim).await
    }
    async fn set_run_status(&self, id: &str, me: &Owner, status: RunStatus, error: Option<&str>) -> JResult<()> {
        self.point("set_run_status".to_string())?;
        self.inner.set_run_status(id, me, status, error).await
    }
    async fn finish_run(&self, id: &str, me: &Owner, status: RunStatus, error: Option<&str>) -> JResult<()> {
        self.point("finish_run".to_string())?;
        self.inner.finish_run(id, me, status, error).await
    }
    async fn close_stopped_run(
        &self,
        id: &str,
        expected: RunStatus,
        previous: &Owner,
        status: RunStatus,
        error: &str,
    ) -> JResult<bool> {
        self.point("close_stopped_run".to_string())?;
        self.inner.close_stopped_run(id, expected, previous, status, error).await
    }
    async fn heartbeat(&self, id: &str, me: &Owner) -> JResult<Beat> {
        self.alive()?;
        self.inner.heartbeat(id, me).await
    }
    async fn request_cancel(&self, id: &str, rollback: bool) -> JResult<()> {
        self.alive()?;
        self.inner.request_cancel(id, rollback).await
    }
    async fn steps(&self, run_id: &str) -> JResult<Vec<StepRecord>> {
        self.alive()?;
        self.inner.steps(run_id).await
    }
    async fn put_step(&self, run_id: &str, me: &Owner, step: &StepRecord) -> JResult<()> {
        self.point(match step.undo_status.as_deref().filter(|u| *u != "pending") {
            Some(undo) => format!("undo of '{}' {undo}", step.name),
            None => format!("step '{}' {}", step.name, step.status.as_str()),
        })?;
        self.inner.put_step(run_id, me, step).await
    }
    async fn items(&self, run_id: &str, step: Option<&str>) -> JResult<Vec<ItemRecord>> {
        self.alive()?;
        self.inner.items(run_id, step).await
    }
    async fn put_item(&self, run_id: &str, me: &Owner, item: &ItemRecord) -> JResult<()> {
        self.point("put_item".to_string())?;
        self.inner.put_item(run_id, me, item).await
    }
    async fn vote(&self, vote: &VoteRecord, quorum: i64, rollback_auto: bool) -> JResult<VoteOutcome> {
        self.point("vote".to_string())?;
        self.inner.vote(vote, quorum, rollback_auto).await
    }
    async fn events_since(&self, run_id: &str, after: i64, limit: i64) -> JResult<Vec<(i64, EventRecord)>> {
        self.inner.events_since(run_id, after, limit).await
    }
    async fn last_event_id(&self, run_id: &str) -> JResult<i64> {
        self.inner.last_event_id(run_id).await
    }
    async fn audit(&self, record: &AuditRecord) -> JResult<()> {
        self.inner.audit(record).await
    }
    async fn audit_log(&self, limit: i64) -> JResult<Vec<AuditRecord>> {
        self.inner.audit_log(limit).await
    }
    async fn use_link(&self, nonce: &str, by: &str) -> JResult<bool> {
        self.inner.use_link(nonce, by).await
    }
    async fn request_resume(&self, id: &str, expected: RunStatus, previous: &Owner, by: &str) -> JResult<bool> {
        self.inner.request_resume(id, expected, previous, by).await
    }
    async fn skip_step(
        &self,
        run_id: &str,
        expected: RunStatus,
        previous: &Owner,
        step: &str,
        actor: &str,
        reason: &str,
    ) -> JResult<bool> {
        self.inner.skip_step(run_id, expected, previous, step, actor, reason).await
    }
    async fn votes(&self, run_id: &str) -> JResult<Vec<VoteRecord>> {
        self.inner.votes(run_id).await
    }
    async fn expire_gate(
        &self,
        run_id: &str,
        gate: &str,
        end: OnTimeout,
        rollback_auto: bool,
        why: &str,
    ) -> JResult<bool> {
        self.point("expire_gate".to_string())?;
        self.inner.expire_gate(run_id, gate, end, rollback_auto, why).await
    }
    async fn append_events(&self, events: &[EventRecord]) -> JResult<()> {
        self.alive()?;
        self.inner.append_events(events).await
    }
    async fn events(&self, run_id: &str) -> JResult<Vec<EventRecord>> {
        self.alive()?;
        self.inner.events(run_id).await
    }
    async fn claim_queued(&self, me: &Owner, lease_secs: i64) -> JResult<Option<RunRecord>> {
        self.alive()?;
        self.inner.claim_queued(me, lease_secs).await
    }
    async fn takeover_candidates(&self) -> JResult<Vec<RunRecord>> {
        self.alive()?;
        self.inner.takeover_candidates().await
    }
    async fn waiting_runs(&self, limit: i64) -> JResult<Vec<RunRecord>> {
        self.inner.waiting_runs(limit).await
    }
    async fn fire(&self, fire: &FireRecord, run: Option<&RunRecord>) -> JResult<bool> {
        self.alive()?;
        self.inner.fire(fire, run).await
    }
    async fn fires(&self, schedule: &str, limit: i64) -> JResult<Vec<FireRecord>> {
        self.alive()?;
        self.inner.fires(schedule, limit).await
    }
    async fn unpaused_at(&self, schedule: &str) -> JResult<Option<String>> {
        self.alive()?;
        self.inner.unpaused_at(schedule).await
    }
    async fn unpause(&self, schedule: &str, actor: &str) -> JResult<()> {
        self.alive()?;
        self.inner.unpause(schedule, actor).await
    }
    async fn acquire_lock(&self, name: &str, run_id: &str, me: &Owner, lease_secs: i64) -> JResult<LockOutcome> {
        self.point("acquire_lock".to_string())?;
        self.inner.acquire_lock(name, run_id, me, lease_secs).await
    }
    async fn put_session(&self, session: &SessionRecord) -> JResult<()> {
        self.alive()?;
        self.inner.put_session(session).await
    }
    async fn session_event(&self, event: &SessionEvent) -> JResult<()> {
        self.alive()?;
        self.inner.session_event(event).await
    }
    async fn sessions(&self, limit: i64) -> JResult<Vec<SessionRecord>> {
        self.alive()?;
        self.inner.sessions(limit).await
    }
    async fn find_session(&self, reference: &str) -> JResult<SessionRecord> {
        self.alive()?;
        self.inner.find_session(reference).await
    }
    async fn session_events(&self, session_id: &str) -> JResult<Vec<SessionEvent>> {
        self.alive()?;
        self.inner.session_events(session_id).await
    }
    async fn release_lock(&self, name: &str, run_id: &str) -> JResult<()> {
        // A process that stopped dead releases nothing, and says nothing: the lock stays held
        // until the resumed run takes it over, as after a real crash.
        if self.dead.load(Ordering::SeqCst) || self.point("release_lock".to_string()).is_err() {
            return Ok(());
        }
        self.inner.release_lock(name, run_id).await
    }
    async fn lock_holder(&self, name: &str) -> JResult<Option<LockHolder>> {
        self.alive()?;
        self.inner.lock_holder(name).await
    }
    async fn scrub_run(&self, run_id: &str, me: &Owner, scrub: for<'v> fn(&'v mut serde_json::Value)) -> JResult<()> {
        self.alive()?;
        self.inner.scrub_run(run_id, me, scrub).await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}
