//! The catalogue: the runbooks of `[serve] runbooks` (default `runbooks/`), each with its
//! guide (`runbook doc`) and a form made from its param declarations, which enqueues a run
//! validated as `runbook enqueue` validates it. Secret params are never asked for here: a
//! queued run's params are stored in the journal, so secrets reach the workers through their
//! environment (the param's `env`).
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{json, Value};

use super::auth::{Identity, Viewer};
use super::input::Input;
use super::pages::{fail, is_api, reply};
use super::Shared;
use crate::engine::ParamType;

/// One runbook of the catalogue, as its plan describes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    pub name: String,
    pub path: String,
    pub description: Option<String>,
    pub params: Vec<Value>,
    pub steps: usize,
    pub gates: usize,
    /// The guide, as `runbook doc` writes it.
    #[serde(skip)]
    pub guide: String,
    /// Why the runbook could not be read, if it could not.
    pub problem: Option<String>,
}

/// Plans are cached by file and modification time: a page view evaluates nothing twice.
#[derive(Default)]
pub struct Catalogue {
    cache: Mutex<HashMap<PathBuf, (SystemTime, Entry)>>,
}

/// Runs an engine future (not `Send`: Lua) on a thread of its own.
pub async fn on_engine_thread<T, F, Fut>(f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let local = tokio::task::LocalSet::new();
        Ok(local.block_on(&rt, f()))
    })
    .await
    .map_err(|e| e.to_string())?
}

fn files(app: &Shared) -> Vec<PathBuf> {
    let roots: Vec<String> =
        if app.config.runbooks.is_empty() { vec!["runbooks".into()] } else { app.config.runbooks.clone() };
    let mut out = vec![];
    for r in roots {
        let p = app.base.join(&r);
        if p.is_file() {
            out.push(p);
        } else if let Ok(dir) = std::fs::read_dir(&p) {
            let mut found: Vec<PathBuf> = dir
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    name.ends_with(".lua") && !name.ends_with("_test.lua")
                })
                .collect();
            found.sort();
            out.extend(found);
        }
    }
    out
}

