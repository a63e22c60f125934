//! The session record: every chunk and command of a REPL session, journaled, and rendered as a
//! Markdown timeline for the postmortem (`:timeline`, `runbook sessions show`).
use crate::journal::{SessionEvent, SessionRecord};

/// Lines of output kept per event.
pub const OUTPUT_LINES: usize = 5;
const OUTPUT_CHARS: usize = 600;

/// The first lines of what an evaluation printed, redacted.
pub fn excerpt(text: &str) -> String {
    let text = crate::secret::redact(text);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let mut out: String = lines.iter().take(OUTPUT_LINES).copied().collect::<Vec<_>>().join("\n");
    if out.chars().count() > OUTPUT_CHARS {
        out = out.chars().take(OUTPUT_CHARS).collect::<String>() + "…";
    }
    if lines.len() > OUTPUT_LINES {
        let more = lines.len() - OUTPUT_LINES;
        out.push_str(&format!("\n… ({more} more line{})", if more == 1 { "" } else { "s" }));
    }
    out
}

/// `HH:MM:SS` of an RFC 3339 time (UTC, as the journal writes it).
fn clock(ts: &str) -> &str {
    ts.get(11..19).unwrap_or(ts)
}

/// Text fit for one cell of a Markdown table.
fn md_cell(text: &str) -> String {
    text.trim().replace('|', "\\|").replace('\n', "<br>")
}

fn code(text: &str) -> String {
    let t = md_cell(text);
    if t.contains('`') {
        format!("``{t}``")
    } else {
        format!("`{t}`")
    }
}

/// The session as Markdown: a header, then one table row per event (time, who, what, outcome).
pub fn timeline(session: &SessionRecord, events: &[SessionEvent]) -> String {
    let mut out = format!("# Incident session {}\n\n", session.id);
    out.push_str(&format!("- who: {}@{}\n", session.who, session.host));
    out.push_str(&format!("- started: {}\n", session.started_at));
    out.push_str(&format!("- ended: {}\n", session.ended_at.as_deref().unwrap_or("(in progress)")));
    if let Some(run) = &session.run_id {
        out.push_str(&format!("- run: {run}\n"));
    }
    out.push_str(&format!("- entries: {}\n\n", events.len()));
    out.push_str("| time (UTC) | who | what | outcome |\n|---|---|---|---|\n");
    for e in events {
        let mut outcome =
            if e.ok { format!("ok ({} ms)", e.duration_ms) } else { format!("error ({} ms)", e.duration_ms) };
        if !e.output.trim().is_empty() {
            outcome.push_str(": ");
            outcome.push_str(&md_cell(&e.output));
        }
        let what = if e.kind == "command" { md_cell(&e.input) } else { code(&e.input) };
        let what = match &e.run_id {
            Some(run) if e.kind == "command" => format!("{what} (run {run})"),
            _ => what,
        };
        out.push_str(&format!("| {} | {} | {} | {} |\n", clock(&e.at), session.who, what, outcome));
    }
    out
}
