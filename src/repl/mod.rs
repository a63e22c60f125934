//! `runbook repl`: the incident REPL. The same sandbox and primitives as runbooks, live, in a
//! line editor with completion and history; attached to a run, an engineer inspects what a
//! failed step saw, retries or skips it, and resumes the run, all in that run's journal. Every
//! chunk is recorded as an event of the session, for the postmortem.
mod commands;
mod complete;
mod help;
mod record;
mod show;

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::chunk::ChunkMode;
use mlua::{Function, HookTriggers, Lua, MultiValue, Value, VmState};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{CompletionType, Config, Editor};

use crate::engine::{self, Captured, Ctx, Mode};
use crate::error::{exit, Error, Result};
use crate::journal::{self, Journal, RunRecord, SessionEvent, SessionRecord, StepRecord};
use crate::output::Reporter;

pub use record::timeline;

/// The globals only the REPL has (stubs in stdlib/types/repl.lua): set at start (`inventory`,
/// `stdlib`) or by a command (`run`, `steps`, `result`) or an expression (`_`).
pub const GLOBALS: &[&str] = &["inventory", "stdlib", "run", "steps", "result", "_"];

/// What `runbook repl` was asked.
pub struct Options {
    pub state: Option<String>,
    /// Attach to this run at start (id, prefix or `last`).
    pub attach: Option<String>,
}

/// The run the session is attached to.
struct Attached {
    run: RunRecord,
    steps: Vec<StepRecord>,
    /// The step functions the load reached.
    captured: Vec<Captured>,
    /// `params` as the load resolved them for the run (a later `:load` replaces the global).
    params: Option<mlua::Table>,
    /// Where the load stopped: the first step not done, or a gate not approved.
    stopped_at: Option<String>,
}

pub struct Repl {
    /// The journal as given (`--state`), for what runs after a `:resume`.
    state: Option<String>,
    lua: Lua,
    ctx: Rc<Ctx>,
    journal: Arc<dyn Journal>,
    session: SessionRecord,
    seq: i64,
    attached: Option<Attached>,
    /// Set by Ctrl-C while a chunk runs; the instruction hook stops pure-Lua loops with it.
    interrupted: Arc<AtomicBool>,
    /// Whether a chunk (or a step being retried) is running: Ctrl-C cancels it.
    in_call: Arc<AtomicBool>,
    /// Counts the Ctrl-Cs that arrived during calls; a call waits for it to change.
    sigints: tokio::sync::watch::Sender<u64>,
    history: Option<PathBuf>,
    /// `:timing`: each evaluation's time is printed after it, as psql's `\\timing`.
    timing: bool,
    /// `:pager`: a result longer than the terminal goes through the pager, as in psql.
    pager: bool,
    /// Params typed with `:param NAME` (not echoed, never on a command line or in the history).
    supplied: toml::Table,
    /// The redactor's generation when the session's record and history were last scrubbed.
    scrubbed_at: u64,
}

/// How an evaluation ended.
/// What Ctrl-C asked to stop during a call, in words.
enum Stopping {
    /// Statements a cancel request reached on their servers.
    Statements(String),
    /// Local commands whose process groups got SIGTERM.
    Commands(String),
}

impl Stopping {
    /// What happened, from the call's answer (None: no answer within [`SERVER_ANSWER`]).
    async fn outcome(self, answer: Option<mlua::Result<MultiValue>>, label: &str) -> Outcome {
        let (said, values) = match (self, answer) {
            (Stopping::Statements(what), Some(Ok(values))) => {
                (format!("Ctrl-C: the statement completed before the cancel reached {what}; its result:"), values)
            }
            (Stopping::Commands(what), Some(Ok(values))) => {
                (format!("Ctrl-C: SIGTERM sent to {what}; the call completed; its result:"), values)
            }
            (Stopping::Statements(what), Some(Err(e))) => {
                let error = describe_error(&e);
                let said = if error.contains("57014") {
                    format!("Ctrl-C: cancelled on the server: {what} stopped ({error})")
                } else {
                    format!("Ctrl-C: the cancel was sent to {what}; the call ended with: {error}")
                };
                (said, MultiValue::new())
            }
            (Stopping::Commands(what), Some(Err(e))) => (
                format!("Ctrl-C: SIGTERM delivered to {what}; its exit was seen: {}", describe_error(&e)),
                MultiValue::new(),
            ),
            (Stopping::Statements(what), None) => {
                let more = crate::primitives::db::orphans::terminate_label(label).await;
                let more = if more.is_empty() { String::new() } else { format!(" ({})", more.join("; ")) };
                let said = format!(
                    "Ctrl-C: {what} did not answer the cancel within {}s; the connection was dropped{more}",
                    SERVER_ANSWER.as_secs()
                );
                (said, MultiValue::new())
            }
            // The call's future is dropped by the caller: the command's group gets SIGKILL.
            (Stopping::Commands(what), None) => (
                format!("Ctrl-C: {what} did not exit within {}s of SIGTERM: killed (SIGKILL)", SERVER_ANSWER.as_secs()),
                MultiValue::new(),
            ),
        };
        Outcome::ServerAnswered { said, values: values.into_iter().collect() }
    }
}

