//! Commands that look without acting: plan, check, history, show.
use std::path::Path;

use serde_json::json;

use crate::cli::PlanArgs;
use crate::engine::{self, Invocation, Mode, Outcome};
use crate::error::{exit, Error, Result};
use crate::journal::{self, RunFilter, RunRecord, StepRecord};
use crate::output::Format;

pub(super) async fn evaluate(
    path: &Path,
    mode: Mode,
    params: Vec<(String, String)>,
    params_file: Option<std::path::PathBuf>,
) -> Result<Outcome> {
    if !path.exists() {
        return Err(Error::Usage(format!("runbook file {} does not exist", path.display())));
    }
    let inv = Invocation { params, params_file, trigger: "plan".into(), ..Invocation::new(path.to_path_buf(), mode) };
    engine::execute(inv, None, super::static_reporter()).await
}

/// `println!` into a String.
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

pub async fn plan(args: PlanArgs) -> Result<u8> {
    let outcome = evaluate(&args.file, Mode::Plan, args.params.params, args.params.params_file).await?;
    let decl = outcome.decl.as_ref().ok_or_else(|| Error::Runbook("no declaration".into()))?;
    if args.output == Format::Json {
        let mut plan = json!({"runbook": decl, "path": args.file.display().to_string(), "steps": outcome.plan, "notes": outcome.notes});
        crate::secret::redact_json(&mut plan);
        println!("{plan}");
        return Ok(exit::OK);
    }
    // Written whole, then redacted: a secret's value in a step name, a gate's message or a
    // param's description never reaches the screen.
    let mut out = String::new();
    outln!(out, "{} ({})", decl.name, args.file.display());
    if let Some(d) = &decl.description {
        outln!(out, "  {d}");
    }
    let mut flags = Vec::new();
    if let Some(l) = &decl.lock {
        flags.push(format!("lock: {l}"));
    }
    flags.push(format!("rollback: {}", decl.rollback));
    outln!(out, "  {}", flags.join(", "));
    if !decl.params.is_empty() {
        outln!(out, "\nParams:");
        for p in &decl.params {
            let default = p.default.as_ref().map(|d| format!(" default {d}")).unwrap_or_default();
            let req = if p.required { " required" } else { "" };
            let env = p.env.as_ref().map(|e| format!(" env ${e}")).unwrap_or_default();
            let desc = p.description.as_ref().map(|d| format!("  {d}")).unwrap_or_default();
            outln!(out, "  {:<16} {}{req}{default}{env}{desc}", p.name, p.ty.as_str());
        }
    }
    outln!(out, "\nSteps:");
    for (i, s) in outcome.plan.iter().enumerate() {
        let opts = if s.options.is_empty() { String::new() } else { format!("  [{}]", s.options.join(", ")) };
        match s.kind {
            "approval" => outln!(out, "  {:>3}. approval: {}  (line {})", i + 1, s.name, s.line),
            _ => outln!(out, "  {:>3}. {}  (line {}){opts}", i + 1, s.name, s.line),
        }
        if let Some(d) = &s.description {
            outln!(out, "       {d}");
        }
    }
    if outcome.plan.is_empty() {
        outln!(out, "  (none)");
    }
    for n in &outcome.notes {
        outln!(out, "\nnote: {n}");
    }
    print!("{}", crate::secret::redact(&out));
    Ok(exit::OK)
}

pub async fn check(file: &Path) -> Result<u8> {
    let outcome = evaluate(file, Mode::Check, vec![], None).await?;
    let steps = outcome.plan.iter().filter(|p| p.kind == "step").count();
    let gates = outcome.plan.len() - steps;
    let name = outcome.decl.as_ref().map(|d| d.name.as_str()).unwrap_or("?");
    println!("{}: ok ({name}: {steps} step(s), {gates} approval gate(s))", file.display());
    for n in &outcome.notes {
        println!("note: {n}");
    }
    Ok(exit::OK)
}

fn duration_of(run: &RunRecord) -> String {
    let end = run.finished_at.as_deref().and_then(|f| chrono::DateTime::parse_from_rfc3339(f).ok());
    let start = chrono::DateTime::parse_from_rfc3339(&run.started_at).ok();
    match (start, end) {
        (Some(s), Some(e)) => crate::duration::human(e.signed_duration_since(s).to_std().unwrap_or_default()),
        _ => "-".into(),
    }
}

