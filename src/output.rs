//! The run's event stream: live progress on a terminal, plain lines otherwise, or one JSON
//! object per line. Every event is redacted once, here, before it is shown or journaled.
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Map, Value as Json};

use crate::journal::{now_ts, EventRecord, Journal};
use crate::secret::{redact, redact_json};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

enum Style {
    /// Spinners and a summary, for people at a terminal.
    Tty {
        mp: MultiProgress,
        bars: RefCell<HashMap<String, ProgressBar>>,
    },
    /// One timestamped line per event, for logs and pipes.
    Plain,
    Json,
    /// The REPL: one line per event without timestamps, also kept for the session's record.
    Repl {
        captured: RefCell<String>,
    },
    /// `runbook test`: nothing shown; the run's events go to its (private) journal only.
    Silent,
}

/// Events waiting to be journaled.
#[derive(Default)]
struct EventBuffer {
    events: std::sync::Mutex<Vec<EventRecord>>,
    closed: tokio::sync::Notify,
    /// Why the last write failed (a full disk...), while events wait unwritten: the engine stops
    /// the run rather than claim work it could not record.
    failure: std::sync::Mutex<Option<String>>,
    /// Asks the writer to write now rather than at its next tick.
    now: tokio::sync::Notify,
    /// Write attempts made so far (each followed by `written`).
    attempts: std::sync::atomic::AtomicU64,
    written: tokio::sync::Notify,
}

/// Events kept for another try when the journal refuses them; past this, the oldest are lost
/// (and the run is stopped anyway).
const MAX_PENDING_EVENTS: usize = 100_000;

pub struct Reporter {
    style: Style,
    run_id: RefCell<Option<String>>,
    buffer: RefCell<Option<Arc<EventBuffer>>>,
    writer: RefCell<Option<tokio::task::JoinHandle<()>>>,
    /// `--cron`: JSON lines on stderr, stdout left quiet.
    to_stderr: bool,
}

impl Reporter {
    pub fn new(format: Format) -> Reporter {
        use std::io::IsTerminal;
        let style = match format {
            Format::Json => Style::Json,
            // A dumb terminal cannot redraw: indicatif would show nothing at all there.
            Format::Text
                if std::io::stdout().is_terminal()
                    && std::env::var_os("RUNBOOK_NO_PROGRESS").is_none()
                    && std::env::var("TERM").map_or(true, |t| t != "dumb") =>
            {
                Style::Tty {
                    mp: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
                    bars: RefCell::new(HashMap::new()),
                }
            }
            Format::Text => Style::Plain,
        };
        Reporter {
            style,
            run_id: RefCell::new(None),
            buffer: RefCell::new(None),
            writer: RefCell::new(None),
            to_stderr: false,
        }
    }

    /// For the REPL's own primitives: plain lines, kept until [`Reporter::take_captured`].
    pub fn for_repl() -> Reporter {
        Reporter { style: Style::Repl { captured: RefCell::new(String::new()) }, ..Reporter::new(Format::Json) }
    }

    /// For a run inside `runbook test`: nothing printed.
    pub fn silent() -> Reporter {
        Reporter { style: Style::Silent, ..Reporter::new(Format::Json) }
    }

    pub fn is_silent(&self) -> bool {
        matches!(self.style, Style::Silent)
    }

    /// What the REPL printed through this reporter since the last call (redacted).
    pub fn take_captured(&self) -> String {
        match &self.style {
            Style::Repl { captured } => std::mem::take(&mut *captured.borrow_mut()),
            _ => String::new(),
        }
    }

    /// A warning outside any run: JSON under --cron, a plain line on stderr otherwise.
    pub fn warn_line(&self, text: &str) {
        let text = redact(text);
        if self.to_stderr {
            let _ = writeln!(self.sink(), "{}", json!({"event": "warning", "message": text.as_ref(), "ts": now_ts()}));
        } else {
            eprintln!("{text}");
        }
    }

    /// For system cron: every event, and every other line, as JSON on stderr; nothing on stdout.
    pub fn for_cron() -> Reporter {
        Reporter { to_stderr: true, ..Reporter::new(Format::Json) }
    }

    fn sink(&self) -> Box<dyn std::io::Write> {
        if self.to_stderr {
            Box::new(std::io::stderr().lock())
        } else {
            Box::new(std::io::stdout().lock())
        }
    }

    pub fn is_json(&self) -> bool {
        matches!(self.style, Style::Json)
    }

    pub fn is_tty(&self) -> bool {
        matches!(self.style, Style::Tty { .. })
    }