/// How long Ctrl-C waits for the server's answer to its cancel request.
const SERVER_ANSWER: Duration = Duration::from_secs(3);

pub(super) enum Outcome {
    Values(Vec<Value>),
    Failed(String),
    Interrupted,
    /// Ctrl-C during a statement: what the server did about the cancel request, and what the
    /// call returned if it completed first.
    ServerAnswered {
        said: String,
        values: Vec<Value>,
    },
}

pub async fn run(opts: Options) -> Result<u8> {
    let started = Instant::now();
    let config = crate::config::get().map_err(Error::Usage)?;
    let journal = journal::open(opts.state.as_deref()).await?;
    // The REPL owns the terminal: a gate met by `:resume` stops the run at waiting_approval.
    engine::disable_prompts();
    engine::keep_process_on_second_signal();
    let mut repl = Repl::new(journal.clone(), &config)?;
    repl.state = opts.state.clone();
    // The session is recorded with its first entry: `runbook repl </dev/null` leaves nothing.
    let mut editor = repl.editor(&config)?;
    // After the editor: rustyline installs its own SIGINT handler when it is created, and tokio's
    // must be installed over it for Ctrl-C to reach a running call.
    watch_sigint(Arc::clone(&repl.interrupted), Arc::clone(&repl.in_call), repl.sigints.clone())?;
    tracing::debug!("repl ready in {:?}", started.elapsed());
    if let Some(reference) = &opts.attach {
        let line = format!(":attach {reference}");
        if !repl.command(&line).await {
            repl.session.ended_at = Some(journal::now_ts());
            repl.journal.put_session(&repl.session).await?;
            journal.close().await;
            return Err(Error::Usage(format!("cannot attach to run '{reference}'")));
        }
    } else {
        println!("runbook repl: session {} (:help for help, Ctrl-D to leave)", repl.session.id);
    }
    repl.read_eval_print(&mut editor).await;
    if repl.seq > 0 {
        repl.session.ended_at = Some(journal::now_ts());
        repl.journal.put_session(&repl.session).await?;
    }
    journal.close().await;
    Ok(exit::OK)
}

