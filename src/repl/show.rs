//! How the REPL prints values: query results (an array of rows) as an aligned table, other
//! tables as indented Lua with depth and size caps (and a note of what was cut), userdata
//! through its `__tostring`, secrets as `<secret:NAME>`. Everything printed is redacted.
use std::collections::HashSet;
use std::fmt::Write;

use mlua::{Table, Value};

use crate::secret::Secret;

/// Nesting shown before `{...}`.
const MAX_DEPTH: usize = 4;
/// Entries shown per table.
const MAX_ENTRIES: usize = 40;
/// Lines printed for one value at most.
const MAX_LINES: usize = 200;
/// Rows of a result table shown.
const MAX_ROWS: usize = 50;
/// Bytes of a string printed at most.
const MAX_STRING: usize = 64 * 1024;
/// Width of one cell of a result table.
const MAX_CELL: usize = 48;

/// How result tables are shown (`:x` switches, as psql's `\\x`).
static EXPANDED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Expanded display: each row as `column | value` lines, values whole.
pub fn set_expanded(on: bool) {
    EXPANDED.store(on, std::sync::atomic::Ordering::SeqCst);
}

pub fn expanded() -> bool {
    EXPANDED.load(std::sync::atomic::Ordering::SeqCst)
}

/// The text for the values an expression returned (one per line).
pub fn values(values: &[Value]) -> String {
    let mut out = String::new();
    for v in values {
        out.push_str(&value(v));
        out.push('\n');
    }
    crate::secret::redact(&out).into_owned()
}

/// One value: a string as it is, a result table as a table, anything else as Lua.
pub fn value(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let text = s.to_string_lossy();
            if text.len() > MAX_STRING {
                let mut end = MAX_STRING;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}\n-- cut: {} more bytes of this string not shown", &text[..end], text.len() - end)
            } else {
                text
            }
        }
        Value::Table(t) => match rows(t) {
            Some(text) => text,
            None => {
                let mut p = Printer::default();
                p.value(v, 0);
                p.finish()
            }
        },
        other => scalar(other, true),
    }
}

/// A value that is not a table, as Lua would write it (`quote`: strings in quotes).
fn scalar(v: &Value, quote: bool) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => {
            if n.fract() == 0.0 && n.abs() < 1e15 {
                format!("{n:.1}")
            } else {
                n.to_string()
            }
        }
        Value::String(s) if quote => quoted(&s.to_string_lossy()),
        Value::String(s) => s.to_string_lossy(),
        Value::LightUserData(p) if p.0.is_null() => "null".into(),
        Value::UserData(ud) => match ud.borrow::<Secret>() {
            Ok(s) => s.label(),
            Err(_) => match v.to_string() {
                Ok(text) if !text.starts_with("userdata: ") => format!("<{text}>"),
                _ => format!("<{}>", type_name(v)),
            },
        },
        Value::Function(_) => "<function>".into(),
        Value::Thread(_) => "<coroutine>".into(),
        Value::Error(e) => format!("<error: {e}>"),
        other => format!("<{}>", other.type_name()),
    }
}

fn type_name(v: &Value) -> String {
    if let Value::UserData(ud) = v {
        if let Some(name) = ud.metatable().ok().and_then(|mt| mt.get::<Option<String>>("__name").ok().flatten()) {
            return name;
        }
    }
    v.type_name().to_string()
}

use crate::lua::literal::{is_identifier, quoted};

/// The length of a table's sequence part, if it has nothing else.
fn sequence_len(t: &Table) -> Option<usize> {
    let n = t.raw_len();
    let mut count = 0usize;
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, _) = pair.ok()?;
        match k {
            Value::Integer(i) if i >= 1 && (i as usize) <= n => count += 1,
            _ => return None,
        }
    }
    (count == n).then_some(n)
}