async fn entry(app: &Shared, path: &Path) -> Entry {
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
    if let Some((t, e)) = app.catalogue.cache.lock().unwrap_or_else(|p| p.into_inner()).get(path) {
        if *t == mtime {
            return e.clone();
        }
    }
    let p = path.to_path_buf();
    let planned = on_engine_thread(move || async move {
        let outcome = crate::commands::evaluate_plan(&p).await.map_err(|e| e.to_string())?;
        let guide = crate::commands::doc::render(&p, &outcome).map_err(|e| e.to_string())?;
        Ok::<_, String>((outcome, guide))
    })
    .await
    .and_then(|r| r);
    let shown = path.strip_prefix(&app.base).unwrap_or(path).display().to_string();
    let e = match planned {
        Ok((outcome, guide)) => {
            let decl = outcome.decl.as_ref();
            Entry {
                name: decl.map(|d| d.name.clone()).unwrap_or_else(|| shown.clone()),
                path: shown,
                description: decl.and_then(|d| d.description.clone()),
                params: decl
                    .map(|d| {
                        d.params
                            .iter()
                            .map(|p| {
                                json!({
                                    "name": p.name, "type": p.ty.as_str(), "required": p.required,
                                    "default": p.default.as_ref().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())),
                                    "choices": p.choices, "description": p.description, "env": p.env,
                                    "secret": p.ty == ParamType::Secret,
                                    "boolean": p.ty == ParamType::Boolean,
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                steps: outcome.plan.iter().filter(|s| s.kind != "approval").count(),
                gates: outcome.plan.iter().filter(|s| s.kind == "approval").count(),
                guide: crate::secret::redact(&guide).into_owned(),
                problem: None,
            }
        }
        Err(problem) => Entry {
            name: shown.clone(),
            path: shown,
            description: None,
            params: vec![],
            steps: 0,
            gates: 0,
            guide: String::new(),
            problem: Some(crate::secret::redact(&problem).into_owned()),
        },
    };
    app.catalogue.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(path.to_path_buf(), (mtime, e.clone()));
    e
}

async fn all(app: &Shared) -> Vec<(PathBuf, Entry)> {
    let mut out = vec![];
    for f in files(app) {
        let e = entry(app, &f).await;
        out.push((f, e));
    }
    out
}

pub async fn list(State(app): State<Shared>, Viewer(me): Viewer, uri: Uri) -> Response {
    let entries: Vec<Entry> = all(&app).await.into_iter().map(|(_, e)| e).collect();
    reply(&app, &me, &uri, "runbooks.html", json!({ "runbooks": entries }))
}

async fn find(app: &Shared, name: &str) -> Option<(PathBuf, Entry)> {
    all(app).await.into_iter().find(|(_, e)| e.name == name && e.problem.is_none())
}

pub async fn show(State(app): State<Shared>, Viewer(me): Viewer, uri: Uri, UrlPath(name): UrlPath<String>) -> Response {
    let Some((_, e)) = find(&app, &name).await else {
        return fail(&uri, StatusCode::NOT_FOUND, &format!("no runbook named {name} in the catalogue"));
    };
    let recent = app
        .journal
        .runs(&crate::journal::RunFilter { runbook: Some(e.name.clone()), limit: 10, ..Default::default() })
        .await
        .unwrap_or_default();
    let data = json!({
        "runbook": e, "guide": e.guide,
        "recent": recent.iter().map(super::runs::row).collect::<Vec<_>>(),
        "can_run": me.can_operate(),
    });
    reply(&app, &me, &uri, "runbook.html", data)
}

pub async fn enqueue(
    State(app): State<Shared>,
    me: Identity,
    uri: Uri,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    Input(form): Input<BTreeMap<String, Value>>,
) -> Response {
    let token = form.get("csrf").and_then(|v| v.as_str());
    if let Err(r) = me.check_csrf(super::runs::csrf(&headers, token)) {
        return *r;
    }
    if !me.can_operate() {
        return fail(&uri, StatusCode::FORBIDDEN, "starting a run needs the operator role");
    }
    let Some((path, e)) = find(&app, &name).await else {
        return fail(&uri, StatusCode::NOT_FOUND, &format!("no runbook named {name} in the catalogue"));
    };
    // Form fields are `p.NAME`; the API takes { "params": { NAME: VALUE } }.
    let mut params: Vec<(String, String)> = vec![];
    let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    if let Some(Value::Object(p)) = form.get("params") {
        params.extend(p.iter().map(|(k, v)| (k.clone(), text(v))));
    }
    for (k, v) in &form {
        if let Some(name) = k.strip_prefix("p.") {
            let v = text(v);
            if !v.is_empty() {
                params.push((name.to_string(), v));
            }
        }
    }
    let unknown: Vec<&str> = params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !e.params.iter().any(|p| p["name"].as_str() == Some(k)))
        .collect();
    if !unknown.is_empty() {
        return fail(&uri, StatusCode::BAD_REQUEST, &format!("unknown param(s) of {name}: {}", unknown.join(", ")));
    }
    let p = path.clone();
    let ps = params.clone();
    let made =
        on_engine_thread(move || async move { crate::scheduler::queued_run(&p, &ps, "enqueue", None, None).await })
            .await;
    let mut run = match made {
        Ok(Ok(run)) => run,
        Ok(Err(e)) => return fail(&uri, StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e) => return fail(&uri, StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    // The person who asked is the run's requester (the gates' self-approval rule reads it).
    run.user = me.name.clone();
    run.trigger = "enqueue".into();
    if let Err(e) = app.journal.create_run(&run).await {
        return fail(&uri, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    let shown: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    super::runs::audit(&app, &me, "enqueue", &run.id, &format!("{name} {}", shown.join(" "))).await;
    if is_api(&uri) {
        return (StatusCode::CREATED, axum::Json(json!({"run_id": run.id, "status": "queued"}))).into_response();
    }
    Redirect::to(&format!("/runs/{}", run.id)).into_response()
}