impl Repl {
    fn new(journal: Arc<dyn Journal>, config: &crate::config::Config) -> Result<Repl> {
        let cwd = std::env::current_dir().map_err(|e| Error::Io(format!("current directory: {e}")))?;
        let setup = |e: mlua::Error| Error::Io(format!("cannot set up the REPL's Lua: {e}"));
        let lua = crate::lua::new_sandbox(&cwd, None).map_err(setup)?;
        let ctx = Ctx::standalone(
            Mode::Run,
            "repl".into(),
            cwd.join("repl"),
            Some(journal.clone()),
            Reporter::for_repl(),
            (Vec::new(), toml::Table::new()),
            None,
        );
        lua.set_app_data(Rc::clone(&ctx));
        engine::register_globals(&lua).map_err(setup)?;
        let interrupted = Arc::new(AtomicBool::new(false));
        let in_call = Arc::new(AtomicBool::new(false));
        let (sigints, _) = tokio::sync::watch::channel(0u64);
        let flag = Arc::clone(&interrupted);
        lua.set_global_hook(HookTriggers::new().every_nth_instruction(10_000), move |_, _| {
            if flag.load(Ordering::SeqCst) {
                return Err(mlua::Error::runtime("interrupted (Ctrl-C)"));
            }
            Ok(VmState::Continue)
        })
        .map_err(setup)?;
        install_extras(&lua, config).map_err(setup)?;
        // `pcall` and friends raise Ctrl-C again (stdlib/internal/stoppable.lua, as for runs).
        let flag = Arc::clone(&interrupted);
        let must_stop = lua
            .create_function(move |_, ()| {
                if flag.load(Ordering::SeqCst) {
                    return Err(mlua::Error::runtime("interrupted (Ctrl-C)"));
                }
                Ok(())
            })
            .map_err(setup)?;
        let install: Function =
            crate::lua::run_internal(&lua, "internal.stoppable").and_then(|v| lua.unpack(v)).map_err(setup)?;
        install.call::<()>(must_stop).map_err(setup)?;
        let session = SessionRecord {
            id: engine::new_run_id(),
            who: crate::process::username(),
            host: crate::process::hostname(),
            pid: std::process::id() as i64,
            started_at: journal::now_ts(),
            ended_at: None,
            run_id: None,
            events: 0,
        };
        let _ = engine::REPL_LABEL.set(format!("runbook/repl/{}", session.id));
        Ok(Repl {
            state: None,
            lua,
            ctx,
            journal,
            session,
            seq: 0,
            attached: None,
            interrupted,
            in_call,
            sigints,
            history: history_path(),
            supplied: toml::Table::new(),
            timing: false,
            pager: std::env::var("RUNBOOK_PAGER").map(|v| v != "off").unwrap_or(true),
            scrubbed_at: crate::secret::generation(),
        })
    }

    fn editor(&self, config: &crate::config::Config) -> Result<Editor<complete::ReplHelper, FileHistory>> {
        let cfg = Config::builder()
            .auto_add_history(false)
            .history_ignore_dups(true)
            .and_then(|b| b.max_history_size(10_000))
            .map(|b| b.completion_type(CompletionType::List).build())
            .map_err(|e| Error::Io(format!("line editor: {e}")))?;
        let mut editor: Editor<complete::ReplHelper, FileHistory> =
            Editor::with_config(cfg).map_err(|e| Error::Io(format!("line editor: {e}")))?;
        let groups: Vec<String> = config.hosts.keys().cloned().collect();
        let mut hosts: Vec<String> = config.hosts.values().flat_map(|g| g.hosts.iter().cloned()).collect();
        hosts.sort();
        hosts.dedup();
        editor.set_helper(Some(complete::ReplHelper { lua: self.lua.clone(), groups, hosts }));
        if let Some(path) = &self.history {
            prepare_history_file(path);
            if path.exists() {
                if let Err(e) = editor.load_history(path) {
                    eprintln!("warning: history {}: {e}", path.display());
                }
            }
        }
        Ok(editor)
    }

    fn prompt(&self, continuation: bool) -> String {
        if continuation {
            return "...> ".into();
        }
        match &self.attached {
            Some(a) => format!("runbook[{}]> ", a.run.id),
            None => "runbook> ".into(),
        }
    }

    async fn read_eval_print(&mut self, editor: &mut Editor<complete::ReplHelper, FileHistory>) {
        let mut buffer = String::new();
        loop {
            let prompt = self.prompt(!buffer.is_empty());
            match editor.readline(&prompt) {
                Ok(line) => {
                    if buffer.is_empty() && line.trim().is_empty() {
                        continue;
                    }
                    if buffer.is_empty() && line.trim_start().starts_with(':') {
                        let line = line.trim().to_string();
                        let quit = matches!(line.as_str(), ":quit" | ":q" | ":exit");
                        if !quit {
                            self.command(&line).await;
                        }
                        self.remember(editor, &line);
                        self.scrub_if_needed(editor).await;
                        if quit {
                            break;
                        }
                        continue;
                    }
                    if !buffer.is_empty() {
                        buffer.push('\n');
                    }
                    buffer.push_str(&line);
                    match compile(&self.lua, &buffer) {
                        Compiled::Incomplete => continue,
                        compiled => {
                            let chunk = std::mem::take(&mut buffer);
                            self.evaluate(&chunk, compiled).await;
                            self.remember(editor, &chunk);
                            self.scrub_if_needed(editor).await;
                        }
                    }
                }
                // Ctrl-C at the prompt clears the line (and a chunk being continued).
                Err(ReadlineError::Interrupted) => {
                    buffer.clear();
                }
                Err(ReadlineError::Eof) => {
                    if buffer.is_empty() {
                        break;
                    }
                    buffer.clear();
                }
                Err(e) => {
                    eprintln!("error: line editor: {e}");
                    break;
                }
            }
        }
    }

