//! The REPL's `:commands`: help, loading a runbook, the journal's runs, and work on an attached
//! run (its steps and results, retry, skip, resume), each recorded in the session; what they
//! change in a run is written to that run's journal, attributed to the session's user.
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use mlua::{Lua, Table, Value};
use serde_json::json;

use super::{help, show, Attached, Outcome, Repl};
use crate::engine::{self, Captured, Ctx, Invocation, Mode};
use crate::journal::{self, Claim, EventRecord, RunFilter, RunRecord, RunStatus, StepKind, StepRecord, StepStatus};
use crate::output::{Format, Reporter};

/// What a command printed and whether it did what was asked.
struct Done {
    ok: bool,
    text: String,
}

fn ok(text: impl Into<String>) -> Done {
    Done { ok: true, text: text.into() }
}

fn fail(text: impl Into<String>) -> Done {
    Done { ok: false, text: text.into() }
}

impl Repl {
    /// Runs a `:command` line, prints what it says, and records it in the session (`:help` and
    /// `:timeline` only read: they are not part of what happened). Returns whether it worked.
    pub(super) async fn command(&mut self, line: &str) -> bool {
        let started = Instant::now();
        let (name, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        let recorded = !matches!(name, ":help" | ":h" | ":timeline");
        let run = self.attached.as_ref().map(|a| a.run.id.clone());
        let event = if recorded { Some(self.begin("command", line, run.as_deref()).await) } else { None };
        let done = match name {
            ":help" | ":h" => ok(help::help(rest)),
            ":load" => self.load(rest).await,
            ":runs" => self.runs(rest).await,
            ":attach" => self.attach(rest).await,
            ":steps" => self.steps(),
            ":result" => self.result(rest),
            ":retry" => self.retry(rest).await,
            ":skip" => self.skip(rest).await,
            ":approve" => self.decide(rest, true).await,
            ":reject" => self.decide(rest, false).await,
            ":param" => self.param(rest).await,
            ":x" => match rest {
                "" | "on" | "off" => {
                    let on = if rest.is_empty() { !show::expanded() } else { rest == "on" };
                    show::set_expanded(on);
                    ok(format!("expanded display is {}", if on { "on" } else { "off" }))
                }
                other => fail(format!("usage: :x [on|off], not '{other}'")),
            },
            ":timing" => match rest {
                "" | "on" | "off" => {
                    self.timing = if rest.is_empty() { !self.timing } else { rest == "on" };
                    ok(format!("timing is {}", if self.timing { "on" } else { "off" }))
                }
                other => fail(format!("usage: :timing [on|off], not '{other}'")),
            },
            ":pager" => match rest {
                "" | "on" | "off" => {
                    self.pager = if rest.is_empty() { !self.pager } else { rest == "on" };
                    ok(format!("pager is {}", if self.pager { "on" } else { "off" }))
                }
                other => fail(format!("usage: :pager [on|off], not '{other}'")),
            },
            ":watch" => self.watch(rest).await,
            ":resume" => self.resume(rest).await,
            ":timeline" => self.timeline(rest).await,
            other => fail(format!("unknown command {other}; `:help` lists the commands")),
        };
        let text = crate::secret::redact(&done.text).into_owned();
        if done.ok {
            println!("{}", text.trim_end());
        } else {
            eprintln!("error: {}", text.trim_end());
        }
        if let Some(mut event) = event {
            // The run it acted on, once known (`:attach` names it).
            event.run_id = self.attached.as_ref().map(|a| a.run.id.clone());
            self.complete(event, done.ok, started.elapsed(), &text).await;
        }
        done.ok
    }

    /// `:watch EXPR [EVERY]`: evaluates EXPR every EVERY (default 2s) and prints it with the
    /// time, until Ctrl-C, as psql's `\\watch`.
    async fn watch(&mut self, args: &str) -> Done {
        let (expr, every) = match args.rsplit_once(char::is_whitespace) {
            Some((e, d)) if crate::duration::parse(d).is_ok() => {
                (e.trim(), crate::duration::parse(d).unwrap_or_default())
            }
            _ => (args.trim(), std::time::Duration::from_secs(2)),
        };
        if expr.is_empty() {
            return fail(
                "usage: :watch EXPR [EVERY], e.g. :watch pg:query(\"select count(*) from pg_stat_activity\") 5s",
            );
        }
        if every < std::time::Duration::from_millis(100) {
            return fail("`:watch` waits at least 100ms between evaluations");
        }
        let func = match super::compile(&self.lua, expr) {
            super::Compiled::Ready(f) => f,
            super::Compiled::Incomplete => return fail("`:watch` takes one complete expression"),
            super::Compiled::Error(e) => return fail(e),
        };
        let mut times = 0u64;
        // Ctrl-C between evaluations stops the watch (it counts as a call's Ctrl-C).
        let mut sigint = self.sigints.subscribe();
        loop {
            let outcome = self.call(func.clone(), ()).await;
            self.in_call.store(true, std::sync::atomic::Ordering::SeqCst);
            times += 1;
            let stop = match outcome {
                Outcome::Values(values) => {
                    println!(
                        "{}  every {}  (Ctrl-C stops)",
                        chrono::Local::now().format("%H:%M:%S"),
                        crate::duration::human(every)
                    );
                    print!("{}", show::values(&values));
                    false
                }
                Outcome::Failed(e) => {
                    self.in_call.store(false, std::sync::atomic::Ordering::SeqCst);
                    return fail(format!("stopped after {times} evaluation(s): {e}"));
                }
                Outcome::Interrupted | Outcome::ServerAnswered { .. } => true,
            };
            let stop = stop
                || sigint.has_changed().unwrap_or(true)
                || tokio::select! {
                    _ = tokio::time::sleep(every) => false,
                    _ = sigint.changed() => true,
                };
            if stop {
                break;
            }
        }
        self.in_call.store(false, std::sync::atomic::Ordering::SeqCst);
        ok(format!("watched {times} time(s)"))
    }

    async fn load(&mut self, args: &str) -> Done {
        let mut words = args.split_whitespace();
        let Some(file) = words.next() else { return fail("usage: :load FILE [key=value ...]") };
        let mut params = Vec::new();
        for w in words {
            match w.split_once('=') {
                Some((k, v)) if !k.is_empty() => params.push((k.to_string(), v.to_string())),
                _ => return fail(format!("expected key=value after the file, got '{w}'")),
            }
        }
        let path = PathBuf::from(file);
        let source = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) => return fail(format!("cannot read {file}: {e}")),
        };
        let (loaded, note) = self.load_source(&path, &source, params, None).await;
        let Some(decl) = loaded.declaration() else {
            return fail(note.unwrap_or_else(|| format!("{file}: no runbook{{...}} declaration")));
        };
        let captured = loaded.captured();
        let steps = match self.steps_table(&captured) {
            Ok(t) => t,
            Err(e) => return fail(e.to_string()),
        };
        let _ = self.lua.globals().set("steps", steps);
        let names: Vec<String> = captured.iter().map(|c| c.name.clone()).collect();
        let mut text = format!(
            "loaded runbook '{}' from {file}: {} step(s): {}\n`steps[NAME]()` runs one by hand (not journaled); `params` holds the params",
            decl.name,
            names.len(),
            names.join(", ")
        );
        if let Some(n) = note {
            text = format!("{text}\nnote: {n}");
        }
        ok(text)
    }

    /// Evaluates a runbook in `Mode::Load` in the session's Lua: its top level runs, its steps
    /// are captured. Returns the load's context and why the load stopped early, if it did.
    async fn load_source(
        &mut self,
        path: &Path,
        source: &str,
        params: Vec<(String, String)>,
        attached: Option<(RunRecord, Vec<StepRecord>)>,
    ) -> (Rc<Ctx>, Option<String>) {
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let ctx = Ctx::standalone(
            Mode::Load,
            path.display().to_string(),
            abs.clone(),
            Some(self.journal.clone()),
            Reporter::for_repl(),
            (params, self.supplied.clone()),
            attached,
        );
        if let Some(dir) = abs.parent() {
            crate::lua::set_require_root(&self.lua, dir);
        }
        let func = crate::lua::compile(&self.lua, source, &path.display().to_string());
        let note = match func {
            Err((msg, loc)) => Some(
                crate::secret::redact(&match loc {
                    Some(l) => format!("{l}: syntax error: {msg}"),
                    None => format!("{}: syntax error: {msg}", path.display()),
                })
                .into_owned(),
            ),
            Ok(func) => {
                self.lua.set_app_data(Rc::clone(&ctx));
                let outcome = self.call(func, ()).await;
                self.lua.set_app_data(Rc::clone(&self.ctx));
                match outcome {
                    Outcome::Values(_) => None,
                    Outcome::Interrupted => Some("loading interrupted (Ctrl-C)".into()),
                    Outcome::ServerAnswered { said, .. } => Some(format!("loading interrupted: {said}")),
                    Outcome::Failed(_) if ctx.load_stopped_at().is_some() => None,
                    Outcome::Failed(msg) => Some(format!("the load stopped at {msg}")),
                }
            }
        };
        (ctx, note)
    }

    /// `steps`: step name -> its function, to call by hand.
    fn steps_table(&self, captured: &[Captured]) -> mlua::Result<Table> {
        let t = self.lua.create_table()?;
        for c in captured {
            t.set(c.name.as_str(), c.func.clone())?;
        }
        Ok(t)
    }

    async fn runs(&mut self, args: &str) -> Done {
        let limit = args.parse::<i64>().unwrap_or(10).clamp(1, 200);
        let runs = match self.journal.runs(&RunFilter { limit, ..RunFilter::default() }).await {
            Ok(r) => r,
            Err(e) => return fail(e.to_string()),
        };
        if runs.is_empty() {
            return ok("no runs in this journal yet");
        }
        let rows: Vec<Vec<String>> = runs
            .iter()
            .map(|r| {
                vec![
                    r.id.clone(),
                    r.runbook.clone(),
                    r.effective_status().to_string(),
                    r.started_at.get(..19).unwrap_or(&r.started_at).replace('T', " "),
                    show::cell(r.error.as_deref().unwrap_or("")),
                ]
            })
            .collect();
        ok(show::grid(&["run", "runbook", "status", "started (UTC)", "error"], &rows))
    }

    async fn attach(&mut self, reference: &str) -> Done {
        if reference.is_empty() {
            return fail("usage: :attach RUN (an id, a unique prefix, or `last`)");
        }
        let run = match self.journal.find_run(reference).await {
            Ok(r) => r,
            Err(e) => return fail(e.to_string()),
        };
        let steps = match self.journal.steps(&run.id).await {
            Ok(s) => s,
            Err(e) => return fail(e.to_string()),
        };
        // The file as it is now (what `:resume` runs), else the text the run ran.
        let path = PathBuf::from(&run.path);
        let (source, mut notes) = match std::fs::read_to_string(&path) {
            Ok(text) if engine::content_hash(&text) == run.content_hash => (text, vec![]),
            Ok(text) => {
                let what = crate::commands::what_changed(&run.source, &text);
                (
                    text,
                    vec![format!(
                        "the runbook changed since the run started ({what}); `:resume --allow-changed` to run it"
                    )],
                )
            }
            Err(_) => (run.source.clone(), vec![format!("{} is gone: loaded the text the run ran", path.display())]),
        };
        let (loaded, note) = self.load_source(&path, &source, vec![], Some((run.clone(), steps.clone()))).await;
        notes.extend(note);
        let captured = loaded.captured();
        let stopped_at = loaded.load_stopped_at();
        let params = self.lua.globals().get::<Option<Table>>("params").ok().flatten();
        self.session.run_id = Some(run.id.clone());
        let _ = self.journal.put_session(&self.session).await;
        self.attached = Some(Attached { run, steps, captured, params, stopped_at });
        if let Err(e) = self.publish_run() {
            return fail(e.to_string());
        }
        let a = self.attached.as_ref().expect("attached above");
        let status = a.run.effective_status();
        let mut text = format!(
            "attached to run {} of '{}' ({}), {} step(s) journaled",
            a.run.id,
            a.run.runbook,
            status,
            a.steps.iter().filter(|s| s.kind == StepKind::Step).count()
        );
        let failed = a.steps.iter().find(|s| s.status == StepStatus::Failed);
        if let (Some(e), None) = (&a.run.error, failed) {
            text.push_str(&format!("\nerror: {e}"));
        }
        if let Some(failed) = failed {
            text.push_str(&format!(
                "\nfailed step: '{}' (attempt {}): {}\nin scope: run.params, run.steps[\"{}\"], run.status; then :retry {} | :skip {} REASON, and :resume",
                failed.name,
                failed.attempts,
                failed.error.as_deref().unwrap_or(""),
                failed.name,
                failed.name,
                failed.name
            ));
        }
        for n in notes {
            text.push_str(&format!("\nnote: {n}"));
        }
        ok(text)
    }

    /// Sets the `run` global from the attached run: id, runbook, status, error, params, steps.
    fn publish_run(&self) -> mlua::Result<()> {
        let Some(a) = &self.attached else { return Ok(()) };
        let lua: &Lua = &self.lua;
        let t = lua.create_table()?;
        t.set("id", a.run.id.as_str())?;
        t.set("runbook", a.run.runbook.as_str())?;
        t.set("status", a.run.effective_status().as_str())?;
        t.set("error", a.run.error.clone())?;
        t.set("path", a.run.path.as_str())?;
        t.set("params", crate::lua::convert::from_json(lua, &a.run.params)?)?;
        let steps = lua.create_table()?;
        for s in &a.steps {
            let st = lua.create_table()?;
            st.set("status", s.status.as_str())?;
            st.set("attempts", s.attempts)?;
            st.set("result", s.result.as_ref().map(|r| crate::lua::convert::from_json(lua, r)).transpose()?)?;
            st.set("error", s.error.clone())?;
            st.set("started_at", s.started_at.clone())?;
            st.set("finished_at", s.finished_at.clone())?;
            st.set("duration_ms", s.duration_ms)?;
            st.set("actor", s.actor.clone())?;
            steps.set(s.name.as_str(), st)?;
        }
        t.set("steps", steps)?;
        lua.globals().set("run", t)
    }

    /// Reads the attached run and its steps again, and republishes `run`.
    async fn refresh(&mut self) -> Result<(), String> {
        let Some(a) = &mut self.attached else { return Ok(()) };
        a.run = self.journal.run(&a.run.id).await.map_err(|e| e.to_string())?.ok_or("the run is gone")?;
        a.steps = self.journal.steps(&a.run.id).await.map_err(|e| e.to_string())?;
        self.publish_run().map_err(|e| e.to_string())
    }

    fn steps(&self) -> Done {
        let Some(a) = &self.attached else { return fail("no run attached: :attach RUN first") };
        if a.steps.is_empty() {
            return ok(format!("run {} has no journaled steps", a.run.id));
        }
        let mut steps = a.steps.clone();
        steps.sort_by_key(|s| s.seq);
        let rows: Vec<Vec<String>> = steps
            .iter()
            .map(|s| {
                let outcome = match (&s.error, &s.result) {
                    (Some(e), _) => e.clone(),
                    (None, Some(r)) => r.to_string(),
                    (None, None) => String::new(),
                };
                vec![
                    s.name.clone(),
                    s.status.to_string(),
                    s.attempts.to_string(),
                    s.duration_ms
                        .map(|m| crate::duration::human(std::time::Duration::from_millis(m.max(0) as u64)))
                        .unwrap_or_default(),
                    s.actor.clone().unwrap_or_default(),
                    show::cell(&outcome),
                ]
            })
            .collect();
        ok(show::grid(&["step", "status", "attempts", "took", "by", "result / error"], &rows))
    }

    fn result(&self, args: &str) -> Done {
        let names = self.step_names();
        let Some(a) = &self.attached else { return fail("no run attached: :attach RUN first") };
        let (step, var) = split_step_arg(args, &names);
        let var = var.trim();
        let var = if var.is_empty() { "result" } else { var };
        if !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || var.starts_with(|c: char| c.is_ascii_digit())
        {
            return fail(format!("'{var}' is not a Lua name"));
        }
        let Some(rec) = a.steps.iter().find(|s| s.name == step) else {
            return fail(format!("run {} has no step '{step}' (:steps lists them)", a.run.id));
        };
        let value = match rec.result.as_ref().map(|r| crate::lua::convert::from_json(&self.lua, r)).transpose() {
            Ok(v) => v.unwrap_or(Value::Nil),
            Err(e) => return fail(e.to_string()),
        };
        if let Err(e) = self.lua.globals().set(var, value.clone()) {
            return fail(e.to_string());
        }
        ok(format!("{}\n(bound to `{var}`)", show::value(&value)))
    }

    /// Makes this process the owner of the attached run (compare-and-swap on its status and
    /// owner), so that it may write its steps. For a retry the run becomes `running` (the caller
    /// keeps a heartbeat, so no resume or worker runs it meanwhile); otherwise it keeps its
    /// status (a run whose process is gone becomes `interrupted`). Returns the status to put
    /// back after a retry. Refused while the run's process lives, and for dry runs, rollbacks
    /// and ended runs.
    async fn own_run(&mut self, running: bool) -> Result<RunStatus, String> {
        self.refresh().await?;
        let Some(a) = &mut self.attached else { return Err("no run attached: :attach RUN first".into()) };
        let status = a.run.effective_status();
        let me = self.ctx.me.clone();
        let mine = a.run.owner.host == me.host && a.run.owner.pid == me.pid && a.run.owner.pid_start == me.pid_start;
        if a.run.dry_run {
            return Err(format!("run {} was a dry run: nothing of it may be retried or skipped", a.run.id));
        }
        if a.run.status.is_active() && status.is_active() && !mine {
            return Err(format!(
                "run {} is still {} (pid {} on {}); wait for it, or `runbook cancel {}`",
                a.run.id, status, a.run.owner.pid, a.run.owner.host, a.run.id
            ));
        }
        if matches!(status, RunStatus::RollingBack | RunStatus::RollbackFailed) {
            return Err(format!("run {} is {status}: :resume continues its rollback", a.run.id));
        }
        if status.is_final() || status == RunStatus::Queued {
            return Err(format!("run {} is {status}: there is nothing to change", a.run.id));
        }
        let keep = if a.run.status.is_active() { RunStatus::Interrupted } else { a.run.status };
        let claim = Claim {
            id: &a.run.id,
            expected: a.run.status,
            previous: &a.run.owner,
            new_status: if running { RunStatus::Running } else { keep },
            me: &me,
            lease_secs: engine::lease_secs(),
            params: None,
            source: None,
        };
        let new_status = claim.new_status;
        match self.journal.claim_run(&claim).await {
            Ok(true) => {
                a.run.owner = self.ctx.me.clone();
                a.run.status = new_status;
                Ok(keep)
            }
            Ok(false) => Err(format!("run {} changed meanwhile (resumed elsewhere?); :attach it again", a.run.id)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// A step of the attached run that may be retried or skipped: not done yet.
    fn open_step(&self, name: &str, verb: &str) -> Result<StepRecord, String> {
        let a = self.attached.as_ref().ok_or("no run attached: :attach RUN first")?;
        if name.is_empty() {
            return Err(format!("usage: :{verb} STEP"));
        }
        let existing = a.steps.iter().find(|s| s.name == name).cloned();
        if existing.as_ref().is_some_and(|s| s.kind == StepKind::Approval) {
            return Err(format!(
                "'{name}' is an approval gate: :approve (or `runbook approve {}`), then :resume",
                a.run.id
            ));
        }
        if let Some(s) = existing.as_ref().filter(|s| s.status.is_done()) {
            return Err(format!("step '{name}' is already {}; a resume does not run it again", s.status));
        }
        let line = a.captured.iter().find(|c| c.name == name).map(|c| c.line as i64);
        if existing.is_none() && line.is_none() {
            return Err(match &a.stopped_at {
                Some(at) => format!(
                    "step '{name}' was not loaded: loading run {} stopped at '{at}' (its first step not done, or a gate not approved)",
                    a.run.id
                ),
                None => format!("run {} has no step '{name}' (:steps lists the journaled ones)", a.run.id),
            });
        }
        let seq = a.steps.iter().map(|s| s.seq).max().unwrap_or(0) + 1;
        Ok(existing.unwrap_or_else(|| StepRecord::new(name, seq, StepKind::Step, StepStatus::Running, line)))
    }

    /// Runs a step of the attached run again, now, as the engine would: under the run's context
    /// (relative paths from the runbook's folder, events in the run's journal, the run's params),
    /// with its timeout, the attempt number as argument, and the outcome journaled (attempts + 1,
    /// by the session's user). The run is `running`, with a heartbeat, meanwhile.
    /// The attached run's step names: journaled and loaded.
    fn step_names(&self) -> Vec<String> {
        let Some(a) = &self.attached else { return Vec::new() };
        a.steps.iter().map(|s| s.name.clone()).chain(a.captured.iter().map(|c| c.name.clone())).collect()
    }

    async fn retry(&mut self, args: &str) -> Done {
        let (name, _) = split_step_arg(args, &self.step_names());
        let mut rec = match self.open_step(&name, "retry") {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        let Some(step) = self.attached.as_ref().and_then(|a| a.captured.iter().find(|c| c.name == name)).cloned()
        else {
            return fail(format!(
                "step '{name}' was not loaded: loading a run stops at its first step not done (or an unapproved gate); :skip it or :resume"
            ));
        };
        let restore = match self.own_run(true).await {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        let Some(a) = &self.attached else { return fail("no run attached") };
        let (run_id, run_path, run_error, params) =
            (a.run.id.clone(), a.run.path.clone(), a.run.error.clone(), a.params.clone());
        let who = self.session.who.clone();
        let path = PathBuf::from(&run_path);
        let step_ctx = Ctx::standalone(
            Mode::Run,
            path.display().to_string(),
            path.clone(),
            Some(self.journal.clone()),
            Reporter::for_repl(),
            (vec![], toml::Table::new()),
            None,
        );
        step_ctx.enter_step(&run_id, &name, rec.attempts + 1);
        step_ctx.out.attach(&run_id, self.journal.clone());
        let heartbeat = engine::spawn_heartbeat(&step_ctx, run_id.clone(), self.journal.clone());

        rec.status = StepStatus::Running;
        rec.attempts += 1;
        rec.started_at = Some(journal::now_ts());
        rec.finished_at = None;
        rec.error = None;
        rec.actor = Some(who.clone());
        let written = self.journal.put_step(&run_id, &self.ctx.me, &rec).await;
        let outcome = match written {
            Err(e) => Err(e.to_string()),
            Ok(()) => {
                println!("retrying step '{name}' of run {run_id} (attempt {})...", rec.attempts);
                step_ctx.out.emit(
                    "step_started",
                    Some(&name),
                    json!({"status": "running", "attempt": rec.attempts, "actor": who, "via": "repl"}),
                );
                if let Some(p) = params {
                    let _ = self.lua.globals().set("params", p);
                }
                self.lua.set_app_data(Rc::clone(&step_ctx));
                let started = Instant::now();
                let call = self.call(step.func.clone(), rec.attempts);
                let outcome = match step.timeout {
                    Some(limit) => tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
                        Outcome::Failed(format!("timed out after {}", crate::duration::human(limit)))
                    }),
                    None => call.await,
                };
                self.lua.set_app_data(Rc::clone(&self.ctx));
                rec.duration_ms = Some(started.elapsed().as_millis() as i64);
                Ok(outcome)
            }
        };
        rec.finished_at = Some(journal::now_ts());
        let shown = match outcome {
            Err(e) => Err(e),
            Ok(Outcome::Values(values)) => {
                let first = values.into_iter().next().unwrap_or(Value::Nil);
                match crate::lua::convert::to_json(&first) {
                    Ok(mut result) => {
                        crate::secret::redact_json(&mut result);
                        rec.status = StepStatus::Succeeded;
                        rec.result = Some(result);
                        if step.has_undo {
                            rec.undo_status = Some("pending".into());
                        }
                        Ok(show::value(&first))
                    }
                    Err(e) => Err(format!("step '{name}' returned {e}")),
                }
            }
            Ok(Outcome::Failed(msg)) => Err(msg),
            Ok(Outcome::Interrupted) => Err(format!("retry interrupted (Ctrl-C) by {who}")),
            // Even when the statement completed first, the step was cut short: not a success.
            Ok(Outcome::ServerAnswered { said, .. }) => Err(format!("retry interrupted by {who}: {said}")),
        };
        if let Err(e) = &shown {
            rec.status = StepStatus::Failed;
            rec.error = Some(crate::secret::redact(e).into_owned());
        }
        step_ctx.out.emit(
            "step_finished",
            Some(&name),
            json!({"status": rec.status.as_str(), "attempt": rec.attempts, "duration_ms": rec.duration_ms, "error": rec.error, "actor": who, "via": "repl"}),
        );
        let _ = step_ctx.out.flush().await;
        heartbeat.abort();
        let mut problems = Vec::new();
        if let Err(e) = self.journal.put_step(&run_id, &self.ctx.me, &rec).await {
            problems.push(e.to_string());
        }
        if let Err(e) = self.journal.set_run_status(&run_id, &self.ctx.me, restore, run_error.as_deref()).await {
            problems.push(e.to_string());
        }
        self.run_event(&run_id, "step_retried", &name, json!({"status": rec.status.as_str(), "actor": who, "session": self.session.id, "error": rec.error, "duration_ms": rec.duration_ms})).await;
        if let Err(e) = self.refresh().await {
            problems.push(e);
        }
        if !problems.is_empty() {
            return fail(format!("step '{name}': the journal refused the outcome: {}", problems.join("; ")));
        }
        match shown {
            Ok(text) => ok(format!("step '{name}' succeeded, recorded in run {run_id}\n{text}\nnext: :resume")),
            Err(e) => fail(format!("step '{name}' failed again: {e}")),
        }
    }

    async fn skip(&mut self, args: &str) -> Done {
        let (name, reason) = split_step_arg(args, &self.step_names());
        let reason = reason.trim().to_string();
        let mut rec = match self.open_step(&name, "skip") {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        if reason.is_empty() {
            return fail(format!("usage: :skip {name} REASON (the reason is recorded in the run's journal)"));
        }
        if let Err(e) = self.own_run(false).await {
            return fail(e);
        }
        let run_id = self.attached.as_ref().map(|a| a.run.id.clone()).unwrap_or_default();
        let who = self.session.who.clone();
        let reason = crate::secret::redact(&reason).into_owned();
        rec.status = StepStatus::Skipped;
        rec.actor = Some(who.clone());
        rec.error = Some(format!("skipped by {who}: {reason}"));
        rec.finished_at = Some(journal::now_ts());
        if let Err(e) = self.journal.put_step(&run_id, &self.ctx.me, &rec).await {
            return fail(e.to_string());
        }
        self.run_event(
            &run_id,
            "step_skipped",
            &name,
            json!({"actor": who, "reason": reason, "session": self.session.id}),
        )
        .await;
        if let Err(e) = self.refresh().await {
            return fail(e);
        }
        ok(format!("step '{name}' recorded as skipped by {who}: {reason}\nnext: :resume"))
    }

    /// `:approve [COMMENT]` / `:reject REASON`: the attached run's gate, decided by the session's
    /// user under the gate's policy, as `runbook approve` does.
    async fn decide(&mut self, args: &str, approve: bool) -> Done {
        if let Err(e) = self.refresh().await {
            return fail(e);
        }
        let Some(a) = &self.attached else { return fail("no run attached: :attach RUN first") };
        let run = a.run.clone();
        let mut voter = crate::approval::Voter::os_user();
        voter.name = self.session.who.clone();
        let comment = Some(args.trim().to_string()).filter(|c| !c.is_empty());
        let decision = crate::approval::Decision { approve, comment, via: "repl" };
        let result = crate::approval::decide(self.journal.as_ref(), &run, &voter, &decision).await;
        if let Err(e) = self.refresh().await {
            return fail(e);
        }
        match result {
            Ok((gate, journal::VoteOutcome::Pending { approvals })) => ok(format!(
                "your approval of '{}' is recorded ({approvals} so far); the gate waits for more",
                gate.name
            )),
            Ok((gate, journal::VoteOutcome::Approved { approvers })) => ok(format!(
                "'{}' approved by {}: a worker resumes the run, or :resume here",
                gate.name,
                approvers.join(", ")
            )),
            Ok((gate, _)) => ok(format!("'{}' rejected: the run is cancelled", gate.name)),
            Err(e) => fail(e.to_string()),
        }
    }

    async fn run_event(&self, run_id: &str, event: &str, step: &str, data: serde_json::Value) {
        let mut data = data;
        crate::secret::redact_json(&mut data);
        let record = EventRecord {
            run_id: run_id.to_string(),
            ts: journal::now_ts(),
            event: event.into(),
            step: Some(step.to_string()),
            data,
        };
        if let Err(e) = self.journal.append_events(&[record]).await {
            eprintln!("warning: the run's event was not recorded: {e}");
        }
    }

    async fn resume(&mut self, args: &str) -> Done {
        let mut allow_changed = false;
        let mut params = Vec::new();
        for w in args.split_whitespace() {
            match w {
                "--allow-changed" => allow_changed = true,
                _ => match w.split_once('=') {
                    Some((k, v)) if !k.is_empty() => params.push((k.to_string(), v.to_string())),
                    _ => return fail("usage: :resume [--allow-changed] [key=value ...]"),
                },
            }
        }
        if let Err(e) = self.refresh().await {
            return fail(e);
        }
        let Some(a) = &self.attached else { return fail("no run attached: :attach RUN first") };
        let path = match crate::commands::resumable(&a.run, allow_changed, ":resume --allow-changed to run it anyway") {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        let run_id = a.run.id.clone();
        let inv = Invocation {
            params,
            trigger: a.run.trigger.clone(),
            supplied: self.supplied.clone(),
            resume: Some((a.run.clone(), a.steps.clone())),
            ..Invocation::new(path, Mode::Run)
        };
        let outcome = engine::execute(inv, Some(self.journal.clone()), Reporter::new(Format::Text)).await;
        if let Ok(o) = &outcome {
            // As `runbook resume` does: the [notify] webhook of runbook.toml.
            crate::commands::after_run(self.state.as_deref(), o, &crate::cli::ExecArgs::default(), false).await;
        }
        let _ = self.refresh().await;
        let attached_again = self.reload_attached().await;
        match outcome {
            Ok(o) => {
                let mut text = format!("run {run_id} is {}", o.status);
                if let Err(e) = attached_again {
                    text.push_str(&format!("\nnote: {e}"));
                }
                Done { ok: o.status == RunStatus::Succeeded, text }
            }
            Err(e) => fail(format!("run {run_id}: {e}")),
        }
    }

    /// `:param NAME`: reads a value without echo and gives it to the attached run (and later
    /// loads) as a params file would; it is a secret from then on, whatever the param's type.
    async fn param(&mut self, args: &str) -> Done {
        let name = args.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return fail("usage: :param NAME (the value is read next, without echo)");
        }
        if let Some(params) = self.attached.as_ref().and_then(|a| a.params.as_ref()) {
            let mut declared: Vec<String> =
                params.pairs::<String, Value>().filter_map(Result::ok).map(|(k, _)| k).collect();
            if !declared.iter().any(|d| d == name) {
                declared.sort();
                return fail(format!(
                    "the attached run has no param '{name}' (its params: {})",
                    if declared.is_empty() { "none".to_string() } else { declared.join(", ") }
                ));
            }
        }
        let value = match crate::process::read_hidden(&format!("{name} (not echoed): ")) {
            Ok(Some(v)) if !v.is_empty() => v,
            Ok(_) => return fail(format!("no value typed for '{name}': nothing changed")),
            Err(e) => return fail(format!("cannot read the value: {e}")),
        };
        crate::secret::register(&value, name);
        let previous = self.supplied.insert(name.to_string(), toml::Value::String(value));
        if self.attached.is_none() {
            return ok(format!("'{name}' is kept for the next :load and :attach"));
        }
        let given = |lua: &mlua::Lua| {
            let params = lua.globals().get::<Option<Table>>("params").ok().flatten();
            match params.map(|p| p.get::<Value>(name)) {
                Some(Ok(Value::Table(t))) => !crate::lua::is_placeholder(&t),
                Some(Ok(Value::Nil)) | Some(Err(_)) | None => false,
                Some(Ok(_)) => true,
            }
        };
        match self.reload_attached().await {
            Ok(()) if given(&self.lua) => ok(format!("'{name}' given to the attached run: :retry and :resume use it")),
            Ok(()) => {
                match previous {
                    Some(p) => self.supplied.insert(name.to_string(), p),
                    None => self.supplied.remove(name),
                };
                fail(format!("the attached run did not take '{name}'; `run.params` shows what it has"))
            }
            Err(e) => {
                match previous {
                    Some(p) => self.supplied.insert(name.to_string(), p),
                    None => self.supplied.remove(name),
                };
                fail(e)
            }
        }
    }

    /// After a resume: loads the run's steps again (their recorded results changed).
    async fn reload_attached(&mut self) -> Result<(), String> {
        let Some(a) = &self.attached else { return Ok(()) };
        // An ended run has nothing left to retry: its top-level code is not run again.
        if a.run.effective_status().is_final() {
            if let Some(a) = &mut self.attached {
                a.captured.clear();
            }
            return Ok(());
        }
        let (run, steps) = (a.run.clone(), a.steps.clone());
        let path = PathBuf::from(&run.path);
        let source = std::fs::read_to_string(&path).unwrap_or_else(|_| run.source.clone());
        let (loaded, note) = self.load_source(&path, &source, vec![], Some((run, steps))).await;
        let params = self.lua.globals().get::<Option<Table>>("params").ok().flatten();
        if let Some(a) = &mut self.attached {
            a.captured = loaded.captured();
            a.stopped_at = loaded.load_stopped_at();
            a.params = params;
        }
        match note {
            Some(n) => Err(n),
            None => Ok(()),
        }
    }

    async fn timeline(&mut self, args: &str) -> Done {
        let events = match self.journal.session_events(&self.session.id).await {
            Ok(e) => e,
            Err(e) => return fail(e.to_string()),
        };
        let text = super::record::timeline(&self.session, &events);
        if args.is_empty() {
            return ok(text);
        }
        match std::fs::write(args, &text) {
            Ok(()) => ok(format!("wrote the session's timeline ({} entries) to {args}", events.len())),
            Err(e) => fail(format!("cannot write {args}: {e}")),
        }
    }
}

/// `STEP REST`, where STEP may be quoted: `"restore db" it failed` or `dump reason`.
/// A step name and what follows it: a quoted name, else the longest of `known` the arguments
/// start with (so `:retry archive refunded orders` names the step "archive refunded orders"),
/// else the first word.
fn split_step_arg(args: &str, known: &[String]) -> (String, String) {
    let args = args.trim();
    for q in ['"', '\''] {
        if let Some(rest) = args.strip_prefix(q) {
            if let Some((name, after)) = rest.split_once(q) {
                return (name.to_string(), after.trim().to_string());
            }
        }
    }
    let longest = known
        .iter()
        .filter(|n| {
            args == n.as_str() || args.strip_prefix(n.as_str()).is_some_and(|r| r.starts_with(char::is_whitespace))
        })
        .max_by_key(|n| n.len());
    if let Some(name) = longest {
        return (name.clone(), args[name.len()..].trim().to_string());
    }
    match args.split_once(char::is_whitespace) {
        Some((name, rest)) => (name.to_string(), rest.trim().to_string()),
        None => (args.to_string(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::split_step_arg;

    #[test]
    fn step_arguments() {
        let known = vec!["dump".to_string(), "archive refunded orders".to_string(), "archive".to_string()];
        assert_eq!(split_step_arg("dump", &known), ("dump".into(), String::new()));
        assert_eq!(split_step_arg("dump disk full, freed", &known), ("dump".into(), "disk full, freed".into()));
        assert_eq!(split_step_arg("\"restore db\" done by hand", &known), ("restore db".into(), "done by hand".into()));
        assert_eq!(
            split_step_arg("archive refunded orders", &known),
            ("archive refunded orders".into(), String::new())
        );
        assert_eq!(
            split_step_arg("archive refunded orders done by hand", &known),
            ("archive refunded orders".into(), "done by hand".into())
        );
        assert_eq!(split_step_arg("archive old", &known), ("archive".into(), "old".into()));
    }
}
