//! Approval policies: who may decide a gate, how many must approve, and what happens when
//! nobody decides in time. One set of rules for every way a decision arrives (`runbook
//! approve`, the REPL, the console, an approval link), journaled with who, how, when and why.
//!
//! A gate declared with a policy keeps it in its step row (`result`: the policy, who requested
//! the run, the deadline), so whoever decides reads the rules the runbook gave, not their own.
use serde::{Deserialize, Serialize};

use crate::journal::{self, Journal, OnTimeout, RunRecord, RunStatus, StepRecord, StepStatus, VoteOutcome, VoteRecord};

/// `approve(message, { approvers = {"group:dba", "alice"}, quorum = 2, self_approval = false,
/// timeout = "4h", on_timeout = "cancel" })`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Who may decide: user names and `group:NAME` (groups of runbook.toml's `[serve.users]`).
    /// Empty: anyone but the requester.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Distinct people who must approve.
    #[serde(default = "Policy::one")]
    pub quorum: u32,
    /// Whether the person who started (or enqueued) the run may approve it.
    #[serde(default)]
    pub self_approval: bool,
    /// How long the gate waits ("30m", "4h").
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// Where decisions may come from: "cli", "repl", "web", "api", "local" (default: all). From
    /// the command line a person is who their OS account says, and anyone who can write the
    /// journal can write anything; `via = { "web", "api" }` takes only logged-in decisions.
    #[serde(default)]
    pub via: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            approvers: vec![],
            quorum: 1,
            self_approval: false,
            timeout: None,
            on_timeout: OnTimeout::Cancel,
            via: vec![],
        }
    }
}

impl Policy {
    fn one() -> u32 {
        1
    }

    /// The policy's own mistakes, found when the runbook declares it.
    pub fn check(&self) -> Result<(), String> {
        if self.quorum == 0 {
            return Err("quorum must be at least 1".into());
        }
        if let Some(t) = &self.timeout {
            crate::duration::parse(t).map_err(|e| format!("timeout: {e}"))?;
        }
        for v in &self.via {
            if !VIAS.contains(&v.as_str()) {
                return Err(format!("via: '{v}' is not one of {}", VIAS.join(", ")));
            }
        }
        for a in &self.approvers {
            let name = a.strip_prefix("group:").unwrap_or(a);
            if name.trim().is_empty() || name.contains(char::is_whitespace) {
                return Err(format!("approvers: '{a}' is not a user name or group:NAME"));
            }
        }
        if !self.approvers.is_empty()
            && self.approvers.iter().all(|a| !a.starts_with("group:"))
            && (self.approvers.len() as u32) < self.quorum
        {
            return Err(format!(
                "quorum {} cannot be met by the {} approver(s) named",
                self.quorum,
                self.approvers.len()
            ));
        }
        Ok(())
    }

    /// One line for `runbook show`, `runbook doc` and the console.
    pub fn describe(&self) -> String {
        let mut parts = vec![];
        if self.approvers.is_empty() {
            parts.push("anyone".to_string());
        } else {
            parts.push(self.approvers.join(", "));
        }
        if self.quorum > 1 {
            parts.push(format!("{} approvals", self.quorum));
        }
        if !self.self_approval {
            parts.push("not the requester".into());
        }
        if let Some(t) = &self.timeout {
            let then = match self.on_timeout {
                OnTimeout::Cancel => "cancel",
                OnTimeout::Fail => "fail",
            };
            parts.push(format!("{then} after {t}"));
        }
        parts.join("; ")
    }
}

/// The ways a decision arrives.
/// ("local": a console with `auth = "none"`, where nobody logged in.)
pub const VIAS: [&str; 5] = ["cli", "repl", "web", "api", "local"];