    /// Adds a line to the history, redacted with every secret known by now (the chunk itself may
    /// have made one known), and appends it to the history file at once.
    fn remember(&self, editor: &mut Editor<complete::ReplHelper, FileHistory>, line: &str) {
        let line = crate::secret::redact(line).into_owned();
        let _ = editor.add_history_entry(line);
        if let Some(path) = &self.history {
            if let Err(e) = editor.append_history(path) {
                tracing::warn!("history {}: {e}", path.display());
            }
        }
    }

    async fn evaluate(&mut self, chunk: &str, compiled: Compiled) {
        let event = self.begin("lua", chunk, None).await;
        let started = Instant::now();
        let outcome = match compiled {
            Compiled::Error(msg) => Outcome::Failed(msg),
            Compiled::Incomplete => return,
            Compiled::Ready(func) => self.call(func, ()).await,
        };
        let printed = self.ctx.out.take_captured();
        let shown = match &outcome {
            Outcome::Values(values) if !values.is_empty() => {
                let _ = self.lua.globals().set("_", values[0].clone());
                let text = show::values(values);
                self.page(&text);
                text
            }
            Outcome::Values(_) => String::new(),
            Outcome::Failed(msg) => {
                let msg = crate::secret::redact(msg).into_owned();
                eprintln!("error: {msg}");
                msg
            }
            Outcome::Interrupted => {
                eprintln!("interrupted (Ctrl-C); the session is intact");
                "interrupted (Ctrl-C)".into()
            }
            Outcome::ServerAnswered { said, values } => {
                let text = if values.is_empty() { String::new() } else { show::values(values) };
                eprintln!("{said}");
                print!("{text}");
                format!("{said}\n{text}")
            }
        };
        let ok = matches!(outcome, Outcome::Values(_));
        if self.timing {
            println!("Time: {:.3} ms", started.elapsed().as_secs_f64() * 1000.0);
        }
        self.complete(event, ok, started.elapsed(), &format!("{printed}{shown}")).await;
    }

    /// Calls a function of the session, cancelled by Ctrl-C: the call's future is dropped (a
    /// query, an HTTP wait, a sleep, a command end there) and a pure-Lua loop is stopped by the
    /// instruction hook (which keeps raising until the call returns, so a `pcall` in a loop
    /// cannot hold it).
    pub(super) async fn call(&self, func: Function, args: impl mlua::IntoLuaMulti) -> Outcome {
        self.interrupted.store(false, Ordering::SeqCst);
        let mut sigint = self.sigints.subscribe();
        self.in_call.store(true, Ordering::SeqCst);
        let mut call = std::pin::pin!(func.call_async::<MultiValue>(args));
        let result = tokio::select! {
            r = &mut call => Some(r),
            _ = sigint.changed() => None,
        };
        let result = match result {
            Some(r) => Some(r),
            // Ctrl-C: a statement running on a server is told to stop there (a real cancel
            // request), and the call is awaited a little longer, so that what is reported is
            // what the server did: cancelled, or completed before the cancel arrived.
            None => {
                let label = self.ctx.work_label().text;
                let reached = crate::primitives::db::orphans::cancel_label(&label).await;
                let stopping = if !reached.is_empty() {
                    Some(Stopping::Statements(reached.join(", ")))
                } else {
                    let signalled = crate::primitives::exec::terminate_running();
                    let mut what: Vec<String> =
                        signalled.iter().map(|(pgid, cmd)| format!("`{cmd}` (process group {pgid})")).collect();
                    what.extend(
                        crate::primitives::ssh::interrupt_running()
                            .into_iter()
                            .map(|cmd| format!("{cmd} (its remote process group)")),
                    );
                    (!what.is_empty()).then(|| Stopping::Commands(what.join(", ")))
                };
                if let Some(stopping) = stopping {
                    // The hook must not turn a call that completed into an interruption.
                    self.interrupted.store(false, Ordering::SeqCst);
                    let answer = tokio::select! {
                        r = &mut call => Some(r),
                        _ = tokio::time::sleep(SERVER_ANSWER) => None,
                        _ = sigint.changed() => None,
                    };
                    self.in_call.store(false, Ordering::SeqCst);
                    self.interrupted.store(false, Ordering::SeqCst);
                    return stopping.outcome(answer, &label).await;
                }
                None
            }
        };
        self.in_call.store(false, Ordering::SeqCst);
        let interrupted = self.interrupted.swap(false, Ordering::SeqCst);
        match result {
            // Finished, even if Ctrl-C came as it did: what it did is what happened.
            Some(Ok(values)) => Outcome::Values(values.into_iter().collect()),
            None => Outcome::Interrupted,
            Some(Err(_)) if interrupted => Outcome::Interrupted,
            Some(Err(e)) => Outcome::Failed(describe_error(&e)),
        }
    }

