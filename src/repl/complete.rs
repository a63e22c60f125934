//! Tab completion and signature hints: globals, module functions (`db.`), methods of a value
//! held in a variable (`pg:`), table fields, inventory groups (`ssh.group("`), REPL commands.
//! Completion reads the live Lua state, never calling a function or an `__index` metamethod.
use std::borrow::Cow;

use mlua::{Lua, Table, Value};
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::{Hint, Hinter};
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::help;

pub struct ReplHelper {
    pub lua: Lua,
    pub groups: Vec<String>,
    pub hosts: Vec<String>,
}

/// A signature shown after the cursor; never inserted into the line.
pub struct SignatureHint(String);

impl Hint for SignatureHint {
    fn display(&self) -> &str {
        &self.0
    }
    fn completion(&self) -> Option<&str> {
        None
    }
}

impl Helper for ReplHelper {}
impl Validator for ReplHelper {}

impl Highlighter for ReplHelper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        Cow::Owned(format!("\x1b[2m{hint}\x1b[0m"))
    }
}

impl Hinter for ReplHelper {
    type Hint = SignatureHint;

    /// At the end of the line, right after `name(`: that function's signature.
    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<SignatureHint> {
        if pos != line.len() || !line.ends_with('(') {
            return None;
        }
        let before = &line[..line.len() - 1];
        let word = word_before(before);
        let name = self.documented_name(word)?;
        let entry = help::find(&name)?;
        let args = entry.signature.split_once('(').map(|(_, a)| a).unwrap_or("");
        Some(SignatureHint(format!("{args}   {}", entry.doc.first().map(String::as_str).unwrap_or(""))))
    }
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        // REPL commands at the start of the line.
        if before.starts_with(':') && !before.contains(' ') {
            let found = help::COMMANDS
                .iter()
                .filter(|(c, _, _)| c.starts_with(before))
                .map(|(c, _, _)| Pair { display: c.to_string(), replacement: format!("{c} ") })
                .collect();
            return Ok((0, found));
        }
        // `:retry NAME` / `:skip NAME`: the attached run's steps (`steps`), quoted when the
        // name has spaces.
        for cmd in [":retry ", ":skip "] {
            if let Some(partial) = before.strip_prefix(cmd) {
                let partial = partial.trim_start_matches(['"', '\'']);
                let start = pos - partial.len() - usize::from(before[cmd.len()..].starts_with(['"', '\'']));
                let mut names: Vec<String> = match self.lua.globals().raw_get::<Value>("steps") {
                    Ok(Value::Table(t)) => t
                        .pairs::<Value, Value>()
                        .filter_map(Result::ok)
                        .filter_map(|(k, _)| match k {
                            Value::String(s) => Some(s.to_string_lossy()),
                            _ => None,
                        })
                        .filter(|n| n.starts_with(partial))
                        .collect(),
                    _ => Vec::new(),
                };
                names.sort();
                let found = names
                    .into_iter()
                    .map(|n| {
                        let replacement =
                            if n.contains(char::is_whitespace) { format!("\"{n}\" ") } else { format!("{n} ") };
                        Pair { display: n, replacement }
                    })
                    .collect();
                return Ok((start, found));
            }
        }
        // Inside ssh.group(" or ssh.connect(": inventory names.
        for (call, names) in [("ssh.group(", &self.groups), ("ssh.connect(", &self.hosts)] {
            if let Some(idx) = before.rfind(call) {
                let rest = &before[idx + call.len()..];
                if let Some(partial) = rest.strip_prefix(['"', '\'']) {
                    if !partial.contains(['"', '\'']) {
                        let start = pos - partial.len();
                        let found = names
                            .iter()
                            .filter(|n| n.starts_with(partial))
                            .map(|n| Pair { display: n.clone(), replacement: n.clone() })
                            .collect();
                        return Ok((start, found));
                    }
                }
            }
        }
        let word = word_before(before);
        let start = pos - word.len();
        Ok((start, self.candidates(word)))
    }
}