/// What a waiting gate keeps in its step row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateState {
    pub message: String,
    pub policy: Option<Policy>,
    /// Who started or enqueued the run.
    pub requested_by: String,
    /// When the gate gives up (RFC 3339), from `timeout`.
    pub deadline: Option<String>,
    /// Who asked the console to resume the run: they count as requesters too.
    #[serde(default)]
    pub resumed_by: Vec<String>,
}

impl GateState {
    pub fn of(step: &StepRecord) -> Option<GateState> {
        step.result.as_ref().and_then(|r| serde_json::from_value(r.clone()).ok())
    }

    /// Everyone who asked for this run to go on: none of them decides it alone.
    pub fn requesters(&self) -> Vec<String> {
        let mut all = vec![self.requested_by.clone()];
        all.extend(self.resumed_by.iter().cloned());
        all
    }

    /// The rules a decision arriving `via` is held to. A gate without a policy is open to
    /// anyone at the command line (as it always was); in the console and the API it still
    /// refuses the requester: a login is a person, and the console promises four eyes.
    pub fn effective_policy(&self, via: &str) -> Option<Policy> {
        match (&self.policy, via) {
            (Some(p), _) => Some(p.clone()),
            (None, "web" | "api") => Some(Policy::default()),
            (None, _) => None,
        }
    }
}

/// A person deciding: their name and groups.
#[derive(Debug, Clone)]
pub struct Voter {
    pub name: String,
    pub groups: Vec<String>,
}

impl Voter {
    /// The OS user, as the console user of the same name in runbook.toml (for its groups).
    pub fn os_user() -> Voter {
        let name = crate::process::username();
        let groups = crate::config::get()
            .ok()
            .and_then(|c| c.serve.as_ref().and_then(|s| s.users.get(&name)).map(|u| u.groups.clone()))
            .unwrap_or_default();
        Voter { name, groups }
    }

    fn matches(&self, approver: &str) -> bool {
        match approver.strip_prefix("group:") {
            Some(group) => self.groups.iter().any(|g| g == group),
            None => approver == self.name,
        }
    }
}

/// Whether `voter` may decide a gate with `policy` on a run its `requesters` asked for (who
/// started or enqueued it, then who resumed it). Without a policy: anyone.
pub fn may_decide(policy: Option<&Policy>, voter: &Voter, requesters: &[String]) -> Result<(), String> {
    let Some(p) = policy else { return Ok(()) };
    if !p.self_approval && requesters.first().is_some_and(|r| *r == voter.name) {
        return Err(format!(
            "{} started this run and cannot approve it (the gate says self_approval = false)",
            voter.name
        ));
    }
    if !p.self_approval && requesters.iter().skip(1).any(|r| *r == voter.name) {
        return Err(format!("{} resumed this run and cannot approve it (self_approval = false)", voter.name));
    }
    if !p.approvers.is_empty() && !p.approvers.iter().any(|a| voter.matches(a)) {
        return Err(format!("{} is not among the gate's approvers ({})", voter.name, p.approvers.join(", ")));
    }
    Ok(())
}

/// Whether the person running the runbook at a terminal (or with `--yes`) passes the gate
/// alone: no policy, or one that lets the requester approve with a quorum of one.
pub fn passes_alone(policy: Option<&Policy>, voter: &Voter) -> bool {
    match policy {
        None => true,
        Some(p) => p.quorum <= 1 && may_decide(Some(p), voter, &[]).is_ok() && p.self_approval,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("run {0} is not waiting for approval (it is {1})")]
    NotWaiting(String, RunStatus),
    #[error("run {0} has no gate waiting for approval")]
    NoGate(String),
    #[error("not allowed: {0}")]
    NotAllowed(String),
    #[error("{0} already decided at this gate")]
    AlreadyVoted(String),
    #[error("the gate's time ran out at {0}; the run is ending as its policy says")]
    TimedOut(String),
    #[error("run {0} changed meanwhile (decided, resumed or cancelled); see `runbook show {0}`")]
    Stale(String),
    #[error("a rejection needs a reason (--comment)")]
    ReasonRequired,
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
}