    /// Journals an event of the session before it runs (so that a chunk that hangs or ends the
    /// process is on record), to be completed by [`Repl::complete`].
    async fn begin(&mut self, kind: &str, input: &str, run: Option<&str>) -> SessionEvent {
        if self.seq == 0 {
            if let Err(e) = self.journal.put_session(&self.session).await {
                eprintln!("warning: this session is not recorded: {e}");
            }
        }
        self.seq += 1;
        let event = SessionEvent {
            session_id: self.session.id.clone(),
            seq: self.seq,
            at: journal::now_ts(),
            kind: kind.into(),
            input: crate::secret::redact(input).into_owned(),
            ok: false,
            duration_ms: 0,
            output: "(running)".into(),
            run_id: run.map(str::to_string),
        };
        if let Err(e) = self.journal.session_event(&event).await {
            eprintln!("warning: this entry was not recorded in the session: {e}");
        }
        event
    }

    /// Completes an event with its outcome, redacted with every secret known by now.
    async fn complete(&mut self, mut event: SessionEvent, ok: bool, took: Duration, output: &str) {
        event.input = crate::secret::redact(&event.input).into_owned();
        event.ok = ok;
        event.duration_ms = took.as_millis() as i64;
        event.output = record::excerpt(output);
        if let Err(e) = self.journal.session_event(&event).await {
            eprintln!("warning: this entry was not recorded in the session: {e}");
        }
    }

    /// When a secret became known since the last look, scrubs its value from what the session
    /// recorded before (events and the history file), as runs do with their journal rows.
    async fn scrub_if_needed(&mut self, editor: &mut Editor<complete::ReplHelper, FileHistory>) {
        let generation = crate::secret::generation();
        if generation == self.scrubbed_at {
            return;
        }
        self.scrubbed_at = generation;
        if let Ok(events) = self.journal.session_events(&self.session.id).await {
            for mut e in events {
                let (input, output) = (crate::secret::redact(&e.input), crate::secret::redact(&e.output));
                if input != e.input || output != e.output {
                    (e.input, e.output) = (input.into_owned(), output.into_owned());
                    if let Err(err) = self.journal.session_event(&e).await {
                        eprintln!("warning: could not scrub the session's record: {err}");
                    }
                }
            }
        }
        if let Some(path) = &self.history {
            let Ok(text) = std::fs::read_to_string(path) else { return };
            let clean = crate::secret::redact(&text);
            if clean != text {
                if let Err(e) = std::fs::write(path, clean.as_bytes()) {
                    eprintln!("warning: could not scrub the history file {}: {e}", path.display());
                    return;
                }
                rustyline::history::History::clear(editor.history_mut()).ok();
                let _ = editor.load_history(path);
            }
        }
    }
}