/// An array of flat rows (string keys, non-table values) printed as an aligned table with
/// column headers, in the query's column order when the rows carry it.
fn rows(t: &Table) -> Option<String> {
    let n = sequence_len(t)?;
    let mut columns: Vec<String> =
        t.metatable().and_then(|mt| mt.raw_get::<Option<Vec<String>>>("__columns").ok().flatten()).unwrap_or_default();
    if n == 0 {
        // A query that found nothing still shows what it asked for.
        if columns.is_empty() {
            return None;
        }
        let headers: Vec<&str> = columns.iter().map(String::as_str).collect();
        return Some(format!("{}(0 rows)", grid(&headers, &[])));
    }
    let is_result = !columns.is_empty();
    let mut seen: HashSet<String> = columns.iter().cloned().collect();
    let mut table: Vec<Vec<(String, String)>> = Vec::new();
    let expanded = expanded();
    for i in 1..=n {
        let Ok(Value::Table(row)) = t.raw_get::<Value>(i) else { return None };
        let mut cells = Vec::new();
        for pair in row.pairs::<Value, Value>() {
            let (k, v) = pair.ok()?;
            let Value::String(k) = k else { return None };
            let text = match &v {
                Value::Function(_) => return None,
                // A query's array and JSON columns stay in their column, on one line (other
                // nested data prints as Lua).
                Value::Table(inner) if is_result => compact(inner, 0)?,
                Value::Table(_) => return None,
                other => scalar(other, false),
            };
            let k = k.to_string_lossy();
            if seen.insert(k.clone()) {
                columns.push(k.clone());
            }
            if i <= MAX_ROWS {
                cells.push((k, text));
            }
        }
        if i <= MAX_ROWS {
            table.push(cells);
        }
    }
    if columns.is_empty() {
        return None;
    }
    let find = |cells: &[(String, String)], c: &str| -> String {
        cells.iter().find(|(k, _)| k == c).map(|(_, v)| v.clone()).unwrap_or_default()
    };
    if expanded {
        let width = columns.iter().map(|c| c.chars().count()).max().unwrap_or(0);
        let mut out = String::new();
        for (i, cells) in table.iter().enumerate() {
            let _ = writeln!(out, "-[ RECORD {} ]-", i + 1);
            for c in &columns {
                let value = find(cells, c).replace('\n', &format!("\n{:width$} | ", ""));
                let _ = writeln!(out, "{c:<width$} | {value}");
            }
        }
        if n > MAX_ROWS {
            let _ = writeln!(out, "... {} more rows not shown", n - MAX_ROWS);
        }
        let _ = write!(out, "({n} row{})", if n == 1 { "" } else { "s" });
        return Some(out);
    }
    let mut cut = false;
    let body: Vec<Vec<String>> = table
        .iter()
        .map(|cells| {
            columns
                .iter()
                .map(|c| {
                    let text = find(cells, c);
                    let shown = cell(&text);
                    cut |= shown != text;
                    shown
                })
                .collect()
        })
        .collect();
    let headers: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut out = grid(&headers, &body);
    if n > MAX_ROWS {
        let _ = writeln!(out, "... {} more rows not shown", n - MAX_ROWS);
    }
    let _ = write!(out, "({n} row{})", if n == 1 { "" } else { "s" });
    if cut {
        let _ = write!(out, "; cells cut at {MAX_CELL} characters: `:x` shows rows whole, or `_[1].column` one value");
    }
    Some(out)
}

/// An array or a JSON object on one line, as JSON would print it (`[1,2,3]`, `{"a":1}`).
fn compact(t: &Table, depth: usize) -> Option<String> {
    if depth > 8 {
        return Some("…".into());
    }
    let item = |v: &Value, depth: usize| -> Option<String> {
        Some(match v {
            Value::Table(inner) => compact(inner, depth + 1)?,
            Value::String(s) => serde_json::to_string(&s.to_string_lossy()).unwrap_or_default(),
            Value::Function(_) => return None,
            other => scalar(other, false),
        })
    };
    if let Some(len) = sequence_len(t) {
        let mut parts = Vec::with_capacity(len);
        for i in 1..=len {
            parts.push(item(&t.raw_get::<Value>(i).ok()?, depth)?);
        }
        return Some(format!("[{}]", parts.join(",")));
    }
    let mut parts = Vec::new();
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, v) = pair.ok()?;
        let key = match k {
            Value::String(s) => s.to_string_lossy(),
            other => scalar(&other, false),
        };
        parts.push((key, item(&v, depth)?));
    }
    parts.sort();
    Some(format!(
        "{{{}}}",
        parts
            .iter()
            .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(",")
    ))
}

/// Rows of cells under column headers, aligned, each line without trailing blanks.
pub fn grid(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r.get(i).map(|c| c.chars().count()).unwrap_or(0))
                .chain([h.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let parts: Vec<String> = cells.zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        parts.join(" | ").trim_end().to_string()
    };
    let mut out = String::new();
    out.push_str(&line(&mut headers.iter().copied()));
    out.push('\n');
    out.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-+-"));
    out.push('\n');
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
        out.push('\n');
    }
    out
}

