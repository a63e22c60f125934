//! `:help` and the signature hints, read from the LuaLS stubs (stdlib/types/): the one source
//! of every Lua-facing function's signature and description, embedded in the binary.
use std::collections::BTreeMap;
use std::sync::OnceLock;

const STUBS: &[&str] = &[
    include_str!("../../stdlib/types/runbook.lua"),
    include_str!("../../stdlib/types/runbook/pg.lua"),
    include_str!("../../stdlib/types/runbook/util.lua"),
];

/// One documented function or method.
#[derive(Debug, Clone)]
pub struct Entry {
    /// As called: `db.connect`, `DbConnection:query`, `sleep`.
    pub name: String,
    /// The module or class it belongs to (`db`, `DbConnection`), empty for globals.
    pub owner: String,
    /// `db.connect(url: string|Secret, opts?: DbOptions) -> DbConnection`
    pub signature: String,
    pub doc: Vec<String>,
    pub examples: Vec<String>,
}

pub fn entries() -> &'static [Entry] {
    static ENTRIES: OnceLock<Vec<Entry>> = OnceLock::new();
    ENTRIES.get_or_init(|| STUBS.iter().flat_map(|s| parse(s)).collect())
}

fn parse(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("--") {
            block.push(t);
            continue;
        }
        if let Some(rest) = t.strip_prefix("function ") {
            if let Some((name, args)) = rest.split_once('(') {
                let args = args.split(')').next().unwrap_or("");
                out.push(entry(name.trim(), args, &block));
            }
        }
        block.clear();
    }
    out
}

fn entry(name: &str, args: &str, block: &[&str]) -> Entry {
    let mut params: Vec<(String, String)> = Vec::new();
    let mut returns: Vec<String> = Vec::new();
    let mut doc = Vec::new();
    let mut examples = Vec::new();
    for line in block {
        if let Some(p) = line.strip_prefix("---@param ") {
            let (pname, rest) = p.split_once(' ').unwrap_or((p, "any"));
            params.push((pname.to_string(), first_type(rest)));
        } else if let Some(r) = line.strip_prefix("---@return ") {
            returns.push(first_type(r));
        } else if line.starts_with("---@") {
        } else if let Some(ex) = line.trim_start_matches('-').trim().strip_prefix("Example:") {
            examples.push(ex.trim().trim_matches('`').to_string());
        } else {
            let text = line.trim_start_matches('-').trim();
            if !text.is_empty() {
                doc.push(text.to_string());
            }
        }
    }
    let shown: Vec<String> = args
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| match params.iter().find(|(p, _)| p.trim_end_matches('?') == a) {
            Some((p, ty)) if p.ends_with('?') => format!("{a}?: {ty}"),
            Some((_, ty)) if ty.ends_with('?') => format!("{a}?: {}", ty.trim_end_matches('?')),
            Some((_, ty)) => format!("{a}: {ty}"),
            None => a.to_string(),
        })
        .collect();
    let owner = name.split_once([':', '.']).map(|(o, _)| o.to_string()).unwrap_or_default();
    let mut signature = format!("{name}({})", shown.join(", "));
    if !returns.is_empty() {
        signature.push_str(&format!(" -> {}", returns.join(", ")));
    }
    Entry { name: name.to_string(), owner, signature, doc, examples }
}

/// The type at the start of a `@param`/`@return` tail: up to the first blank outside
/// brackets (`fun(tx: DbConnection): T` is one type).
fn first_type(text: &str) -> String {
    let mut depth = 0i32;
    let mut end = text.len();
    for (i, c) in text.char_indices() {
        match c {
            '(' | '{' | '<' | '[' => depth += 1,
            ')' | '}' | '>' | ']' => depth -= 1,
            ' ' if depth <= 0 => {
                // `fun(...): T` continues after the colon.
                if text[..i].ends_with(':') {
                    continue;
                }
                end = i;
                break;
            }
            _ => {}
        }
    }
    text[..end].to_string()
}

/// The entry for a name as typed (`db.connect`), or a method name of a class (`query` of
/// `DbConnection`).
pub fn find(name: &str) -> Option<&'static Entry> {
    entries().iter().find(|e| e.name == name)
}

/// The class (as the stubs name it) whose methods include all of `methods`.
pub fn class_with(methods: &[String]) -> Option<&'static str> {
    let mut by_class: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for e in entries() {
        if let Some((class, method)) = e.name.split_once(':') {
            by_class.entry(class).or_default().push(method);
        }
    }
    by_class
        .into_iter()
        .filter(|(_, ms)| !methods.is_empty() && methods.iter().all(|m| ms.contains(&m.as_str())))
        .min_by_key(|(_, ms)| ms.len())
        .map(|(c, _)| c)
}