/// One SIGINT watcher for the session. During a call, Ctrl-C cancels it (the flag for the hook,
/// the counter for the waiting call). Outside one (the REPL waiting on its journal), a second
/// Ctrl-C within two seconds leaves, so a hung journal cannot hold the terminal.
fn watch_sigint(
    flag: Arc<AtomicBool>,
    in_call: Arc<AtomicBool>,
    counter: tokio::sync::watch::Sender<u64>,
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sig = signal(SignalKind::interrupt()).map_err(|e| Error::Io(format!("cannot watch for Ctrl-C: {e}")))?;
    tokio::spawn(async move {
        let mut last: Option<Instant> = None;
        while sig.recv().await.is_some() {
            if in_call.load(Ordering::SeqCst) {
                flag.store(true, Ordering::SeqCst);
                counter.send_modify(|n| *n += 1);
                continue;
            }
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(2)) {
                eprintln!("\ninterrupted twice while waiting: leaving");
                std::process::exit(i32::from(exit::INTERRUPTED));
            }
            eprintln!("\n(waiting for the journal; Ctrl-C again to leave)");
            last = Some(Instant::now());
        }
    });
    Ok(())
}

/// A chunk, compiled: as an expression whose values print, else as a statement.
impl Repl {
    /// Prints a result; one longer than the terminal goes through the pager (`$RUNBOOK_PAGER`,
    /// else `$PAGER`, else `less -FRX`), as psql does. Off a terminal, or with `:pager off`,
    /// it is printed as it is.
    pub(super) fn page(&self, text: &str) {
        use std::io::{IsTerminal, Write};
        let rows = terminal_rows();
        let long = rows.is_some_and(|r| text.lines().count() + 1 >= r);
        if !(self.pager && long && std::io::stdout().is_terminal()) {
            print!("{text}");
            return;
        }
        let command =
            std::env::var("RUNBOOK_PAGER").or_else(|_| std::env::var("PAGER")).unwrap_or_else(|_| "less -FRX".into());
        let spawned =
            std::process::Command::new("/bin/sh").arg("-c").arg(&command).stdin(std::process::Stdio::piped()).spawn();
        let Ok(mut child) = spawned else {
            print!("{text}");
            return;
        };
        // Ctrl-C in the pager is the pager's, not a request to leave the REPL.
        self.in_call.store(true, Ordering::SeqCst);
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(text.as_bytes());
        }
        let _ = child.wait();
        self.in_call.store(false, Ordering::SeqCst);
    }
}

/// The terminal's height, when stdout is one.
fn terminal_rows() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills a winsize; on a non-terminal it fails and nothing is read.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_row > 0).then_some(size.ws_row as usize)
}

pub(super) enum Compiled {
    Ready(Function),
    Incomplete,
    Error(String),
}

pub(super) fn compile(lua: &Lua, chunk: &str) -> Compiled {
    let load = |text: &str| lua.load(text).set_name("=repl").set_mode(ChunkMode::Text).into_function();
    if let Ok(f) = load(&format!("return {chunk}")) {
        return Compiled::Ready(f);
    }
    match load(&session_locals(chunk)) {
        Ok(f) => Compiled::Ready(f),
        Err(mlua::Error::SyntaxError { incomplete_input: true, .. }) => Compiled::Incomplete,
        Err(e) => Compiled::Error(describe_error(&e)),
    }
}

/// `local x = ...` and `local function f` at the start of a chunk declare session variables:
/// each chunk is its own function, where a local would be gone by the next line.
fn session_locals(chunk: &str) -> String {
    static FUNCTION: std::sync::OnceLock<regex_lite::Regex> = std::sync::OnceLock::new();
    static NAMES: std::sync::OnceLock<regex_lite::Regex> = std::sync::OnceLock::new();
    let function = FUNCTION.get_or_init(|| regex_lite::Regex::new(r"^(\s*)local\s+function\s").expect("regex"));
    let names = NAMES.get_or_init(|| {
        regex_lite::Regex::new(r"^(\s*)local\s+([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*\s*=)").expect("regex")
    });
    if function.is_match(chunk) {
        return function.replace(chunk, "${1}function ").into_owned();
    }
    names.replace(chunk, "${1}${2}").into_owned()
}

/// An error as one message: `repl:1: cause`, or `FILE:LINE: cause` inside a loaded runbook.
fn describe_error(e: &mlua::Error) -> String {
    let (msg, loc) = crate::lua::errors::describe(e);
    let text = match loc {
        Some(l) if !msg.starts_with(&l.to_string()) => format!("{l}: {msg}"),
        _ => msg,
    };
    crate::secret::redact(&text).into_owned()
}