    /// From now on events are also written to the journal: emitting only appends to a buffer
    /// (no thread is woken), and a background task writes what gathered every 50ms, in one
    /// statement, so that events never compete with step records for the journal. Step records
    /// are written at once and awaited; events are the run's log and may lag by that window.
    pub fn attach(&self, run_id: &str, journal: Arc<dyn Journal>) {
        *self.run_id.borrow_mut() = Some(run_id.to_string());
        let buffer = Arc::new(EventBuffer::default());
        let shared = Arc::clone(&buffer);
        // (A test's run says nothing, not even this: its journal may be stopped on purpose.)
        let quiet = matches!(self.style, Style::Silent);
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let closing = tokio::select! {
                    _ = tick.tick() => false,
                    _ = shared.now.notified() => false,
                    _ = shared.closed.notified() => true,
                };
                let mut batch = std::mem::take(&mut *shared.events.lock().unwrap_or_else(|p| p.into_inner()));
                // Redacted again: a secret may have become known since the event was emitted.
                for e in &mut batch {
                    redact_json(&mut e.data);
                    if let Some(step) = &mut e.step {
                        *step = redact(step).into_owned();
                    }
                }
                if !batch.is_empty() {
                    let written = journal.append_events(&batch).await;
                    let mut failure = shared.failure.lock().unwrap_or_else(|p| p.into_inner());
                    match written {
                        Ok(()) => *failure = None,
                        Err(e) => {
                            if !quiet {
                                tracing::warn!("could not journal {} events: {e}", batch.len());
                            }
                            *failure = Some(format!("could not record {} event(s) of the run: {e}", batch.len()));
                            // Kept for the next try, in order.
                            let mut events = shared.events.lock().unwrap_or_else(|p| p.into_inner());
                            batch.append(&mut events);
                            let excess = batch.len().saturating_sub(MAX_PENDING_EVENTS);
                            batch.drain(..excess);
                            *events = batch;
                        }
                    }
                }
                shared.attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                shared.written.notify_waiters();
                if closing {
                    break;
                }
            }
        });
        *self.buffer.borrow_mut() = Some(buffer);
        *self.writer.borrow_mut() = Some(handle);
    }

    /// Drops buffered events unwritten (the run belongs to another process now).
    pub fn discard(&self) {
        if let Some(buffer) = self.buffer.borrow_mut().take() {
            buffer.events.lock().unwrap_or_else(|p| p.into_inner()).clear();
            buffer.closed.notify_one();
        }
    }

    /// Waits until every event emitted so far is in the journal. Returns why some could not be
    /// written, if so.
    pub async fn flush(&self) -> Option<String> {
        let buffer = self.buffer.borrow_mut().take();
        if let Some(buffer) = &buffer {
            buffer.closed.notify_one();
        }
        let handle = self.writer.borrow_mut().take();
        if let Some(h) = handle {
            let _ = h.await;
        }
        buffer.and_then(|b| b.failure.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Before a step starts: when many events wait unwritten (a chatty step's output), they are
    /// written now and the outcome awaited, so that a journal refusing them stops the run
    /// before the next step rather than after it. A few lifecycle events wait for the next
    /// tick: their write is small, as is the step record the engine writes itself.
    pub async fn settle(&self) {
        const MANY: usize = 64;
        let Some(buffer) = self.buffer.borrow().clone() else { return };
        if buffer.events.lock().unwrap_or_else(|p| p.into_inner()).len() < MANY {
            return;
        }
        let attempts = || buffer.attempts.load(std::sync::atomic::Ordering::SeqCst);
        let pending = || !buffer.events.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
        let failed = || buffer.failure.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        // (A write already under way when asked may not hold these events: wait for one that
        // found them, or for a failure.)
        let mut seen = attempts();
        buffer.now.notify_one();
        while tokio::time::Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(10), buffer.written.notified()).await;
            if failed() {
                break;
            }
            if attempts() != seen {
                if !pending() {
                    break;
                }
                seen = attempts();
                buffer.now.notify_one();
            }
        }
    }

    /// Why the journal refuses the run's events now, if it does.
    pub fn journal_failure(&self) -> Option<String> {
        self.buffer.borrow().as_ref().and_then(|b| b.failure.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Emits one event. `fields` must be a JSON object; it is redacted here.
    pub fn emit(&self, event: &str, step: Option<&str>, fields: Json) {
        let mut fields = match fields {
            Json::Object(m) => m,
            _ => Map::new(),
        };
        let mut value = Json::Object(std::mem::take(&mut fields));
        redact_json(&mut value);
        let Json::Object(fields) = value else { unreachable!() };
        let step = step.map(|s| redact(s).into_owned());
        let ts = now_ts();
        self.render(event, step.as_deref(), &fields, &ts);
        if event == "log" {
            mirror_to_tracing(self.run_id.borrow().as_deref(), step.as_deref(), &fields);
        }
        let run_id = self.run_id.borrow().clone();
        if let (Some(run_id), Some(buffer)) = (run_id, self.buffer.borrow().as_ref()) {
            let record = EventRecord { run_id, ts, event: event.to_string(), step, data: Json::Object(fields) };
            buffer.events.lock().unwrap_or_else(|p| p.into_inner()).push(record);
        }
    }

    /// Prints a line that is not an event (plan listings, summaries), above any progress bars.
    pub fn line(&self, text: &str) {
        let text = redact(text);
        match &self.style {
            Style::Silent => {}
            Style::Tty { mp, .. } => {
                let _ = mp.println(text.as_ref());
            }
            _ if self.to_stderr => {
                let _ = writeln!(self.sink(), "{}", json!({"event": "line", "text": text.as_ref(), "ts": now_ts()}));
            }
            _ => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
            }
        }
    }

    /// Hides the progress display while a prompt reads from the terminal.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.style {
            Style::Tty { mp, .. } => mp.suspend(f),
            _ => f(),
        }
    }

    fn render(&self, event: &str, step: Option<&str>, f: &Map<String, Json>, ts: &str) {
        match &self.style {
            Style::Json => {
                let mut obj = Map::new();
                obj.insert("event".into(), json!(event));
                obj.insert("run_id".into(), json!(self.run_id.borrow().clone()));
                obj.insert("step".into(), json!(step));
                obj.insert("status".into(), f.get("status").cloned().unwrap_or(Json::Null));
                obj.insert("ts".into(), json!(ts));
                for (k, v) in f {
                    obj.entry(k.clone()).or_insert_with(|| v.clone());
                }
                let _ = writeln!(self.sink(), "{}", Json::Object(obj));
            }
            Style::Silent => {}
            Style::Repl { captured } => {
                if let Some(text) = describe(event, step, f, true) {
                    println!("{text}");
                    let mut c = captured.borrow_mut();
                    if c.len() < 4096 {
                        c.push_str(&text);
                        c.push('\n');
                    }
                }
            }
            Style::Plain => {
                if let Some(text) = describe(event, step, f, false) {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{ts} {text}");
                }
            }
            Style::Tty { mp, bars } => match event {
                "step_started" => {
                    let name = step.unwrap_or("");
                    let pb = mp.add(ProgressBar::new_spinner());
                    pb.set_style(
                        ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    let attempt = f.get("attempt").and_then(Json::as_i64).unwrap_or(1);
                    pb.set_message(if attempt > 1 { format!("{name} (attempt {attempt})") } else { name.to_string() });
                    pb.enable_steady_tick(Duration::from_millis(100));
                    if let Some(old) = bars.borrow_mut().insert(name.to_string(), pb) {
                        old.finish_and_clear();
                    }
                }
                _ => {
                    if matches!(event, "step_finished" | "step_retry") {
                        if let Some(pb) = bars.borrow_mut().remove(step.unwrap_or("")) {
                            pb.finish_and_clear();
                        }
                    }
                    if let Some(text) = describe(event, step, f, true) {
                        let _ = mp.println(text);
                    }
                }
            },
        }
    }
}