/// The REPL's own commands: name, arguments, what it does.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    (":help", "[topic]", "this list; `:help db` (a module), `:help db.connect`, `:help :retry`"),
    (":load", "FILE [k=v ...]", "load a runbook's definitions without running its steps (steps go in `steps`)"),
    (":runs", "[N]", "recent runs of the journal"),
    (":attach", "RUN", "attach to a run (id, prefix or `last`): `run.params`, `run.steps[NAME].result`, `run.status`"),
    (":steps", "", "the attached run's steps: status, attempts, duration, result or error"),
    (":result", "STEP [VAR]", "print a step's recorded result and bind it to VAR (default `result`)"),
    (":retry", "STEP", "run the attached run's step again now, recorded in its journal"),
    (":skip", "STEP REASON", "record the step as skipped by you, with the reason; a resume passes over it"),
    (":approve", "[COMMENT]", "approve the attached run's gate as you, under its policy (as `runbook approve`)"),
    (":reject", "REASON", "reject the attached run's gate: the run is cancelled"),
    (":param", "NAME", "type a param the attached run is missing (a secret: not echoed, kept off history and journal)"),
    (":resume", "[--allow-changed]", "continue the attached run from its next step, with live progress"),
    (":x", "[on|off]", "expanded display: each row as `column | value` lines, values whole (psql's \\x)"),
    (":timing", "[on|off]", "print how long each evaluation took (psql's \\timing)"),
    (":pager", "[on|off]", "results longer than the screen go through $RUNBOOK_PAGER, $PAGER or less -FRX"),
    (":watch", "EXPR [EVERY]", "evaluate EXPR every EVERY (default 2s) until Ctrl-C (psql's \\watch)"),
    (":timeline", "[FILE]", "this session as Markdown for the postmortem (printed, or written to FILE)"),
    (":quit", "", "leave (Ctrl-D does the same)"),
];

/// The text of `:help [topic]`.
pub fn help(topic: &str) -> String {
    let topic = topic.trim();
    if topic.is_empty() {
        return overview();
    }
    if topic.starts_with(':') {
        return match COMMANDS.iter().find(|(c, _, _)| *c == topic) {
            Some((c, args, what)) => format!("{c} {args}\n  {what}"),
            None => format!("no command {topic}; `:help` lists them"),
        };
    }
    if let Some(e) = find(topic) {
        return describe(e);
    }
    // A module or class: its functions, then the methods of the classes they return.
    let members: Vec<&Entry> = entries().iter().filter(|e| e.owner == topic).collect();
    if members.is_empty() {
        let close: Vec<&str> =
            entries().iter().filter(|e| e.name.contains(topic)).map(|e| e.name.as_str()).take(8).collect();
        return if close.is_empty() {
            format!("no help for '{topic}'; `:help` lists the topics")
        } else {
            format!("no help for '{topic}'; did you mean: {}", close.join(", "))
        };
    }
    let mut out = String::new();
    let mut classes: Vec<String> = Vec::new();
    for e in &members {
        out.push_str(&describe(e));
        out.push_str("\n\n");
        if let Some(ret) = e.signature.rsplit_once(" -> ").map(|(_, r)| r.trim_end_matches("[]").to_string()) {
            if ret.chars().next().is_some_and(char::is_uppercase) && !classes.contains(&ret) {
                classes.push(ret);
            }
        }
    }
    for class in classes {
        let methods: Vec<&Entry> = entries().iter().filter(|e| e.owner == class && e.name.contains(':')).collect();
        if methods.is_empty() {
            continue;
        }
        out.push_str(&format!("{class} methods:\n"));
        for m in methods {
            out.push_str(&format!("  {}\n      {}\n", m.signature, m.doc.first().map(String::as_str).unwrap_or("")));
        }
        out.push('\n');
    }
    out.trim_end().to_string()
}

fn describe(e: &Entry) -> String {
    let mut out = e.signature.clone();
    for d in &e.doc {
        out.push_str("\n  ");
        out.push_str(d);
    }
    for ex in &e.examples {
        out.push_str("\n  example: ");
        out.push_str(ex);
    }
    out
}

fn overview() -> String {
    let mut modules: Vec<&str> = entries().iter().map(|e| e.owner.as_str()).filter(|o| !o.is_empty()).collect();
    modules.dedup();
    let mut seen = Vec::new();
    modules.retain(|m| {
        let keep = m.chars().next().is_some_and(char::is_lowercase) && !seen.contains(m);
        seen.push(*m);
        keep
    });
    let globals: Vec<&str> = entries().iter().filter(|e| e.owner.is_empty()).map(|e| e.name.as_str()).collect();
    let mut out = String::from("Lua with every primitive of runbooks, live. An expression prints its value; `local x = ...` at\nthe start of a line keeps x for the session. Tab completes, Ctrl-R searches history, Ctrl-C\ncancels a running call, Ctrl-D leaves.\n\n");
    out.push_str(&format!("modules:  {}   (:help NAME)\n", modules.join(", ")));
    out.push_str(&format!("globals:  {}\n", globals.join(", ")));
    out.push_str("also:     inventory (runbook.toml host groups), stdlib.pg, stdlib.util, run (attached run), steps (:load)\n\ncommands:\n");
    for (c, args, what) in COMMANDS {
        out.push_str(&format!("  {:<28} {what}\n", format!("{c} {args}")));
    }
    out.trim_end().to_string()
}