/// `inventory` (the host groups of runbook.toml) and `stdlib` (the embedded modules).
fn install_extras(lua: &Lua, config: &crate::config::Config) -> mlua::Result<()> {
    let inventory = lua.create_table()?;
    for (name, group) in &config.hosts {
        inventory.set(name.as_str(), group.hosts.clone())?;
    }
    lua.globals().set("inventory", inventory)?;
    let stdlib = lua.create_table()?;
    let require: Function = lua.globals().get("require")?;
    for name in crate::lua::embedded_names().filter(|n| n.starts_with("runbook.")) {
        let short = name.trim_start_matches("runbook.");
        stdlib.set(short, require.call::<Value>(name)?)?;
    }
    lua.globals().set("stdlib", stdlib)
}

/// `$XDG_STATE_HOME/runbook/history`, else `~/.local/state/runbook/history`; none with
/// RUNBOOK_HISTORY=off.
fn history_path() -> Option<PathBuf> {
    match std::env::var("RUNBOOK_HISTORY") {
        Ok(v) if v == "off" => return None,
        Ok(v) if !v.is_empty() => return Some(PathBuf::from(v)),
        _ => {}
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("runbook").join("history"))
}

/// The history folder (0700) and file (0600) exist and are the user's alone.
fn prepare_history_file(path: &std::path::Path) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        if !dir.exists() && std::fs::create_dir_all(dir).is_ok() {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    // Only a regular file is made ours (RUNBOOK_HISTORY=/dev/null stays a device, untouched).
    if crate::files::check_replaceable(path).is_ok() {
        let _ = std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(path);
        let _ = crate::files::restrict_regular_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every global the REPL adds to a runbook's environment is one of [`GLOBALS`], and each of
    /// those has a stub in stdlib/types/repl.lua, and nothing else is declared there.
    #[tokio::test(flavor = "current_thread")]
    async fn repl_globals_have_stubs() {
        let dir = tempfile::tempdir().unwrap();
        let journal: Arc<dyn Journal> =
            Arc::new(journal::SqliteJournal::open(&dir.path().join("j.db"), false).await.unwrap());
        let repl = Repl::new(journal, &crate::config::Config::default()).unwrap();
        let plain = crate::lua::new_sandbox(dir.path(), None).unwrap();
        crate::engine::register_globals(&plain).unwrap();
        for (name, _) in repl.lua.globals().pairs::<String, Value>().flatten() {
            if plain.globals().raw_get::<Value>(name.as_str()).unwrap().is_nil() {
                assert!(GLOBALS.contains(&name.as_str()), "the REPL sets `{name}`, which GLOBALS does not list");
            }
        }
        let stubs = include_str!("../../stdlib/types/repl.lua");
        let declared: Vec<&str> = stubs
            .lines()
            .filter_map(|l| l.split_once(" = ").map(|(n, _)| n))
            .filter(|n| !n.starts_with('-') && !n.contains(' '))
            .collect();
        let mut want: Vec<&str> = GLOBALS.to_vec();
        want.sort();
        let mut got = declared.clone();
        got.sort();
        assert_eq!(got, want, "stdlib/types/repl.lua declares {declared:?}");
    }

    #[test]
    fn session_locals_and_incomplete_chunks() {
        assert_eq!(session_locals("local x = 1"), "x = 1");
        assert_eq!(session_locals("local a, b = 1, 2"), "a, b = 1, 2");
        assert_eq!(session_locals("local function f() end"), "function f() end");
        assert_eq!(session_locals("local x"), "local x");
        assert_eq!(session_locals("x = 'local y = 2'"), "x = 'local y = 2'");
        let lua = Lua::new();
        assert!(matches!(compile(&lua, "function f()"), Compiled::Incomplete));
        assert!(matches!(compile(&lua, "t = {"), Compiled::Incomplete));
        assert!(matches!(compile(&lua, "s = [[open"), Compiled::Incomplete));
        assert!(matches!(compile(&lua, "x = = 1"), Compiled::Error(_)));
        assert!(matches!(compile(&lua, "1 + 1"), Compiled::Ready(_)));
    }
}