fn fields_suffix(f: &Map<String, Json>) -> String {
    match f.get("fields") {
        Some(Json::Object(m)) if !m.is_empty() => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| match v {
                    Json::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect();
            format!(" {}", parts.join(" "))
        }
        _ => String::new(),
    }
}

fn s<'a>(f: &'a Map<String, Json>, key: &str) -> &'a str {
    f.get(key).and_then(Json::as_str).unwrap_or("")
}

fn ms(f: &Map<String, Json>) -> String {
    f.get("duration_ms")
        .and_then(Json::as_u64)
        .map(|m| crate::duration::human(Duration::from_millis(m)))
        .unwrap_or_default()
}

/// The human line for a journaled event, as the live plain output showed it.
pub fn describe_event(event: &str, step: Option<&str>, data: &Json) -> Option<String> {
    match data {
        // Live, the summary line says this; in the journal it is the last event.
        Json::Object(f) if event == "run_finished" => Some(format!(
            "run {} after {}: {} ok, {} failed, {} skipped, {} done earlier{}",
            s(f, "status"),
            ms(f),
            f.get("ok").and_then(Json::as_u64).unwrap_or(0),
            f.get("failed").and_then(Json::as_u64).unwrap_or(0),
            f.get("skipped").and_then(Json::as_u64).unwrap_or(0),
            f.get("recorded").and_then(Json::as_u64).unwrap_or(0),
            f.get("error").and_then(Json::as_str).map(|e| format!(" ({e})")).unwrap_or_default()
        )),
        Json::Object(f) => describe(event, step, f, false),
        _ => None,
    }
}

