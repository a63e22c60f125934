//! `runbook { name, description, params, lock, rollback }`: the declaration that opens every
//! runbook. Validates it and the params, then creates (or takes over) the run in the journal.
use std::time::Instant;

use mlua::{Lua, Table, Value};
use serde::Serialize;
use serde_json::json;

use super::params::{self, ParamSpec, Sources};
use super::{Ctx, Halt, Mode};
use crate::journal::{Claim, LockOutcome, RunRecord, RunStatus};
use crate::lua::errors::{self, Location};

#[derive(Debug, Clone, Serialize)]
pub struct Declaration {
    pub name: String,
    pub description: Option<String>,
    pub params: Vec<ParamSpec>,
    pub lock: Option<String>,
    pub rollback: String,
    pub line: u32,
}

impl Declaration {
    pub fn rollback_auto(&self) -> bool {
        self.rollback == "auto"
    }
}

const KEYS: &[&str] = &["name", "description", "params", "lock", "rollback"];

fn parse(lua: &Lua, v: Value, line: u32) -> Result<Declaration, String> {
    let Value::Table(t) = v else {
        return Err(format!("runbook expects a table: runbook {{ name = \"...\" }}, got a {}", v.type_name()));
    };
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair.map_err(|e| e.to_string())?;
        let key = match &k {
            Value::String(s) => s.to_string_lossy(),
            other => return Err(format!("runbook{{}}: unexpected {} key", other.type_name())),
        };
        if !KEYS.contains(&key.as_str()) {
            return Err(format!("runbook{{}}: unknown key '{key}' (known: {})", KEYS.join(", ")));
        }
    }
    let name: String = match t.get::<Value>("name").map_err(|e| e.to_string())? {
        Value::String(s) => s.to_string_lossy(),
        Value::Nil => return Err("runbook{}: `name` is required".into()),
        other => return Err(format!("runbook{{}}: `name` must be a string, got a {}", other.type_name())),
    };
    if name.trim().is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err("runbook{}: `name` must be 1 to 100 printable characters".into());
    }
    let description = opt_string(&t, "description")?;
    let lock = opt_string(&t, "lock")?;
    if lock.as_deref().is_some_and(|l| l.trim().is_empty()) {
        return Err("runbook{}: `lock` must not be empty".into());
    }
    let rollback = opt_string(&t, "rollback")?.unwrap_or_else(|| "manual".into());
    if rollback != "auto" && rollback != "manual" {
        return Err(format!("runbook{{}}: `rollback` is \"auto\" or \"manual\", got \"{rollback}\""));
    }
    let params = match t.get::<Value>("params").map_err(|e| e.to_string())? {
        Value::Nil => Vec::new(),
        Value::Table(p) => params::parse_specs(lua, &p)?,
        other => return Err(format!("runbook{{}}: `params` must be a table, got a {}", other.type_name())),
    };
    Ok(Declaration { name, description, params, lock, rollback, line })
}

fn opt_string(t: &Table, key: &str) -> Result<Option<String>, String> {
    match t.get::<Value>(key).map_err(|e| e.to_string())? {
        Value::Nil => Ok(None),
        Value::String(s) => Ok(Some(s.to_string_lossy())),
        other => Err(format!("runbook{{}}: `{key}` must be a string, got a {}", other.type_name())),
    }
}

pub fn new_run_id() -> String {
    // 32 random bits: a thousand runs queued in one second collide with odds of 1 in 10,000.
    format!("{}-{:08x}", chrono::Utc::now().format("%Y%m%d-%H%M%S"), rand::random::<u32>())
}

