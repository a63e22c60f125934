//! Secrets: values that print as `<secret:NAME>` everywhere, and a process-wide redactor that
//! scrubs their raw values from every log line, event, error and journal row, wherever the text
//! came from (a command that echoes it, an error that quotes it, a step result that holds it).
use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, RwLock};

use mlua::{MetaMethod, UserData, UserDataMethods, Value};

/// Values shorter than this are not scrubbed from free text: a two-letter secret would shred
/// every log line. Such a secret still prints as `<secret:NAME>` when printed as itself.
pub const MIN_SCRUB_LEN: usize = 4;

#[derive(Clone)]
pub struct Secret {
    name: Arc<str>,
    value: Arc<str>,
}

impl Secret {
    /// Creates a secret and registers its value with the redactor.
    pub fn new(name: &str, value: impl Into<String>) -> Secret {
        let value: String = value.into();
        register(&value, name);
        Secret { name: name.into(), value: value.into() }
    }
    /// A secret made from another by concatenation.
    fn derived(name: &str, value: String) -> Secret {
        register_one(&value, name, true);
        Secret { name: name.into(), value: value.into() }
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The real value, for primitives that must use it (a password sent to a server, an env var
    /// of a child process). Never format it into anything that is printed or stored.
    pub fn expose(&self) -> &str {
        &self.value
    }
    pub fn label(&self) -> String {
        format!("<secret:{}>", self.name)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<secret:{}>", self.name)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<secret:{}>", self.name)
    }
}

/// The text of a concatenation operand, and the secret it carries if any.
fn operand(v: &Value) -> mlua::Result<(String, Option<Secret>)> {
    match v {
        Value::UserData(ud) => match ud.borrow::<Secret>() {
            Ok(s) => Ok((s.expose().to_string(), Some(s.clone()))),
            Err(_) => Err(mlua::Error::runtime("attempt to concatenate a secret with a userdata value")),
        },
        Value::String(s) => Ok((s.to_string_lossy(), None)),
        Value::Integer(i) => Ok((i.to_string(), None)),
        Value::Number(n) => Ok((n.to_string(), None)),
        other => {
            Err(mlua::Error::runtime(format!("attempt to concatenate a secret with a {} value", other.type_name())))
        }
    }
}

impl UserData for Secret {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| Ok(this.label()));
        // Concatenation keeps the taint: `"postgres://u:" .. pw .. "@db"` is still a secret,
        // named after the secret it came from, and its whole value is scrubbed from output.
        methods.add_meta_function(MetaMethod::Concat, |_, (a, b): (Value, Value)| {
            let (ta, sa) = operand(&a)?;
            let (tb, sb) = operand(&b)?;
            let name = match (&sa, &sb) {
                (Some(x), Some(y)) if x.name() != y.name() => format!("{}+{}", x.name(), y.name()),
                (Some(x), _) | (None, Some(x)) => x.name().to_string(),
                (None, None) => unreachable_name(),
            };
            Ok(Secret::derived(&name, ta + &tb))
        });
        methods.add_meta_method(MetaMethod::Eq, |_, this, other: mlua::AnyUserData| {
            Ok(other.borrow::<Secret>().map(|o| o.value == this.value).unwrap_or(false))
        });
        methods.add_meta_method(MetaMethod::Len, |_, this, ()| Ok(this.value.len()));
        methods.add_method("name", |_, this, ()| Ok(this.name.to_string()));
    }
}

fn unreachable_name() -> String {
    // __concat is only called when one operand is a secret.
    "secret".to_string()
}

struct Entry {
    value: String,
    label: String,
}

static REDACTOR: RwLock<Vec<Entry>> = RwLock::new(Vec::new());
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Changes whenever a new secret value is registered: text written before may hold it, and
/// the engine scrubs what it already journaled when this moves.
pub fn generation() -> u64 {
    GENERATION.load(std::sync::atomic::Ordering::SeqCst)
}

/// Registers a value to be scrubbed from all output as `<secret:NAME>`. For a multi-line value
/// (a key, a kubeconfig), each long whitespace-free token of it is registered too, because
/// output is redacted line by line as it streams; short tokens ("apiVersion:", "v1") are not,
/// so ordinary text that shares them is left alone.
pub fn register(value: &str, name: &str) {
    if value.contains('\n') {
        for token in value.split_whitespace().filter(|t| t.len() >= MIN_TOKEN_LEN && !t.starts_with("-----")) {
            register_one(token, name, false);
        }
        // A file of short lines (`user: deploy-bot` / `pass: Hunter2-xyz`): each whole line, as
        // output streams them line by line, and the value of a line whose key names a secret.
        // Not the value of every line: `DB_HOST=localhost` or `kind: Config` would shred every
        // log (and journaled result) that mentions localhost or Config.
        for line in value.lines().map(str::trim).filter(|l| !l.starts_with("-----")) {
            if line.len() >= MIN_LINE_LEN && !line.chars().all(|c| c.is_ascii_digit()) {
                register_one(line, name, false);
            }
            if let Some((key, v)) = line.split_once([':', '=']) {
                let key = key.to_ascii_lowercase();
                if SECRET_KEYS.iter().any(|k| key.contains(k)) {
                    register_one(v.trim().trim_matches(['"', '\'']), name, false);
                }
            }
        }
    }
    register_one(value, name, false);
}

/// Tokens of multi-line secrets registered on their own: base64 key lines are 64 characters.
const MIN_TOKEN_LEN: usize = 16;

/// Whole lines of a multi-line secret registered on their own.
const MIN_LINE_LEN: usize = 8;