/// The trailing `a.b:c` of the text.
fn word_before(text: &str) -> &str {
    let start = text
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':'))
        .last()
        .map(|(i, _)| i)
        .unwrap_or(text.len());
    &text[start..]
}

impl ReplHelper {
    fn candidates(&self, word: &str) -> Vec<Pair> {
        let (base, sep, partial) = match word.rfind(['.', ':']) {
            Some(i) => (&word[..i], &word[i..=i], &word[i + 1..]),
            None => ("", "", word),
        };
        let names: Vec<(String, bool)> = if base.is_empty() {
            let mut v = self.keys(&self.lua.globals());
            for kw in ["local", "function", "return", "then", "end", "for", "while", "repeat", "until", "elseif"] {
                v.push((kw.to_string(), false));
            }
            v
        } else {
            match self.resolve(base) {
                Some(Value::Table(t)) if sep == "." => self.keys(&t),
                Some(Value::Table(t)) => self.keys(&t).into_iter().filter(|(_, f)| *f).collect(),
                Some(Value::UserData(ud)) if sep == ":" => methods(&ud).into_iter().map(|m| (m, true)).collect(),
                _ => Vec::new(),
            }
        };
        let mut found: Vec<Pair> = names
            .into_iter()
            .filter(|(n, _)| n.starts_with(partial) && !n.starts_with("__"))
            .map(|(n, is_fn)| Pair {
                display: if is_fn { format!("{n}(") } else { n.clone() },
                replacement: format!("{base}{sep}{n}"),
            })
            .collect();
        found.sort_by(|a, b| a.display.cmp(&b.display));
        found.dedup_by(|a, b| a.display == b.display);
        found
    }

    /// The value a dotted path names, read with raw gets only.
    fn resolve(&self, path: &str) -> Option<Value> {
        let mut parts = path.split(['.', ':']);
        let mut v: Value = self.lua.globals().raw_get(parts.next()?).ok()?;
        for p in parts {
            v = match v {
                Value::Table(t) => t.raw_get(p).ok()?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// String keys of a table (and of its `__index` table), with whether each is a function.
    fn keys(&self, t: &Table) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        let mut add = |t: &Table| {
            for (k, v) in t.clone().pairs::<Value, Value>().filter_map(Result::ok) {
                if let Value::String(s) = k {
                    out.push((s.to_string_lossy(), matches!(v, Value::Function(_))));
                }
            }
        };
        add(t);
        if let Some(Value::Table(index)) = t.metatable().and_then(|mt| mt.raw_get::<Value>("__index").ok()) {
            add(&index);
        }
        out
    }

    /// `db.connect` for `db.connect`; `DbConnection:query` for `pg:query` when `pg` holds a
    /// connection: the name the stubs document.
    fn documented_name(&self, word: &str) -> Option<String> {
        if let Some((var, method)) = word.rsplit_once(':') {
            let Some(Value::UserData(ud)) = self.resolve(var) else { return None };
            let class = help::class_with(&methods(&ud))?;
            return Some(format!("{class}:{method}"));
        }
        Some(word.to_string())
    }
}

/// The methods of a userdata value, from its metatable's `__index` table.
pub fn methods(ud: &mlua::AnyUserData) -> Vec<String> {
    let Ok(mt) = ud.metatable() else { return Vec::new() };
    let Ok(Value::Table(index)) = mt.get::<Value>("__index") else { return Vec::new() };
    let mut out: Vec<String> = index
        .pairs::<Value, Value>()
        .filter_map(Result::ok)
        .filter_map(|(k, v)| match (k, v) {
            (Value::String(s), Value::Function(_)) => Some(s.to_string_lossy()),
            _ => None,
        })
        .filter(|n| !n.starts_with("__"))
        .collect();
    out.sort();
    out
}