pub(crate) async fn runbook(lua: Lua, v: Value) -> mlua::Result<()> {
    let ctx = Ctx::from_lua(&lua)?;
    ctx.refuse_in_repl("runbook{}")?;
    ctx.check_halt()?;
    ctx.refuse_in_coroutine(&lua, "runbook{}")?;
    let loc = errors::caller(&lua).unwrap_or(Location { file: ctx.file.clone(), line: 0 });
    let first_line = ctx.st.borrow().decl.as_ref().map(|d| d.line);
    if let Some(first_line) = first_line {
        return Err(
            ctx.raise(Halt::Declaration(format!("{loc}: runbook{{}} is declared twice (first at line {first_line})")))
        );
    }
    let decl = parse(&lua, v, loc.line).map_err(|m| ctx.raise(Halt::Declaration(format!("{loc}: {m}"))))?;

    let file_table = match &ctx.params_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ctx.raise(Halt::Params(vec![format!("params file {}: {e}", path.display())])))?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| {
                let msg = e.to_string().replace('\n', " ");
                ctx.raise(Halt::Params(vec![format!("params file {}: {}", path.display(), msg.trim())]))
            })?;
            Some(table)
        }
        None => None,
    };
    let file_table = match file_table {
        _ if ctx.supplied.is_empty() => file_table,
        Some(mut t) => {
            t.extend(ctx.supplied.clone());
            Some(t)
        }
        None => Some(ctx.supplied.clone()),
    };
    let sources = Sources {
        cli: &ctx.inv_params,
        file: file_table.as_ref(),
        stored: ctx.resume.as_ref().filter(|_| !ctx.queued).map(|r| &r.params),
        lenient: ctx.mode.is_static() || ctx.mode == Mode::Load,
        env: ctx.test_env.as_ref(),
    };
    let (values, warnings) = params::resolve(&decl.params, &sources).map_err(|p| ctx.raise(Halt::Params(p)))?;
    let table = lua.create_table()?;
    for spec in &decl.params {
        match values.get(&spec.name) {
            Some(v) => table.set(spec.name.as_str(), v.to_lua(&lua)?)?,
            None if ctx.mode.is_static() || ctx.mode == Mode::Load => {
                table.set(spec.name.as_str(), crate::lua::placeholder(&lua, &format!("params.{}", spec.name))?)?
            }
            None => {}
        }
    }
    lua.globals().set("params", table)?;
    ctx.st.borrow_mut().decl = Some(decl.clone());
    if ctx.mode.is_static() || ctx.mode == Mode::Load {
        return Ok(());
    }

    let journal = ctx.journal.clone().ok_or_else(|| mlua::Error::runtime("no journal"))?;
    // Stored params are redacted like everything else; a plain param that carried a secret's
    // value is stored redacted and must be given again on resume (see params::resolve).
    let mut stored_params = serde_json::Value::Object(values.iter().map(|(k, v)| (k.clone(), v.to_json())).collect());
    crate::secret::redact_json(&mut stored_params);
    let run_id = match &ctx.resume {
        Some(run) => {
            if run.runbook != decl.name {
                return Err(ctx.raise(Halt::Declaration(format!(
                    "{loc}: run {} is of runbook '{}', but this file declares '{}'",
                    run.id, run.runbook, decl.name
                ))));
            }
            run.id.clone()
        }
        None => new_run_id(),
    };
    if let (Some(lock), Mode::Run) = (&decl.lock, ctx.mode) {
        // Recorded before the write is awaited, so that a signal landing meanwhile still releases it.
        let deadline = ctx.lock_wait.map(|w| std::time::Instant::now() + w);
        let mut announced = false;
        loop {
            ctx.st.borrow_mut().lock = Some((lock.clone(), run_id.clone()));
            match journal
                .acquire_lock(lock, &run_id, &ctx.me, super::lease_secs())
                .await
                .map_err(|e| ctx.raise(e.into()))?
            {
                LockOutcome::Acquired => break,
                LockOutcome::TakenOver(old) => {
                    ctx.out.emit(
                        "warning",
                        None,
                        json!({"message": format!("took over lock '{lock}' from run {} (pid {} on {}), which {}", old.run_id, old.owner.pid, old.owner.host, match old.status { Some(s) => format!("ended ({s})"), None => "is not in the journal".to_string() })}),
                    );
                    break;
                }
                LockOutcome::Held(h) => {
                    ctx.st.borrow_mut().lock = None;
                    let now = std::time::Instant::now();
                    match deadline {
                        // --lock-wait: poll about once a second (jittered, so waiters spread out).
                        Some(d) if now < d => {
                            if !announced {
                                announced = true;
                                ctx.out.emit(
                                    "warning",
                                    None,
                                    json!({"message": format!("lock '{lock}' is held by run {} (pid {} on {}); waiting up to {}", h.run_id, h.owner.pid, h.owner.host, crate::duration::human(d - now))}),
                                );
                            }
                            let pause = std::time::Duration::from_millis(500 + rand::random::<u64>() % 1000);
                            tokio::time::sleep(pause.min(d - now)).await;
                        }
                        _ => {
                            return Err(ctx.raise(Halt::LockHeld {
                                name: lock.clone(),
                                run_id: h.run_id,
                                status: h.status.map(|s| s.to_string()).unwrap_or_else(|| "running".into()),
                                host: h.owner.host,
                                pid: h.owner.pid,
                            }))
                        }
                    }
                }
            }
        }
    }
    // Also recorded before the write is awaited: `finish` closes what this process owns.
    ctx.st.borrow_mut().run_id = Some(run_id.clone());
    let recorded = match &ctx.resume {
        Some(run) => {
            let next = if ctx.st.borrow().rollback_resume { RunStatus::RollingBack } else { RunStatus::Running };
            let claim = Claim {
                id: &run.id,
                expected: run.status,
                previous: &run.owner,
                new_status: next,
                me: &ctx.me,
                lease_secs: super::lease_secs(),
                params: ctx.queued.then_some(&stored_params),
                source: (run.content_hash != ctx.hash && !ctx.queued)
                    .then_some((ctx.hash.as_str(), ctx.source.as_str())),
            };
            match journal.claim_run(&claim).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(Halt::Declaration(format!(
                    "run {} was taken over by another process while starting; see `runbook show {}`",
                    run.id, run.id
                ))),
                Err(e) => Err(e.into()),
            }
        }
        None => {
            let now = crate::journal::now_ts();
            let record = RunRecord {
                id: run_id.clone(),
                runbook: decl.name.clone(),
                path: ctx.abs_path.display().to_string(),
                content_hash: ctx.hash.clone(),
                source: ctx.source.clone(),
                params: stored_params,
                user: crate::process::username(),
                owner: ctx.me.clone(),
                trigger: ctx.trigger.clone(),
                dry_run: ctx.mode == Mode::DryRun,
                rollback: decl.rollback.clone(),
                lock_name: decl.lock.clone(),
                status: RunStatus::Running,
                error: None,
                created_at: now.clone(),
                started_at: now.clone(),
                finished_at: None,
                heartbeat_at: now,
                lease_secs: super::lease_secs(),
                cancel_requested: false,
                queue_key: None,
                not_before: None,
                queued_params: None,
                max_memory: ctx.max_memory.map(|m| m as i64),
                auto_resume: false,
                resumed_by: None,
            };
            journal.create_run(&record).await.map_err(Halt::from)
        }
    };
    if let Err(halt) = recorded {
        ctx.st.borrow_mut().run_id = None;
        return Err(ctx.raise(halt));
    }
    {
        let mut st = ctx.st.borrow_mut();
        st.run_started = Some(Instant::now());
        st.scrubbed_at = crate::secret::generation();
        st.heartbeat = Some(super::spawn_heartbeat(&ctx, run_id.clone(), journal.clone()));
    }
    ctx.watch.lock().unwrap_or_else(|p| p.into_inner()).run = Some((run_id.clone(), journal.clone(), ctx.me.clone()));
    ctx.out.attach(&run_id, journal);
    let event = if ctx.resume.is_some() && !ctx.queued { "run_resumed" } else { "run_started" };
    ctx.out.emit(
        event,
        None,
        json!({"run_id": run_id, "runbook": decl.name, "path": ctx.file, "dry_run": ctx.mode == Mode::DryRun, "params": values.iter().map(|(k, v)| (k.clone(), v.to_json())).collect::<serde_json::Map<_, _>>()}),
    );
    for w in warnings {
        ctx.out.emit("warning", None, json!({ "message": w }));
    }
    Ok(())
}
