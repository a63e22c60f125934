//! `log`: the runbook's own log lines, into the run's event stream (and its journal), attributed
//! to the running step, and mirrored into tracing (`-v`) with the run and step.
pub mod lua;

use serde_json::{json, Value as Json};

use crate::engine::Ctx;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Emits one log line; `fields` is a JSON object (or null).
pub fn log(ctx: &Ctx, level: Level, message: &str, fields: Json) {
    if level == Level::Debug && !debug_enabled() {
        return;
    }
    ctx.emit("log", json!({"level": level.as_str(), "message": message, "fields": fields}));
}

fn debug_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        tracing::enabled!(target: "runbook::lua", tracing::Level::DEBUG) || std::env::var_os("RUNBOOK_DEBUG").is_some()
    })
}
