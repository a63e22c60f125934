//! Runs: the list (filtered, paged by keyset so 100,000 runs list as fast as 10), a run's
//! page (timeline, per-host outcomes, params with secrets as `<secret:NAME>`, the gate with
//! its policy and votes, the log), and what a role may do to it: approve or reject, cancel,
//! resume.
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Identity, Viewer};
use super::input::Input;
use super::pages::{fail, is_api, reply};
use super::Shared;
use crate::approval::{self, ApprovalError, Decision};
use crate::journal::{self, AuditRecord, RunFilter, RunRecord, RunStatus, StepKind, StepStatus, VoteOutcome};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    runbook: Option<String>,
    status: Option<String>,
    user: Option<String>,
    since: Option<String>,
    /// `CREATED_AT~ID` of the last run of the previous page.
    before: Option<String>,
    limit: Option<i64>,
}

fn some(s: &Option<String>) -> Option<String> {
    s.as_ref().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

pub fn took(run: &RunRecord) -> String {
    let end = run.finished_at.as_deref().and_then(|f| chrono::DateTime::parse_from_rfc3339(f).ok());
    let start = chrono::DateTime::parse_from_rfc3339(&run.started_at).ok();
    match (start, end) {
        (Some(s), Some(e)) => crate::duration::human(e.signed_duration_since(s).to_std().unwrap_or_default()),
        _ => String::new(),
    }
}

pub fn row(run: &RunRecord) -> Value {
    json!({
        "id": run.id, "runbook": run.runbook, "status": run.effective_status(), "user": run.user,
        "trigger": run.trigger, "created_at": run.created_at, "started_at": run.started_at,
        "finished_at": run.finished_at, "took": took(run), "error": run.error,
    })
}

pub async fn list(State(app): State<Shared>, Viewer(me): Viewer, uri: Uri, Query(q): Query<ListQuery>) -> Response {
    let status = match some(&q.status) {
        Some(s) => match RunStatus::parse(&s) {
            Ok(st) => Some(st),
            Err(_) => return fail(&uri, StatusCode::BAD_REQUEST, &format!("unknown status '{s}'")),
        },
        None => None,
    };
    let before = some(&q.before).and_then(|b| b.split_once('~').map(|(a, i)| (a.to_string(), i.to_string())));
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let filter = RunFilter {
        runbook: some(&q.runbook),
        status,
        user: some(&q.user),
        since: some(&q.since),
        before,
        limit: limit + 1,
        ..RunFilter::default()
    };
    let mut runs = match app.journal.runs(&filter).await {
        Ok(r) => r,
        Err(e) => return fail(&uri, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let more = runs.len() as i64 > limit;
    runs.truncate(limit as usize);
    let next = runs.last().filter(|_| more).map(|r| format!("{}~{}", r.created_at, r.id));
    let data = json!({
        "runs": runs.iter().map(row).collect::<Vec<_>>(),
        "next": next,
        "filter": {"runbook": some(&q.runbook), "status": some(&q.status), "user": some(&q.user), "since": some(&q.since)},
        "statuses": RunStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    });
    reply(&app, &me, &uri, "runs.html", data)
}

/// A run by its exact id (links carry whole ids; a prefix search would scan the journal).
pub async fn find(app: &Shared, uri: &Uri, id: &str) -> Result<RunRecord, Response> {
    match app.journal.run(id).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(fail(uri, StatusCode::NOT_FOUND, &format!("no run {id}"))),
        Err(e) => Err(fail(uri, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
    }
}

/// What the page (and the API) show of a run.
async fn run_view(
    app: &Shared,
    me: &Identity,
    run: &RunRecord,
    with_log: bool,
) -> Result<Value, journal::JournalError> {
    let steps = app.journal.steps(&run.id).await?;
    let items = app.journal.items(&run.id, None).await?;
    let votes = app.journal.votes(&run.id).await?;
    let events = if with_log { app.journal.events(&run.id).await? } else { vec![] };
    let status = run.effective_status();
    let steps_json: Vec<Value> = steps
        .iter()
        .map(|s| {
            let its: Vec<Value> = items
                .iter()
                .filter(|i| i.step == s.name || i.step == format!("undo {}", s.name))
                .map(|i| json!({"item": i.item, "status": i.status, "error": i.error}))
                .collect();
            let gate = (s.kind == StepKind::Approval).then(|| approval::GateState::of(s)).flatten();
            let status = match (s.status, status) {
                (StepStatus::Running, RunStatus::Interrupted) => "interrupted",
                (st, _) => st.as_str(),
            };
            json!({
                "name": s.name, "kind": s.kind, "status": status, "attempts": s.attempts, "line": s.line,
                "took": s.duration_ms.map(|m| crate::duration::human(std::time::Duration::from_millis(m.max(0) as u64))),
                "result": s.result.as_ref().filter(|r| s.kind == StepKind::Step && !r.is_null()).map(|r| short(&r.to_string(), 200)),
                "error": s.error, "actor": s.actor, "undo": s.undo_status.as_deref().filter(|u| *u != "pending"),
                "undo_error": s.undo_error, "items": its,
                "policy": gate.as_ref().and_then(|g| g.policy.as_ref()).map(|p| p.describe()),
                "votes": votes.iter().filter(|v| v.gate == s.name).collect::<Vec<_>>(),
            })
        })
        .collect();
    let gate = match approval::waiting_gate(app.journal.as_ref(), run).await {
        Ok((g, state)) => {
            let allowed = if !me.can_approve(&run.runbook) {
                Err(format!("your roles do not let you approve runbook {}", run.runbook))
            } else {
                let policy = state.effective_policy(me.via_name());
                match policy.as_ref().filter(|p| !p.via.is_empty() && !p.via.iter().any(|v| v == me.via_name())) {
                    Some(p) => Err(format!("this gate takes decisions only from {}", p.via.join(", "))),
                    None => approval::may_decide(policy.as_ref(), &me.voter(), &state.requesters()),
                }
            };
            let voted = votes.iter().any(|v| v.gate == g.name && v.actor == me.name);
            Some(json!({
                "name": g.name, "message": state.message,
                "policy": state.policy.as_ref().map(|p| p.describe()),
                "quorum": state.policy.as_ref().map_or(1, |p| p.quorum),
                "requested_by": state.requested_by, "deadline": state.deadline,
                "votes": votes.iter().filter(|v| v.gate == g.name).collect::<Vec<_>>(),
                "can_decide": allowed.is_ok() && !voted,
                "why_not": if voted { Some(format!("{} already decided at this gate", me.name)) } else { allowed.err() },
            }))
        }
        Err(_) => None,
    };
    let log: Vec<Value> = events
        .iter()
        .rev()
        .take(300)
        .rev()
        .map(|e| {
            let text = crate::output::describe_event(&e.event, e.step.as_deref(), &e.data)
                .unwrap_or_else(|| format!("{} {}", e.event, e.data));
            json!({"ts": e.ts, "text": crate::secret::redact(&text)})
        })
        .collect();
    let params: Vec<Value> = run
        .params
        .as_object()
        .map(|o| o.iter().map(|(k, v)| json!({"name": k, "value": v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())})).collect())
        .unwrap_or_default();
    let stopped = matches!(status, RunStatus::Failed | RunStatus::Interrupted)
        && !matches!(run.status, RunStatus::RollingBack | RunStatus::RollbackFailed);
    Ok(json!({
        "run": {
            "id": run.id, "runbook": run.runbook, "path": run.path, "status": status, "user": run.user,
            "trigger": run.trigger, "host": run.owner.host, "pid": run.owner.pid, "created_at": run.created_at,
            "started_at": run.started_at, "finished_at": run.finished_at, "took": took(run), "error": run.error,
            "rollback": run.rollback, "dry_run": run.dry_run, "params": params,
        },
        "steps": steps_json,
        "gate": gate,
        "log": log,
        "live": !status.is_final() && status != RunStatus::Failed,
        "actions": {
            "cancel": me.can_operate() && !status.is_final(),
            "resume": me.can_operate() && stopped && crate::scheduler::worker_run(run),
            "skip": me.can_operate() && stopped,
        },
    }))
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

pub async fn show(State(app): State<Shared>, Viewer(me): Viewer, uri: Uri, Path(id): Path<String>) -> Response {
    let run = match find(&app, &uri, &id).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match run_view(&app, &me, &run, true).await {
        Ok(data) => reply(&app, &me, &uri, "run.html", data),
        Err(e) => fail(&uri, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The timeline alone: what the live view swaps in when the run moves.
pub async fn timeline(State(app): State<Shared>, Viewer(me): Viewer, uri: Uri, Path(id): Path<String>) -> Response {
    let run = match find(&app, &uri, &id).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match run_view(&app, &me, &run, false).await {
        Ok(data) => reply(&app, &me, &uri, "timeline.html", data),
        Err(e) => fail(&uri, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The CSRF token of a state change: the form's `csrf` field, or the `X-CSRF-Token` header.
pub fn csrf<'a>(headers: &'a HeaderMap, field: Option<&'a str>) -> Option<&'a str> {
    field.or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()))
}

pub async fn audit(app: &Shared, me: &Identity, action: &str, target: &str, detail: &str) {
    let via = match me.via {
        super::auth::Via::Session { .. } => "session",
        super::auth::Via::Token => "token",
        super::auth::Via::Proxy => "proxy",
        super::auth::Via::Local => "local",
    };
    let record = AuditRecord {
        at: journal::now_ts(),
        actor: me.name.clone(),
        action: action.into(),
        target: target.into(),
        detail: crate::secret::redact(detail).into_owned(),
        remote: format!("{} ({via})", me.remote),
    };
    if let Err(e) = app.journal.audit(&record).await {
        tracing::warn!("serve: cannot write the audit log: {e}");
    }
}

/// After a state change: the page goes back to the run, the API gets the outcome.
fn done(uri: &Uri, run_id: &str, outcome: Value) -> Response {
    if is_api(uri) {
        return axum::Json(outcome).into_response();
    }
    Redirect::to(&format!("/runs/{run_id}")).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveForm {
    /// "approve" or "reject".
    decision: String,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    csrf: Option<String>,
}

pub async fn approve(
    State(app): State<Shared>,
    me: Identity,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    Input(form): Input<ApproveForm>,
) -> Response {
    if let Err(r) = me.check_csrf(csrf(&headers, form.csrf.as_deref())) {
        return *r;
    }
    let run = match find(&app, &uri, &id).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if !me.can_approve(&run.runbook) {
        return fail(
            &uri,
            StatusCode::FORBIDDEN,
            &format!("your roles do not let you approve runbook {}", run.runbook),
        );
    }
    let approve = match form.decision.as_str() {
        "approve" => true,
        "reject" => false,
        other => return fail(&uri, StatusCode::BAD_REQUEST, &format!("decision: '{other}' (approve or reject)")),
    };
    let decision = Decision { approve, comment: form.comment.clone(), via: me.via_name() };
    let result = approval::decide(app.journal.as_ref(), &run, &me.voter(), &decision).await;
    let action = if approve { "approve" } else { "reject" };
    match result {
        Ok((gate, outcome)) => {
            let (what, extra) = match &outcome {
                VoteOutcome::Pending { approvals } => ("pending", json!({"approvals": approvals})),
                VoteOutcome::Approved { approvers } => ("approved", json!({"approvers": approvers})),
                VoteOutcome::Rejected => ("rejected", json!({})),
                VoteOutcome::Stale | VoteOutcome::AlreadyVoted => ("stale", json!({})),
            };
            let detail = format!(
                "{}: {what}{}",
                gate.name,
                form.comment.as_deref().map(|c| format!(" ({c})")).unwrap_or_default()
            );
            audit(&app, &me, action, &run.id, &detail).await;
            done(&uri, &run.id, json!({"run_id": run.id, "gate": gate.name, "outcome": what, "detail": extra}))
        }
        Err(e) => {
            audit(&app, &me, &format!("{action}_refused"), &run.id, &e.to_string()).await;
            let status = match e {
                ApprovalError::NotAllowed(_) => StatusCode::FORBIDDEN,
                ApprovalError::Journal(_) => StatusCode::INTERNAL_SERVER_ERROR,
                ApprovalError::ReasonRequired => StatusCode::BAD_REQUEST,
                _ => StatusCode::CONFLICT,
            };
            fail(&uri, status, &e.to_string())
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionForm {
    #[serde(default)]
    csrf: Option<String>,
}

/// The start of every operator's action on a run: the session's CSRF token, the operator
/// role, and the run itself. A run whose rollback stopped half-way is not the console's to
/// move: only `runbook resume` (which finishes the rollback) or `runbook cancel` may.
async fn operated(
    app: &Shared,
    me: &Identity,
    uri: &Uri,
    headers: &HeaderMap,
    token: Option<&str>,
    id: &str,
    what: &str,
) -> Result<RunRecord, Response> {
    me.check_csrf(csrf(headers, token)).map_err(|r| *r)?;
    if !me.can_operate() {
        return Err(fail(uri, StatusCode::FORBIDDEN, &format!("{what} needs the operator role")));
    }
    let run = find(app, uri, id).await?;
    if matches!(run.status, RunStatus::RollingBack | RunStatus::RollbackFailed) {
        return Err(fail(
            uri,
            StatusCode::CONFLICT,
            &format!(
                "run {} stopped while rolling back: `runbook resume {}` finishes the rollback where its hosts are reachable",
                run.id, run.id
            ),
        ));
    }
    Ok(run)
}

pub async fn cancel(
    State(app): State<Shared>,
    me: Identity,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    Input(form): Input<ActionForm>,
) -> Response {
    let run = match operated(&app, &me, &uri, &headers, form.csrf.as_deref(), &id, "cancelling").await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let status = run.effective_status();
    let j = app.journal.as_ref();
    let outcome = if status.is_final() {
        return fail(&uri, StatusCode::CONFLICT, &format!("run {} already ended ({status})", run.id));
    } else if status.is_active() {
        j.request_cancel(&run.id, true).await.map(|_| "cancel requested: the run stops at its next heartbeat")
    } else if run.rollback == "auto" && status != RunStatus::Queued {
        return fail(
            &uri,
            StatusCode::CONFLICT,
            &format!(
                "run {} rolls back when cancelled (rollback = \"auto\"), which runs its undos: use `runbook cancel {}` \
                 where its hosts are reachable, or `runbook cancel {} --no-rollback`",
                run.id, run.id, run.id
            ),
        );
    } else {
        let why = format!("cancelled by {} (console)", me.name);
        match j.close_stopped_run(&run.id, run.status, &run.owner, RunStatus::Cancelled, &why).await {
            Ok(true) => {
                if let Some(lock) = &run.lock_name {
                    let _ = j.release_lock(lock, &run.id).await;
                }
                Ok("cancelled")
            }
            Ok(false) => return fail(&uri, StatusCode::CONFLICT, &format!("run {} changed meanwhile; reload", run.id)),
            Err(e) => Err(e),
        }
    };
    match outcome {
        Ok(what) => {
            audit(&app, &me, "cancel", &run.id, what).await;
            done(&uri, &run.id, json!({"run_id": run.id, "outcome": what}))
        }
        Err(e) => fail(&uri, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

pub async fn resume(
    State(app): State<Shared>,
    me: Identity,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    Input(form): Input<ActionForm>,
) -> Response {
    let run = match operated(&app, &me, &uri, &headers, form.csrf.as_deref(), &id, "resuming").await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let status = run.effective_status();
    if !matches!(status, RunStatus::Failed | RunStatus::Interrupted) {
        return fail(
            &uri,
            StatusCode::CONFLICT,
            &format!("run {} is {status}: only a failed or interrupted run is resumed", run.id),
        );
    }
    match app.journal.request_resume(&run.id, run.status, &run.owner, &me.name).await {
        Ok(true) => {
            audit(&app, &me, "resume", &run.id, "left for a worker to resume").await;
            done(&uri, &run.id, json!({"run_id": run.id, "outcome": "a worker resumes it"}))
        }
        Ok(false) if !crate::scheduler::worker_run(&run) => fail(
            &uri,
            StatusCode::CONFLICT,
            &format!(
                "run {} was started by {} with `runbook run` ({}): it is theirs to resume (`runbook resume {}`), not a worker's",
                run.id, run.user, run.trigger, run.id
            ),
        ),
        Ok(false) => fail(&uri, StatusCode::CONFLICT, &format!("run {} changed meanwhile (or a cancel is pending); reload", run.id)),
        Err(e) => fail(&uri, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkipForm {
    step: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    csrf: Option<String>,
}

/// Records a failed step of a stopped run as skipped, with the reason, as the REPL's `:skip`
/// does; a resume then passes over it.
pub async fn skip(
    State(app): State<Shared>,
    me: Identity,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    Input(form): Input<SkipForm>,
) -> Response {
    let run = match operated(&app, &me, &uri, &headers, form.csrf.as_deref(), &id, "skipping a step").await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let reason = crate::secret::redact(form.reason.trim()).into_owned();
    if reason.is_empty() {
        return fail(&uri, StatusCode::BAD_REQUEST, "a skip needs a reason: it is recorded in the run's journal");
    }
    let status = run.effective_status();
    if !matches!(status, RunStatus::Failed | RunStatus::Interrupted) {
        return fail(
            &uri,
            StatusCode::CONFLICT,
            &format!("run {} is {status}: only a stopped run's step is skipped", run.id),
        );
    }
    match app.journal.skip_step(&run.id, run.status, &run.owner, &form.step, &me.name, &reason).await {
        Ok(true) => {
            let event = journal::EventRecord {
                run_id: run.id.clone(),
                ts: journal::now_ts(),
                event: "step_skipped".into(),
                step: Some(form.step.clone()),
                data: json!({"actor": me.name, "reason": reason, "via": me.via_name()}),
            };
            let _ = app.journal.append_events(&[event]).await;
            audit(&app, &me, "skip", &run.id, &format!("{}: {reason}", form.step)).await;
            done(&uri, &run.id, json!({"run_id": run.id, "step": form.step, "outcome": "skipped"}))
        }
        Ok(false) => fail(
            &uri,
            StatusCode::CONFLICT,
            &format!(
                "step '{}' of run {} is not a failed or interrupted step of a stopped run (reload)",
                form.step, run.id
            ),
        ),
        Err(e) => fail(&uri, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