/// A cell of one line, at most `MAX_CELL` characters.
pub fn cell(text: &str) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    if one_line.chars().count() > MAX_CELL {
        let cut: String = one_line.chars().take(MAX_CELL - 1).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

/// Indented Lua, with what the caps cut counted for a closing note.
#[derive(Default)]
struct Printer {
    out: String,
    lines: usize,
    cut_entries: usize,
    cut_deep: usize,
    cut_lines: bool,
    stack: Vec<*const std::ffi::c_void>,
}

impl Printer {
    fn push(&mut self, s: &str) {
        if self.cut_lines {
            return;
        }
        self.lines += s.matches('\n').count();
        if self.lines > MAX_LINES {
            self.cut_lines = true;
            return;
        }
        self.out.push_str(s);
    }

    fn value(&mut self, v: &Value, depth: usize) {
        match v {
            Value::Table(t) => self.table(t, depth),
            other => {
                let text = scalar(other, true);
                self.push(&text);
            }
        }
    }

    fn table(&mut self, t: &Table, depth: usize) {
        if crate::lua::is_placeholder(t) {
            let what: String = t.raw_get("__what").unwrap_or_else(|_| "value".into());
            self.push(&format!("<placeholder: {what}>"));
            return;
        }
        let ptr = t.to_pointer();
        if self.stack.contains(&ptr) {
            self.push("<cycle>");
            return;
        }
        if depth >= MAX_DEPTH {
            self.cut_deep += 1;
            self.push("{...}");
            return;
        }
        // Short, flat tables on one line.
        if let Some(inline) = inline(t) {
            self.push(&inline);
            return;
        }
        self.stack.push(ptr);
        let indent = "  ".repeat(depth + 1);
        let seq = t.raw_len();
        let mut entries: Vec<(Value, Value)> = t.clone().pairs::<Value, Value>().filter_map(Result::ok).collect();
        // The sequence in order, then the other keys sorted as text.
        entries.sort_by_cached_key(|(k, _)| match k {
            Value::Integer(i) if *i >= 1 && (*i as usize) <= seq => (0, *i, String::new()),
            other => (1, 0, scalar(other, false)),
        });
        let total = entries.len();
        self.push("{\n");
        for (shown, (k, v)) in entries.iter().enumerate() {
            if shown == MAX_ENTRIES {
                self.cut_entries += total - MAX_ENTRIES;
                self.push(&format!("{indent}-- {} more entries\n", total - MAX_ENTRIES));
                break;
            }
            self.push(&indent);
            match k {
                Value::Integer(i) if *i >= 1 && (*i as usize) <= seq => {}
                Value::String(s) if is_identifier(&s.to_string_lossy()) => {
                    self.push(&format!("{} = ", s.to_string_lossy()));
                }
                other => {
                    let key = scalar(other, true);
                    self.push(&format!("[{key}] = "));
                }
            }
            self.value(v, depth + 1);
            self.push(",\n");
        }
        self.push(&"  ".repeat(depth));
        self.push("}");
        self.stack.pop();
    }

    fn finish(mut self) -> String {
        let mut notes = Vec::new();
        if self.cut_lines {
            notes.push(format!("output stopped after {MAX_LINES} lines"));
        }
        if self.cut_entries > 0 {
            notes.push(format!("{} entries beyond {MAX_ENTRIES} per table not shown", self.cut_entries));
        }
        if self.cut_deep > 0 {
            notes.push(format!("{} tables deeper than {MAX_DEPTH} levels shown as {{...}}", self.cut_deep));
        }
        if !notes.is_empty() {
            if self.cut_lines {
                self.out.push_str("\n...");
            }
            let _ = write!(self.out, "\n-- cut: {}", notes.join("; "));
        }
        self.out
    }
}

/// A table of at most 8 scalar entries that fits in 72 columns, on one line.
fn inline(t: &Table) -> Option<String> {
    let seq = t.raw_len();
    let mut parts = Vec::new();
    let mut entries: Vec<(Value, Value)> = Vec::new();
    for pair in t.clone().pairs::<Value, Value>() {
        entries.push(pair.ok()?);
        if entries.len() > 8 {
            return None;
        }
    }
    if entries.is_empty() {
        return Some("{}".into());
    }
    entries.sort_by_cached_key(|(k, _)| match k {
        Value::Integer(i) if *i >= 1 && (*i as usize) <= seq => (0, *i, String::new()),
        other => (1, 0, scalar(other, false)),
    });
    for (k, v) in entries {
        if matches!(v, Value::Table(_)) {
            return None;
        }
        let v = scalar(&v, true);
        parts.push(match k {
            Value::Integer(i) if i >= 1 && (i as usize) <= seq => v,
            Value::String(s) if is_identifier(&s.to_string_lossy()) => format!("{} = {v}", s.to_string_lossy()),
            other => format!("[{}] = {v}", scalar(&other, true)),
        });
    }
    let text = format!("{{ {} }}", parts.join(", "));
    (text.chars().count() <= 72).then_some(text)
}