pub async fn history(state: Option<&str>, runbook: Option<String>, limit: i64, output: Format) -> Result<u8> {
    let journal = journal::open(state).await?;
    let runs = journal.runs(&RunFilter { runbook, limit, ..RunFilter::default() }).await?;
    if output == Format::Json {
        let list: Vec<_> = runs
            .iter()
            .map(|r| {
                json!({"run_id": r.id, "runbook": r.runbook, "path": r.path, "status": r.effective_status(), "started_at": r.started_at,
                       "finished_at": r.finished_at, "trigger": r.trigger, "user": r.user, "host": r.owner.host, "dry_run": r.dry_run})
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else if runs.is_empty() {
        println!("no runs yet in {}", journal.location());
    } else {
        println!("{:<24} {:<24} {:<17} {:<21} {:>8}  BY", "RUN", "RUNBOOK", "STATUS", "STARTED", "TOOK");
        for r in &runs {
            let started = r.started_at.get(..19).unwrap_or(&r.started_at).replace('T', " ");
            let dry = if r.dry_run { " (dry run)" } else { "" };
            println!(
                "{:<24} {:<24} {:<17} {:<21} {:>8}  {}@{} ({}){dry}",
                r.id,
                truncate(&r.runbook, 24),
                r.effective_status().as_str(),
                started,
                duration_of(r),
                r.user,
                r.owner.host,
                r.trigger
            );
        }
    }
    journal.close().await;
    Ok(exit::OK)
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

pub(crate) fn step_json(s: &StepRecord) -> serde_json::Value {
    json!({
        "name": s.name, "kind": s.kind, "status": s.status, "attempts": s.attempts, "started_at": s.started_at,
        "finished_at": s.finished_at, "duration_ms": s.duration_ms, "result": s.result, "error": s.error,
        "line": s.line, "undo_status": s.undo_status, "undo_error": s.undo_error, "actor": s.actor,
    })
}

pub async fn show(state: Option<&str>, reference: &str, output: Format, with_events: bool) -> Result<u8> {
    let journal = journal::open(state).await?;
    let run = journal.find_run(reference).await?;
    let steps = journal.steps(&run.id).await?;
    let items = journal.items(&run.id, None).await?;
    let votes = journal.votes(&run.id).await?;
    let events = if with_events { journal.events(&run.id).await? } else { vec![] };
    journal.close().await;
    let votes_of = |gate: &str| votes.iter().filter(|v| v.gate == gate).collect::<Vec<_>>();
    let status = run.effective_status();
    // A step's items, and those of its undo.
    let items_of =
        |step: &str| items.iter().filter(|i| i.step == step || i.step == format!("undo {step}")).collect::<Vec<_>>();
    if output == Format::Json {
        let mut obj = json!({
            "run_id": run.id, "runbook": run.runbook, "path": run.path, "status": status, "params": run.params,
            "started_at": run.started_at, "finished_at": run.finished_at, "error": run.error, "user": run.user,
            "host": run.owner.host, "pid": run.owner.pid, "trigger": run.trigger, "dry_run": run.dry_run,
            "content_hash": run.content_hash,
            "steps": steps.iter().map(|s| {
                let mut j = step_json(s);
                let its = items_of(&s.name);
                if !its.is_empty() {
                    j["items"] = its.iter().map(|i| json!({"item": i.item, "status": i.status, "result": i.result,
                        "error": i.error, "updated_at": i.updated_at})).collect();
                }
                if s.kind == journal::StepKind::Approval {
                    j["votes"] = json!(votes_of(&s.name));
                }
                j
            }).collect::<Vec<_>>(),
        });
        if with_events {
            obj["events"] =
                events.iter().map(|e| json!({"ts": e.ts, "event": e.event, "step": e.step, "data": e.data})).collect();
        }
        println!("{obj}");
        return Ok(exit::OK);
    }
    println!("run {}  {}  ({})", run.id, run.runbook, status);
    println!("  file:     {}", run.path);
    println!(
        "  started:  {} by {}@{} (pid {}, {})",
        run.started_at, run.user, run.owner.host, run.owner.pid, run.trigger
    );
    if let Some(f) = &run.finished_at {
        println!("  finished: {f} (took {})", duration_of(&run));
    }
    if run.params.as_object().is_some_and(|p| !p.is_empty()) {
        println!("  params:   {}", run.params);
    }
    if status == journal::RunStatus::Interrupted && run.status != status {
        println!(
            "  note:     its process is gone (pid {} on {}); resume with `runbook resume {}`",
            run.owner.pid, run.owner.host, run.id
        );
    }
    if let Some(e) = &run.error {
        println!("  error:    {e}");
    }
    println!();
    println!("  {:<3} {:<32} {:<12} {:>8} {:>9}  RESULT / ERROR", "#", "STEP", "STATUS", "ATTEMPTS", "TOOK");
    for (i, s) in steps.iter().enumerate() {
        let took = s
            .duration_ms
            .map(|m| crate::duration::human(std::time::Duration::from_millis(m.max(0) as u64)))
            .unwrap_or_else(|| "-".into());
        let gate = crate::approval::GateState::of(s).filter(|_| s.kind == journal::StepKind::Approval);
        let detail = match (&s.error, &s.result, &s.actor) {
            (Some(e), _, _) if s.status != journal::StepStatus::Succeeded => e.clone(),
            (_, _, Some(a)) => format!("by {a}"),
            _ if gate.is_some() => {
                gate.as_ref().and_then(|g| g.policy.as_ref()).map(|p| p.describe()).unwrap_or_default()
            }
            (_, Some(r), _) => truncate(&r.to_string(), 60),
            _ => String::new(),
        };
        // A step still marked running in a run whose process is gone was cut off mid-flight.
        let step_status = match (s.status, status) {
            (journal::StepStatus::Running, journal::RunStatus::Interrupted) => "interrupted",
            (st, _) => st.as_str(),
        };
        // "pending" is the normal state of a completed step with an undo: not worth a column.
        let undo = match s.undo_status.as_deref().filter(|u| *u != "pending") {
            Some(u) => {
                format!("  [undo: {u}{}]", s.undo_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default())
            }
            None => String::new(),
        };
        println!(
            "  {:<3} {:<32} {:<12} {:>8} {:>9}  {detail}{undo}",
            i + 1,
            truncate(&s.name, 32),
            step_status,
            s.attempts,
            took
        );
        for item in items_of(&s.name) {
            let detail = match (&item.error, &item.result) {
                (Some(e), _) => truncate(e, 80),
                (None, Some(r)) => truncate(&r.to_string(), 60),
                _ => String::new(),
            };
            println!("        - {:<34} {:<8} {detail}", truncate(&item.item, 34), item.status);
        }
        if let Some(g) = gate.as_ref().filter(|_| s.status == journal::StepStatus::Waiting) {
            if let Some(p) = &g.policy {
                let deadline = g.deadline.as_deref().map(|d| format!(", until {d}")).unwrap_or_default();
                println!("        policy: {} (requested by {}{deadline})", p.describe(), g.requested_by);
            }
        }
        for v in votes_of(&s.name) {
            let why = v.comment.as_deref().map(|c| format!(": {c}")).unwrap_or_default();
            println!("        - {} {} ({}, {}){why}", v.decision, v.actor, v.via, v.at);
        }
    }
    if !events.is_empty() {
        println!("\n  events:");
    }
    for e in &events {
        match crate::output::describe_event(&e.event, e.step.as_deref(), &e.data) {
            Some(text) => println!("  {} {text}", e.ts),
            None => println!("  {} {} {}", e.ts, e.event, e.data),
        }
    }
    Ok(exit::OK)
}

/// `runbook sessions`: REPL sessions, newest first; `sessions show ID`: one as a timeline.
pub async fn sessions(
    state: Option<&str>,
    show: Option<crate::cli::SessionsCommand>,
    limit: i64,
    output: Format,
) -> Result<u8> {
    let journal = journal::open(state).await?;
    match show {
        Some(crate::cli::SessionsCommand::Show { session, output }) => {
            let s = journal.find_session(&session).await?;
            let events = journal.session_events(&s.id).await?;
            if output == Format::Json {
                println!("{}", json!({"session": s, "events": events}));
            } else {
                print!("{}", crate::repl::timeline(&s, &events));
            }
        }
        None => {
            let list = journal.sessions(limit.clamp(1, 10_000)).await?;
            if output == Format::Json {
                println!("{}", json!(list));
            } else if list.is_empty() {
                println!("no sessions yet (`runbook repl` records one)");
            } else {
                println!("{:<26} {:<20} {:<20} {:>7}  RUN", "SESSION", "WHO", "STARTED (UTC)", "ENTRIES");
                for s in &list {
                    println!(
                        "{:<26} {:<20} {:<20} {:>7}  {}",
                        s.id,
                        format!("{}@{}", s.who, s.host),
                        s.started_at.get(..19).unwrap_or(&s.started_at).replace('T', " "),
                        s.events,
                        s.run_id.as_deref().unwrap_or("-")
                    );
                }
            }
        }
    }
    journal.close().await;
    Ok(exit::OK)
}
