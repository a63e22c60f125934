//! What the team shares: the queue, the workers alive and their leases, the schedules (next
//! fires, paused ones), REPL sessions as timelines, and the console's audit log. Each is a
//! table on a page (`table.html`) and a list in the API.
use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{json, Value};

use super::auth::{Identity, Viewer};
use super::input::Input;
use super::pages::{fail, is_api, reply};
use super::Shared;
use crate::journal::{RunFilter, RunStatus};

/// A table: its title, column names, and rows (cells, and the page a row links to).
fn table(title: &str, columns: &[&str], rows: Vec<(Vec<String>, Option<String>)>, items: Vec<Value>) -> Value {
    json!({
        "title": title,
        "columns": columns,
        "rows": rows.into_iter().map(|(cells, href)| json!({"cells": cells, "href": href})).collect::<Vec<_>>(),
        "items": items,
    })
}

/// Pages answer with the table, the API with its items.
fn answer(app: &Shared, me: &Identity, uri: &Uri, data: Value) -> Response {
    if is_api(uri) {
        return axum::Json(json!({ "items": data["items"] })).into_response();
    }
    reply(app, me, uri, "table.html", data)
}

pub async fn queue(State(app): State<Shared>, Viewer(me): Viewer, uri: Uri) -> Response {
    let filter = RunFilter { status: Some(RunStatus::Queued), limit: 500, ..Default::default() };
    let runs = match app.journal.runs(&filter).await {
        Ok(r) => r,
        Err(e) => return fail(&uri, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let rows = runs
        .iter()
        .map(|r| {
            let cells = vec![
                r.id.clone(),
                r.runbook.clone(),
                r.user.clone(),
                r.trigger.clone(),
                r.created_at.clone(),
                r.not_before.clone().unwrap_or_default(),
            ];
            (cells, Some(format!("/runs/{}", r.id)))
        })
        .collect();
    let items = runs.iter().map(super::runs::row).collect();
    let data = table("Queue", &["run", "runbook", "by", "trigger", "queued", "not before"], rows, items);
    answer(&app, &me, &uri, data)
}

/// Workers are seen through the runs they hold: owner, lease and heartbeat.
pub async fn workers(State(app): State<Shared>, Viewer(me): Viewer, uri: Uri) -> Response {
    let mut active = vec![];
    for status in [RunStatus::Running, RunStatus::RollingBack] {
        let filter = RunFilter { status: Some(status), limit: 500, ..Default::default() };
        match app.journal.runs(&filter).await {
            Ok(r) => active.extend(r),
            Err(e) => return fail(&uri, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }
    let mut by: BTreeMap<(String, i64), Vec<&crate::journal::RunRecord>> = BTreeMap::new();
    for r in &active {
        by.entry((r.owner.host.clone(), r.owner.pid)).or_default().push(r);
    }
    let mut rows = vec![];
    let mut items = vec![];
    for ((host, pid), runs) in &by {
        let alive = runs.iter().all(|r| !r.is_orphaned());
        let beat = runs.iter().map(|r| r.heartbeat_at.as_str()).max().unwrap_or("");
        let lease = runs.first().map_or(0, |r| r.lease_secs);
        let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        rows.push((
            vec![
                host.clone(),
                pid.to_string(),
                if alive { "alive".into() } else { "gone (its runs are taken over)".into() },
                beat.to_string(),
                format!("{lease} s"),
                ids.join(", "),
            ],
            runs.first().map(|r| format!("/runs/{}", r.id)),
        ));
        items.push(
            json!({"host": host, "pid": pid, "alive": alive, "heartbeat_at": beat, "lease_secs": lease, "runs": ids}),
        );
    }
    let data = table("Workers", &["host", "pid", "state", "last heartbeat", "lease", "runs"], rows, items);
    answer(&app, &me, &uri, data)
}

pub async fn schedules(State(app): State<Shared>, Viewer(me): Viewer, uri: Uri) -> Response {
    let cfg = match crate::config::get() {
        Ok(c) => c,
        Err(e) => return fail(&uri, StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let mut rows = vec![];
    let mut items = vec![];
    for s in &cfg.checked_schedules {
        let d = match crate::scheduler::describe(app.journal.as_ref(), s, chrono::Utc::now()).await {
            Ok(d) => d,
            Err(e) => return fail(&uri, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let next: Vec<String> = d["next"].as_array().into_iter().flatten().map(text).collect();
        let last = match d["last_fire"].as_object() {
            Some(f) => format!("{} {}", text(&f["fire_at"]), text(&f["outcome"])),
            None => "never fired".into(),
        };
        let state = match (d["enabled"].as_bool(), d["paused"].as_bool()) {
            (Some(false), _) => "disabled",
            (_, Some(true)) => "paused",
            _ => "",
        };
        rows.push((
            vec![text(&d["name"]), text(&d["runbook"]), text(&d["cron"]), next.join(", "), last, state.into()],
            None,
        ));
        items.push(d);
    }
    let mut data = table("Schedules", &["name", "runbook", "cron", "next fire", "last", "state"], rows, items);
    data["unpause"] = json!(me.can_operate());
    answer(&app, &me, &uri, data)
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionForm {
    #[serde(default)]
    csrf: Option<String>,
}

pub async fn unpause(
    State(app): State<Shared>,
    me: Identity,
    uri: Uri,
    headers: HeaderMap,
    Path(name): Path<String>,
    Input(form): Input<ActionForm>,
) -> Response {
    if let Err(r) = me.check_csrf(super::runs::csrf(&headers, form.csrf.as_deref())) {
        return *r;
    }
    if !me.can_operate() {
        return fail(&uri, StatusCode::FORBIDDEN, "unpausing a schedule needs the operator role");
    }
    let known = crate::config::get().map(|c| c.checked_schedules.iter().any(|s| s.name == name)).unwrap_or(false);
    if !known {
        return fail(&uri, StatusCode::NOT_FOUND, &format!("no schedule named {name}"));
    }
    if let Err(e) = app.journal.unpause(&name, &me.name).await {
        return fail(&uri, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    super::runs::audit(&app, &me, "unpause", &name, "").await;
    if is_api(&uri) {
        return axum::Json(json!({"schedule": name, "outcome": "unpaused"})).into_response();
    }
    Redirect::to("/schedules").into_response()
}

pub async fn sessions(State(app): State<Shared>, Viewer(me): Viewer, uri: Uri) -> Response {
    let list = match app.journal.sessions(200).await {
        Ok(s) => s,
        Err(e) => return fail(&uri, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let rows = list
        .iter()
        .map(|s| {
            let cells = vec![
                s.id.clone(),
                s.who.clone(),
                s.host.clone(),
                s.started_at.clone(),
                s.ended_at.clone().unwrap_or_else(|| "open".into()),
                s.run_id.clone().unwrap_or_default(),
                s.events.to_string(),
            ];
            (cells, Some(format!("/sessions/{}", s.id)))
        })
        .collect();
    let items = list.iter().map(|s| json!(s)).collect();
    let data = table("REPL sessions", &["session", "who", "host", "started", "ended", "run", "events"], rows, items);
    answer(&app, &me, &uri, data)
}

pub async fn session(State(app): State<Shared>, Viewer(me): Viewer, uri: Uri, Path(id): Path<String>) -> Response {
    let s = match app.journal.find_session(&id).await {
        Ok(s) => s,
        Err(e) => return fail(&uri, StatusCode::NOT_FOUND, &e.to_string()),
    };
    let events = match app.journal.session_events(&s.id).await {
        Ok(e) => e,
        Err(e) => return fail(&uri, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let rows = events
        .iter()
        .map(|e| {
            let cells = vec![
                e.at.clone(),
                e.kind.clone(),
                e.input.clone(),
                if e.ok { "ok".into() } else { "error".into() },
                format!("{} ms", e.duration_ms),
                e.output.clone(),
            ];
            (cells, e.run_id.as_ref().map(|r| format!("/runs/{r}")))
        })
        .collect();
    let items = events.iter().map(|e| json!(e)).collect();
    let title = format!("Session {} by {} on {}", s.id, s.who, s.host);
    let data = table(&title, &["at", "kind", "input", "", "took", "output"], rows, items);
    answer(&app, &me, &uri, data)
}

pub async fn audit(State(app): State<Shared>, me: Identity, uri: Uri) -> Response {
    if !me.is_admin() {
        return fail(&uri, StatusCode::FORBIDDEN, "the audit log is for admins");
    }
    let log = match app.journal.audit_log(1000).await {
        Ok(l) => l,
        Err(e) => return fail(&uri, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let rows = log
        .iter()
        .map(|a| {
            let href = (!a.target.is_empty() && a.target.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
                .then(|| format!("/runs/{}", a.target));
            (
                vec![
                    a.at.clone(),
                    a.actor.clone(),
                    a.action.clone(),
                    a.target.clone(),
                    a.detail.clone(),
                    a.remote.clone(),
                ],
                href,
            )
        })
        .collect();
    let items = log.iter().map(|a| json!(a)).collect();
    let data = table("Audit log", &["at", "who", "action", "on", "detail", "from"], rows, items);
    answer(&app, &me, &uri, data)
}
