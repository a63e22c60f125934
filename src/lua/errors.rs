//! Turning Lua errors into what a user reads: the cause without Lua's noise, and the runbook
//! file and line it came from.
use mlua::{Error, Lua};

/// A place in a runbook (or a module it required).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: u32,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The cause of a Lua error as one message (its own `FILE:LINE:` prefix removed and returned
/// separately), plus the location it happened at when known.
pub fn describe(err: &Error) -> (String, Option<Location>) {
    let mut traceback = None;
    let mut current = err;
    let mut context: Vec<String> = Vec::new();
    let message = loop {
        match current {
            Error::CallbackError { traceback: tb, cause } => {
                if traceback.is_none() {
                    traceback = Some(tb.clone());
                }
                current = cause;
            }
            Error::WithContext { context: c, cause } => {
                context.push(c.clone());
                current = cause;
            }
            Error::RuntimeError(msg) => break msg.clone(),
            Error::SyntaxError { message, .. } => break message.clone(),
            Error::MemoryError(_) => {
                break "out of memory: the runbook passed its memory limit (--max-memory)".to_string()
            }
            Error::ExternalError(e) => break e.to_string(),
            Error::BadArgument { to, pos, name, cause } => {
                let inner = describe(cause).0;
                let what = name.as_deref().map(|n| format!(" '{n}'")).unwrap_or_default();
                break match to {
                    Some(f) => format!("bad argument #{pos}{what} to '{f}': {inner}"),
                    None => format!("bad argument #{pos}{what}: {inner}"),
                };
            }
            Error::FromLuaConversionError { from, to, message } => {
                break format!(
                    "expected {to}, got {from}{}",
                    message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default()
                )
            }
            other => break other.to_string(),
        }
    };
    // Lua appends a traceback to runtime errors; the location is what a user needs.
    let message = match message.find("\nstack traceback:") {
        Some(i) => {
            if traceback.is_none() {
                traceback = Some(message[i + 1..].to_string());
            }
            message[..i].to_string()
        }
        None => message,
    };
    let (location, rest) = split_location(&message);
    let mut text = rest.to_string();
    if !context.is_empty() {
        text = format!("{}: {text}", context.join(": "));
    }
    let location = location.or_else(|| traceback.as_deref().and_then(first_frame));
    (text, location)
}

/// Splits a leading `file.lua:LINE: ` off a message.
pub fn split_location(message: &str) -> (Option<Location>, &str) {
    let Some(lua_at) = message.find(".lua:") else {
        return (None, message);
    };
    let file = &message[..lua_at + 4];
    if file.contains(char::is_whitespace) && !file.starts_with('/') && !file.starts_with('.') {
        return (None, message);
    }
    let after = &message[lua_at + 5..];
    let digits: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() || !after[digits.len()..].starts_with(':') {
        return (None, message);
    }
    let rest = after[digits.len() + 1..].trim_start();
    (Some(Location { file: file.to_string(), line: digits.parse().unwrap_or(0) }), rest)
}

/// The first frame of a traceback in a runbook or a module it required: C frames and the
/// engine's own Lua (`internal/...`) are not where a runbook went wrong.
fn first_frame(traceback: &str) -> Option<Location> {
    traceback.lines().skip(1).find_map(|l| {
        let l = l.trim();
        if l.starts_with('[') || l.starts_with("internal/") {
            return None;
        }
        split_location(l).0
    })
}

/// The innermost Lua frame that belongs to a file (the runbook or a module), for errors raised
/// from Rust callbacks, which Lua does not locate.
pub fn caller(lua: &Lua) -> Option<Location> {
    for level in 0..12 {
        let found = lua.inspect_stack(level, |d| {
            let src = d.source();
            let source = src.source.as_deref().unwrap_or("");
            let line = d.current_line();
            if source.starts_with('@') && !source.starts_with("@internal/") {
                line.map(|l| Location { file: source[1..].to_string(), line: l as u32 })
            } else {
                None
            }
        });
        match found {
            Some(Some(loc)) => return Some(loc),
            Some(None) => continue,
            None => break,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_file_and_line() {
        let (loc, rest) = split_location("examples/a.lua:12: boom: x");
        assert_eq!(loc, Some(Location { file: "examples/a.lua".into(), line: 12 }));
        assert_eq!(rest, "boom: x");
        let (loc, rest) = split_location("no location here");
        assert!(loc.is_none());
        assert_eq!(rest, "no location here");
    }
}