/// One decision as it arrives.
#[derive(Debug, Clone)]
pub struct Decision {
    pub approve: bool,
    pub comment: Option<String>,
    /// "cli", "repl", "web", "api" or "local".
    pub via: &'static str,
}

/// The gate a run waits at, with its state.
pub async fn waiting_gate(journal: &dyn Journal, run: &RunRecord) -> Result<(StepRecord, GateState), ApprovalError> {
    if run.effective_status() != RunStatus::WaitingApproval {
        return Err(ApprovalError::NotWaiting(run.id.clone(), run.effective_status()));
    }
    let steps = journal.steps(&run.id).await?;
    let gate = steps
        .into_iter()
        .find(|s| s.kind == journal::StepKind::Approval && s.status == StepStatus::Waiting)
        .ok_or_else(|| ApprovalError::NoGate(run.id.clone()))?;
    let state = GateState::of(&gate).unwrap_or_else(|| GateState {
        message: gate.name.trim_start_matches(crate::engine::GATE_PREFIX).to_string(),
        policy: None,
        requested_by: run.user.clone(),
        deadline: None,
        resumed_by: vec![],
    });
    Ok((gate, state))
}

/// Applies a decision to the gate a run waits at, under the gate's policy.
pub async fn decide(
    journal: &dyn Journal,
    run: &RunRecord,
    voter: &Voter,
    d: &Decision,
) -> Result<(StepRecord, VoteOutcome), ApprovalError> {
    let (gate, state) = waiting_gate(journal, run).await?;
    if let Some(deadline) = &state.deadline {
        if deadline.as_str() <= journal::now_ts().as_str() {
            return Err(ApprovalError::TimedOut(deadline.clone()));
        }
    }
    let policy = state.effective_policy(d.via);
    if let Some(p) = policy.as_ref().filter(|p| !p.via.is_empty() && !p.via.iter().any(|v| v == d.via)) {
        return Err(ApprovalError::NotAllowed(format!(
            "this gate takes decisions only from {} (not {})",
            p.via.join(", "),
            d.via
        )));
    }
    may_decide(policy.as_ref(), voter, &state.requesters()).map_err(ApprovalError::NotAllowed)?;
    let comment = d.comment.as_ref().map(|c| crate::secret::redact(c.trim()).into_owned()).filter(|c| !c.is_empty());
    if !d.approve && comment.is_none() && policy.is_some() {
        return Err(ApprovalError::ReasonRequired);
    }
    let vote = VoteRecord {
        run_id: run.id.clone(),
        gate: gate.name.clone(),
        actor: voter.name.clone(),
        decision: if d.approve { "approve" } else { "reject" }.into(),
        via: d.via.into(),
        comment,
        at: journal::now_ts(),
    };
    let quorum = policy.as_ref().map_or(1, |p| p.quorum) as i64;
    let outcome = journal.vote(&vote, quorum, run.rollback == "auto").await?;
    match &outcome {
        VoteOutcome::Stale => return Err(ApprovalError::Stale(run.id.clone())),
        VoteOutcome::AlreadyVoted => return Err(ApprovalError::AlreadyVoted(voter.name.clone())),
        _ => {}
    }
    let data = serde_json::json!({
        "status": match outcome { VoteOutcome::Approved { .. } => "approved", VoteOutcome::Rejected => "rejected", _ => "vote" },
        "message": state.message,
        "actor": voter.name,
        "decision": vote.decision,
        "via": vote.via,
        "comment": vote.comment,
    });
    gate_event(journal, &run.id, &gate.name, data).await?;
    Ok((gate, outcome))
}

/// An `approval` event in the run's log (a vote, a decision, a timeout).
async fn gate_event(journal: &dyn Journal, run_id: &str, gate: &str, data: serde_json::Value) -> journal::JResult<()> {
    let event = journal::EventRecord {
        run_id: run_id.to_string(),
        ts: journal::now_ts(),
        event: "approval".into(),
        step: Some(gate.to_string()),
        data,
    };
    journal.append_events(&[event]).await
}