/// The human line for an event; `tty` drops what the spinner already shows.
fn describe(event: &str, step: Option<&str>, f: &Map<String, Json>, tty: bool) -> Option<String> {
    let name = step.unwrap_or("");
    let tag = if name.is_empty() { String::new() } else { format!("[{name}] ") };
    Some(match event {
        "run_started" => format!("run {} started: {} ({})", s(f, "run_id"), s(f, "runbook"), s(f, "path")),
        "run_resumed" => format!("run {} resumed: {} ({})", s(f, "run_id"), s(f, "runbook"), s(f, "path")),
        "step_started" => {
            if tty {
                return None;
            }
            let attempt = f.get("attempt").and_then(Json::as_i64).unwrap_or(1);
            if attempt > 1 {
                format!("{tag}started (attempt {attempt})")
            } else {
                format!("{tag}started")
            }
        }
        "step_finished" => match s(f, "status") {
            "succeeded" if tty => format!("✓ {name}  {}", ms(f)),
            "dry_run" if tty => format!("✓ {name}  (dry run) {}", ms(f)),
            "skipped" if tty => format!("↷ {name}  skipped"),
            "failed" if tty => format!("✗ {name}  {}\n    {}", ms(f), s(f, "error")),
            "failed" => format!("{tag}failed after {}: {}", ms(f), s(f, "error")),
            "skipped" => format!("{tag}skipped"),
            status => format!("{tag}{status} in {}", ms(f)),
        },
        "step_recorded" => {
            if tty {
                format!("✓ {name}  (done earlier, not run again)")
            } else {
                format!("{tag}done earlier ({}), not run again", s(f, "status"))
            }
        }
        "step_retry" => format!(
            "{}{tag}attempt {} failed: {}; retrying in {}",
            if tty { "↻ " } else { "" },
            f.get("attempt").and_then(Json::as_i64).unwrap_or(0),
            s(f, "error"),
            crate::duration::human(Duration::from_millis(f.get("delay_ms").and_then(Json::as_u64).unwrap_or(0)))
        ),
        "log" => {
            let level = s(f, "level");
            let prefix = if tty { "  " } else { "" };
            format!("{prefix}{tag}{level}: {}{}", s(f, "message"), fields_suffix(f))
        }
        "output" => format!(
            "{}{tag}{}{} {}",
            if tty { "  " } else { "" },
            match f.get("host").and_then(Json::as_str) {
                Some(h) => format!("{h} "),
                None => String::new(),
            },
            if s(f, "stream") == "stderr" { "!" } else { "|" },
            s(f, "line")
        ),
        "approval" => match s(f, "status") {
            "waiting" => format!(
                "? approval needed: {}{}\n  approve with: runbook approve {} (a worker then resumes it; without one: runbook resume {})",
                s(f, "message"),
                f.get("policy").and_then(|p| p.as_str()).map(|p| format!(" ({p})")).unwrap_or_default(),
                s(f, "run_id"),
                s(f, "run_id")
            ),
            "vote" => format!("· {} {} ({})", s(f, "actor"), s(f, "decision"), s(f, "via")),
            "rejected" => format!("✗ rejected by {}: {}", s(f, "actor"), s(f, "comment")),
            "timed_out" => format!("✗ {}", s(f, "message")),
            "approved" => format!("✓ approved: {} (by {})", s(f, "message"), s(f, "actor")),
            "declined" => format!("✗ declined: {} (by {})", s(f, "message"), s(f, "actor")),
            "dry_run" => format!("? [dry run] would ask: {}", s(f, "message")),
            other => format!("? {}: {other}", s(f, "message")),
        },
        "rollback_started" => format!(
            "↶ rolling back: running undo of {} completed step(s) in reverse order",
            f.get("steps").and_then(Json::as_i64).unwrap_or(0)
        ),
        "undo_finished" => match s(f, "status") {
            "done" => format!("↶ undo {name}: done"),
            "already_done" => format!("↶ undo {name}: done earlier, not run again"),
            _ => format!("↶ undo {name}: failed: {}", s(f, "error")),
        },
        "warning" => format!("warning: {tag}{}", s(f, "message")),
        "dry_run" => format!("{tag}[dry run] would {}", s(f, "action")),
        "run_finished" => return None,
        _ => return None,
    })
}

fn mirror_to_tracing(run_id: Option<&str>, step: Option<&str>, f: &Map<String, Json>) {
    let msg = s(f, "message");
    let span = tracing::info_span!("run", id = run_id.unwrap_or("-"), step = step.unwrap_or("-"));
    let _entered = span.enter();
    match s(f, "level") {
        "debug" => tracing::debug!(target: "runbook::lua", "{msg}"),
        "warn" => tracing::warn!(target: "runbook::lua", "{msg}"),
        "error" => tracing::error!(target: "runbook::lua", "{msg}"),
        _ => tracing::info!(target: "runbook::lua", "{msg}"),
    }
}