/// Keys whose value, in a `key: value` / `key=value` line of a multi-line secret, is registered.
const SECRET_KEYS: &[&str] = &["pass", "pwd", "secret", "token", "key", "credential", "auth", "private", "cert"];

fn register_one(value: &str, name: &str, derived: bool) {
    if value.len() < MIN_SCRUB_LEN {
        return;
    }
    let add = |entries: &mut Vec<Entry>| {
        // Already known (a worker's every run, a test suite's every pass registers the same
        // ones): once is enough, and the list every line is checked against stays short.
        if entries.iter().any(|e| e.value == value) {
            return;
        }
        // A concatenation (`"pg://u:" .. pw .. "@h"`) contains a registered value, which is
        // scrubbed wherever the concatenation appears: registering it too would add nothing but
        // cost (a loop of concatenations would otherwise register thousands of values).
        if derived && entries.iter().any(|e| value.contains(e.value.as_str())) {
            return;
        }
        entries.push(Entry { value: value.to_string(), label: format!("<secret:{name}>") });
        GENERATION.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Longest first, so a secret that contains another is replaced whole.
        entries.sort_by_key(|e| std::cmp::Reverse(e.value.len()));
    };
    let isolated = LOCAL.with(|l| match l.borrow_mut().as_mut() {
        Some(entries) => {
            add(entries);
            true
        }
        None => false,
    });
    if !isolated {
        if let Ok(mut entries) = REDACTOR.write() {
            add(&mut entries);
        }
    }
}

thread_local! {
    /// `runbook test`: the secrets of the test file this thread runs (test files run in
    /// parallel, each on a thread: one file's fake secrets never redact another's output).
    static LOCAL: std::cell::RefCell<Option<Vec<Entry>>> = const { std::cell::RefCell::new(None) };
}

/// From now on, secrets registered on this thread are this thread's only, and those it had are
/// forgotten (a new test file).
pub fn isolate_thread() {
    LOCAL.with(|l| *l.borrow_mut() = Some(Vec::new()));
}

/// Scrubs every registered secret value from `text`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let Ok(entries) = REDACTOR.read() else {
        return Cow::Borrowed(text);
    };
    let mut out: Cow<'_, str> = Cow::Borrowed(text);
    for e in entries.iter() {
        if out.contains(e.value.as_str()) {
            out = Cow::Owned(out.replace(e.value.as_str(), &e.label));
        }
    }
    LOCAL.with(|l| {
        for e in l.borrow().iter().flatten() {
            if out.contains(e.value.as_str()) {
                out = Cow::Owned(out.replace(e.value.as_str(), &e.label));
            }
        }
    });
    out
}

/// Scrubs every string inside a JSON value (keys included).
pub fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            if let Cow::Owned(r) = redact(s) {
                *s = r;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        serde_json::Value::Object(map) => {
            let needs_key_scrub = map.keys().any(|k| matches!(redact(k), Cow::Owned(_)));
            if needs_key_scrub {
                let old = std::mem::take(map);
                for (k, mut v) in old {
                    redact_json(&mut v);
                    map.insert(redact(&k).into_owned(), v);
                }
            } else {
                map.values_mut().for_each(redact_json);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_values_are_scrubbed_longest_first() {
        let _a = Secret::new("short", "hunter22");
        let _b = Secret::new("long", "xx-hunter22-yy");
        assert_eq!(redact("pw=xx-hunter22-yy and hunter22"), "pw=<secret:long> and <secret:short>");
        let mut v = serde_json::json!({"a": ["hunter22"], "hunter22": 1});
        redact_json(&mut v);
        assert_eq!(v, serde_json::json!({"a": ["<secret:short>"], "<secret:short>": 1}));
    }

    #[test]
    fn each_line_of_a_multi_line_secret_is_scrubbed() {
        let _k =
            Secret::new("key", "-----BEGIN KEY-----\nAAAAB3NzaC1yc2EAAAADAQAB\n-----END KEY-----\napiVersion: v1\n");
        assert_eq!(redact("line: AAAAB3NzaC1yc2EAAAADAQAB"), "line: <secret:key>");
        assert_eq!(
            redact("served by api v1"),
            "served by api v1",
            "short tokens of a multi-line secret are left alone"
        );
    }

    #[test]
    fn each_short_line_of_a_secret_file_and_its_values_are_scrubbed() {
        let _f = Secret::new("creds", "user: deploy-bot\npass: Hunter2-xyz\nDB_HOST=localhost\nPORT=5432\n");
        assert_eq!(redact("user: deploy-bot"), "<secret:creds>");
        assert_eq!(redact("the password is Hunter2-xyz."), "the password is <secret:creds>.");
        // Values of keys that name no secret are not scrubbed from other text.
        assert_eq!(redact("connecting to localhost:5432"), "connecting to localhost:5432");
    }

    #[test]
    fn concatenations_do_not_grow_the_redactor() {
        let pw = Secret::new("cc", "concat-secret-value");
        let derived = Secret::derived("cc", format!("pg://u:{}@h/db1", pw.expose()));
        let registered = REDACTOR.read().unwrap().iter().any(|e| e.value == derived.expose());
        assert!(!registered, "a concatenation registers nothing new");
        assert_eq!(redact(derived.expose()), "pg://u:<secret:cc>@h/db1");
    }

    #[test]
    fn tiny_values_are_not_scrubbed_from_text() {
        let s = Secret::new("pin", "ab");
        assert_eq!(redact("abc"), "abc");
        assert_eq!(s.to_string(), "<secret:pin>");
    }
}