/// Ends the gates whose time ran out, as their policies say. Called by every worker and by
/// `runbook serve` about once a second; the journal's compare-and-swap lets one of them win.
pub async fn expire_due(journal: &dyn Journal) -> journal::JResult<Vec<String>> {
    let now = journal::now_ts();
    let mut ended = vec![];
    for run in journal.waiting_runs(1000).await? {
        let Ok((gate, state)) = waiting_gate(journal, &run).await else { continue };
        let (Some(deadline), Some(policy)) = (&state.deadline, &state.policy) else { continue };
        if deadline.as_str() > now.as_str() {
            continue;
        }
        let why = format!("approval timed out after {} ({})", policy.timeout.as_deref().unwrap_or("?"), state.message);
        if journal.expire_gate(&run.id, &gate.name, policy.on_timeout, run.rollback == "auto", &why).await? {
            gate_event(journal, &run.id, &gate.name, serde_json::json!({"status": "timed_out", "message": why}))
                .await?;
            ended.push(run.id.clone());
        }
    }
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voter(name: &str, groups: &[&str]) -> Voter {
        Voter { name: name.into(), groups: groups.iter().map(|g| g.to_string()).collect() }
    }

    #[test]
    fn the_requester_cannot_approve_unless_the_policy_allows_it() {
        let p = Policy::default();
        assert!(may_decide(Some(&p), &voter("alice", &[]), &["alice".to_string()])
            .unwrap_err()
            .contains("started this run"));
        assert!(may_decide(Some(&p), &voter("bob", &[]), &["alice".to_string()]).is_ok());
        let p = Policy { self_approval: true, ..Policy::default() };
        assert!(may_decide(Some(&p), &voter("alice", &[]), &["alice".to_string()]).is_ok());
        // Whoever resumed the run counts as a requester.
        let both = ["alice".to_string(), "bob".to_string()];
        let strict = Policy::default();
        assert!(may_decide(Some(&strict), &voter("bob", &[]), &both).unwrap_err().contains("resumed this run"));
        // Without a policy the gate stays as it always was: anyone, the requester included.
        assert!(may_decide(None, &voter("alice", &[]), &["alice".to_string()]).is_ok());
    }

    #[test]
    fn approvers_name_people_and_groups() {
        let p = Policy { approvers: vec!["group:dba".into(), "carol".into()], ..Policy::default() };
        assert!(may_decide(Some(&p), &voter("bob", &["dba"]), &["alice".to_string()]).is_ok());
        assert!(may_decide(Some(&p), &voter("carol", &[]), &["alice".to_string()]).is_ok());
        let e = may_decide(Some(&p), &voter("dave", &["web"]), &["alice".to_string()]).unwrap_err();
        assert!(e.contains("not among the gate's approvers (group:dba, carol)"), "{e}");
    }

    #[test]
    fn a_policy_that_cannot_be_met_is_refused() {
        let p = Policy { approvers: vec!["bob".into()], quorum: 2, ..Policy::default() };
        assert!(p.check().unwrap_err().contains("cannot be met"));
        assert!(Policy { quorum: 0, ..Policy::default() }.check().is_err());
        assert!(Policy { timeout: Some("soon".into()), ..Policy::default() }
            .check()
            .unwrap_err()
            .starts_with("timeout"));
    }

    #[test]
    fn only_a_permissive_policy_lets_the_runner_pass_alone() {
        let me = voter("alice", &[]);
        assert!(passes_alone(None, &me));
        assert!(!passes_alone(Some(&Policy::default()), &me));
        assert!(passes_alone(Some(&Policy { self_approval: true, ..Policy::default() }), &me));
        assert!(!passes_alone(Some(&Policy { self_approval: true, quorum: 2, ..Policy::default() }), &me));
    }
}
