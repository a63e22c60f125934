//! Typed runbook parameters: the spec declared in `runbook{ params = {...} }`, and the values
//! gathered from `-p`, `--params-file`, the environment, the run being resumed, and defaults.
//! Every problem is collected, so the user sees them all at once.
use std::collections::BTreeMap;

use mlua::{Lua, LuaSerdeExt, Value};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
    Duration,
    Enum,
    List,
    Secret,
}

impl ParamType {
    fn parse(s: &str) -> Option<ParamType> {
        Some(match s {
            "string" => ParamType::String,
            "integer" | "int" => ParamType::Integer,
            "number" => ParamType::Number,
            "boolean" | "bool" => ParamType::Boolean,
            "duration" => ParamType::Duration,
            "enum" => ParamType::Enum,
            "list" => ParamType::List,
            "secret" => ParamType::Secret,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::Duration => "duration",
            ParamType::Enum => "enum",
            ParamType::List => "list",
            ParamType::Secret => "secret",
        }
    }
}

/// A param spec as written in Lua; unknown keys are an error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(rename = "type")]
    ty: Option<String>,
    #[serde(default)]
    required: bool,
    default: Option<Json>,
    env: Option<String>,
    min: Option<Json>,
    max: Option<Json>,
    pattern: Option<String>,
    choices: Option<Vec<Json>>,
    description: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParamSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ParamType,
    pub required: bool,
    pub default: Option<Json>,
    pub env: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub pattern: Option<String>,
    #[serde(skip)]
    regex: Option<regex_lite::Regex>,
    pub choices: Vec<String>,
    pub description: Option<String>,
}

/// Parses the `params` table of a declaration.
pub fn parse_specs(lua: &Lua, table: &mlua::Table) -> Result<Vec<ParamSpec>, String> {
    let mut specs = Vec::new();
    let mut problems = Vec::new();
    for pair in table.pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| e.to_string())?;
        let name = match k {
            Value::String(s) => s.to_string_lossy(),
            other => return Err(format!("params: keys are param names, got a {} key", other.type_name())),
        };
        match parse_spec(lua, &name, v) {
            Ok(spec) => specs.push(spec),
            Err(e) => problems.push(format!("param '{name}': {e}")),
        }
    }
    if !problems.is_empty() {
        problems.sort();
        return Err(problems.join("; "));
    }
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(specs)
}

fn parse_spec(lua: &Lua, name: &str, v: Value) -> Result<ParamSpec, String> {
    if !valid_name(name) {
        return Err("a param name has letters, digits and '_' and starts with a letter".into());
    }
    if !v.is_table() {
        return Err(format!("expected a spec table such as {{ type = \"string\" }}, got a {}", v.type_name()));
    }
    let raw: RawSpec = lua
        .from_value(v)
        .map_err(|e| e.to_string().trim_start_matches("deserialize error: ").replace("unknown field", "unknown key"))?;
    let ty_name = raw.ty.as_deref().unwrap_or("string");
    let ty = ParamType::parse(ty_name).ok_or_else(|| {
        format!("unknown type '{ty_name}' (string, integer, number, boolean, duration, enum, list, secret)")
    })?;
    let choices: Vec<String> = raw
        .choices
        .unwrap_or_default()
        .into_iter()
        .map(|c| match c {
            Json::String(s) => s,
            other => other.to_string(),
        })
        .collect();
    if ty == ParamType::Enum && choices.is_empty() {
        return Err("an enum needs `choices = { ... }`".into());
    }
    if ty != ParamType::Enum && !choices.is_empty() {
        return Err("`choices` only applies to type = \"enum\"".into());
    }
    let bound = |j: Option<Json>, which: &str| -> Result<Option<f64>, String> {
        match j {
            None => Ok(None),
            Some(Json::Number(n)) => Ok(n.as_f64()),
            Some(Json::String(s)) if ty == ParamType::Duration => {
                crate::duration::parse(&s).map(|d| Some(d.as_secs_f64())).map_err(|e| format!("{which}: {e}"))
            }
            Some(other) => Err(format!("{which} must be a number, got {other}")),
        }
    };
    let min = bound(raw.min, "min")?;
    let max = bound(raw.max, "max")?;
    if let (Some(a), Some(b)) = (min, max) {
        if a > b {
            return Err(format!("min ({a}) is greater than max ({b})"));
        }
    }
    let regex = match &raw.pattern {
        Some(p) => Some(
            regex_lite::Regex::new(&format!("^(?:{p})$"))
                .map_err(|e| format!("pattern is not a valid regular expression: {e}"))?,
        ),
        None => None,
    };
    if raw.required && raw.default.is_some() {
        return Err("a param with a default is never missing: drop `required` or the default".into());
    }
    if ty == ParamType::Secret && raw.default.is_some() {
        return Err("a secret has no default: it comes from `env` or the command line".into());
    }
    let spec = ParamSpec {
        name: name.to_string(),
        ty,
        required: raw.required,
        default: raw.default,
        env: raw.env,
        min,
        max,
        pattern: raw.pattern,
        regex,
        choices,
        description: raw.description,
    };
    if let Some(d) = &spec.default {
        coerce(&spec, Raw::Json(d.clone())).map_err(|e| format!("default: {e}"))?;
    }
    Ok(spec)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

/// A param value as it arrives, before its type is checked.
enum Raw {
    /// From `-p` or an environment variable.
    Text(String),
    Toml(toml::Value),
    /// A default, or the value recorded by the run being resumed.
    Json(Json),
}

#[derive(Debug, Clone)]
pub enum ParamValue {
    Plain(Json),
    Secret(Secret),
}

impl ParamValue {
    pub fn to_json(&self) -> Json {
        match self {
            ParamValue::Plain(j) => j.clone(),
            ParamValue::Secret(s) => Json::String(s.label()),
        }
    }
    pub fn to_lua(&self, lua: &Lua) -> mlua::Result<Value> {
        match self {
            ParamValue::Plain(j) => crate::lua::convert::from_json(lua, j),
            ParamValue::Secret(s) => Ok(Value::UserData(lua.create_userdata(s.clone())?)),
        }
    }
}

/// Where values come from.
pub struct Sources<'a> {
    pub cli: &'a [(String, String)],
    pub file: Option<&'a toml::Table>,
    /// The params recorded by the run being resumed (secrets redacted there).
    pub stored: Option<&'a Json>,
    /// Plan and check: missing or wrong values are not errors.
    pub lenient: bool,
    /// Where a param's `env` is read: the process's environment, or (`runbook test`) the test's.
    pub env: Option<&'a std::collections::BTreeMap<String, String>>,
}

/// Resolved values by name, and warnings to show.
pub type Resolved = (BTreeMap<String, ParamValue>, Vec<String>);

/// Resolves every param, or returns every problem.
pub fn resolve(specs: &[ParamSpec], src: &Sources<'_>) -> Result<Resolved, Vec<String>> {
    let mut problems = Vec::new();
    let warnings = Vec::new();
    let mut values = BTreeMap::new();
    for (k, _) in src.cli {
        if !specs.iter().any(|s| &s.name == k) {
            problems.push(format!("unknown param '{k}' given with -p (declared: {})", names(specs)));
        }
    }
    if let Some(file) = src.file {
        for k in file.keys() {
            if !specs.iter().any(|s| &s.name == k) {
                problems.push(format!("unknown param '{k}' in the params file (declared: {})", names(specs)));
            }
        }
    }
    for spec in specs {
        // Secrets are never stored; a plain value that held a secret's value was stored
        // redacted: both must be given again, on the command line or in the params file (never
        // silently replaced by the environment or the default).
        let stored_raw = src.stored.and_then(|s| s.get(&spec.name));
        let redacted = spec.ty != ParamType::Secret && stored_raw.is_some_and(|v| v.to_string().contains("<secret:"));
        let stored = stored_raw.filter(|_| spec.ty != ParamType::Secret && !redacted).cloned();
        let given_times = src.cli.iter().filter(|(k, _)| k == &spec.name).count();
        if given_times > 1 {
            problems.push(format!("param '{}' is given {given_times} times with -p: give it once", spec.name));
            continue;
        }
        let cli = src.cli.iter().find(|(k, _)| k == &spec.name).map(|(_, v)| v.clone());
        let file = src.file.and_then(|f| f.get(&spec.name)).cloned();
        if redacted && cli.is_none() && file.is_none() && !src.lenient {
            problems.push(format!(
                "param '{}' held the value of a secret when the run started, so it was not stored: give it again (--params-file keeps it off the command line; -p {}=... works)",
                spec.name, spec.name
            ));
            continue;
        }
        if let (Some(stored), true) = (&stored, cli.is_some() || file.is_some()) {
            let given = match (&cli, &file) {
                (Some(c), _) => coerce(spec, Raw::Text(c.clone())),
                (None, Some(f)) => coerce(spec, Raw::Toml(f.clone())),
                _ => unreachable!(),
            };
            if !matches!(given, Ok(ParamValue::Plain(ref j)) if j == stored) {
                problems
                    .push(format!("param '{}' cannot change when resuming (the run started with {stored})", spec.name));
                continue;
            }
        }
        if cli.is_some() && spec.ty == ParamType::Secret {
            // The runner's own command line is visible to every user of the host (ps,
            // /proc/PID/cmdline) for as long as the run lasts: refused, not warned about.
            problems.push(format!(
                "param '{}' is a secret and cannot be given with -p: command lines are visible to every user of the host (ps); give it through {}",
                spec.name,
                match spec.env.as_deref() {
                    Some(e) => format!("its environment variable {e} (or --params-file, mode 0600)"),
                    None => "--params-file (mode 0600), or declare `env = \"VAR\"` for it".into(),
                }
            ));
            continue;
        }
        let env = spec.env.as_ref().and_then(|var| {
            let value = match src.env {
                Some(test) => test.get(var).cloned(),
                None => std::env::var(var).ok(),
            };
            value.map(|v| (var.clone(), v))
        });
        let (raw, origin) = if let Some(c) = cli {
            (Raw::Text(c), "-p".to_string())
        } else if let Some(f) = file {
            (Raw::Toml(f), "the params file".to_string())
        } else if let Some(s) = stored {
            (Raw::Json(s), "the resumed run".to_string())
        } else if let Some((var, v)) = env {
            (Raw::Text(v), format!("${var}"))
        } else if let Some(d) = &spec.default {
            (Raw::Json(d.clone()), "default".to_string())
        } else {
            if spec.required && !src.lenient {
                let how = match (&spec.env, spec.ty == ParamType::Secret) {
                    (Some(var), true) => format!("the environment variable {var} or --params-file"),
                    (None, true) => "--params-file".to_string(),
                    (Some(var), false) => format!("-p {}=... or the environment variable {var}", spec.name),
                    (None, false) => format!("-p {}=...", spec.name),
                };
                let resumed = if src.stored.is_some() {
                    " (secrets are not stored in the journal: give it again to resume)"
                } else {
                    ""
                };
                problems.push(format!(
                    "param '{}' ({}) is required: give it with {how}{resumed}",
                    spec.name,
                    spec.ty.as_str()
                ));
            }
            continue;
        };
        match coerce(spec, raw) {
            Ok(v) => {
                values.insert(spec.name.clone(), v);
            }
            // In plan and check a missing value is fine, but a value given wrong is still wrong.
            Err(e) if !src.lenient || origin == "-p" || origin == "the params file" => {
                problems.push(format!("param '{}' from {origin}: {e}", spec.name))
            }
            Err(_) => {}
        }
    }
    if problems.is_empty() {
        Ok((values, warnings))
    } else {
        Err(problems)
    }
}

fn names(specs: &[ParamSpec]) -> String {
    if specs.is_empty() {
        "none".into()
    } else {
        specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
    }
}

fn coerce(spec: &ParamSpec, raw: Raw) -> Result<ParamValue, String> {
    use ParamType as T;
    let describe = |raw: &Raw| match raw {
        Raw::Text(s) => format!("'{s}'"),
        Raw::Toml(t) => t.to_string(),
        Raw::Json(j) => j.to_string(),
    };
    let shown = if spec.ty == T::Secret { "the value".to_string() } else { describe(&raw) };
    let value = match spec.ty {
        T::String | T::Enum | T::Duration => {
            let s = match raw {
                Raw::Text(s) | Raw::Toml(toml::Value::String(s)) | Raw::Json(Json::String(s)) => s,
                _ => return Err(format!("expected a {}, got {shown}", spec.ty.as_str())),
            };
            if spec.ty == T::Duration {
                let d = crate::duration::parse(&s)?;
                check_bounds(spec, d.as_secs_f64(), &s)?;
            }
            if spec.ty == T::Enum && !spec.choices.contains(&s) {
                return Err(format!("'{s}' is not one of: {}", spec.choices.join(", ")));
            }
            if spec.ty == T::String {
                check_bounds(spec, s.chars().count() as f64, "its length").map_err(|e| e.replace("value", "length"))?;
            }
            check_pattern(spec, &s)?;
            Json::String(s)
        }
        T::Integer => {
            let i = match raw {
                Raw::Text(s) => s.trim().parse::<i64>().map_err(|_| format!("expected an integer, got {shown}"))?,
                Raw::Toml(toml::Value::Integer(i)) => i,
                Raw::Json(Json::Number(n)) if n.is_i64() => n.as_i64().unwrap_or_default(),
                _ => return Err(format!("expected an integer, got {shown}")),
            };
            check_bounds(spec, i as f64, &i.to_string())?;
            Json::from(i)
        }
        T::Number => {
            let f = match raw {
                Raw::Text(s) => s
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| format!("expected a number, got {shown}"))?,
                Raw::Toml(toml::Value::Integer(i)) => i as f64,
                Raw::Toml(toml::Value::Float(f)) => f,
                Raw::Json(Json::Number(n)) => n.as_f64().unwrap_or_default(),
                _ => return Err(format!("expected a number, got {shown}")),
            };
            check_bounds(spec, f, &f.to_string())?;
            serde_json::Number::from_f64(f).map(Json::Number).ok_or("not a finite number")?
        }
        T::Boolean => Json::Bool(match raw {
            Raw::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => true,
                "false" | "no" | "off" | "0" => false,
                _ => return Err(format!("expected true or false, got {shown}")),
            },
            Raw::Toml(toml::Value::Boolean(b)) | Raw::Json(Json::Bool(b)) => b,
            _ => return Err(format!("expected true or false, got {shown}")),
        }),
        T::List => {
            let items: Vec<String> = match raw {
                Raw::Text(s) => s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect(),
                Raw::Toml(toml::Value::Array(a)) => {
                    a.into_iter().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect()
                }
                Raw::Json(Json::Array(a)) => {
                    a.into_iter().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect()
                }
                // `default = {}`: an empty Lua table is an empty list.
                Raw::Json(Json::Object(m)) if m.is_empty() => Vec::new(),
                _ => return Err(format!("expected a list (a,b,c on the command line, an array in TOML), got {shown}")),
            };
            check_bounds(spec, items.len() as f64, "the number of items")
                .map_err(|e| e.replace("value", "item count"))?;
            for item in &items {
                check_pattern(spec, item)?;
            }
            Json::Array(items.into_iter().map(Json::String).collect())
        }
        T::Secret => {
            let s = match raw {
                Raw::Text(s) | Raw::Toml(toml::Value::String(s)) => s,
                _ => return Err("expected a string".into()),
            };
            if s.is_empty() {
                return Err("the secret is empty".into());
            }
            return Ok(ParamValue::Secret(Secret::new(&spec.name, s)));
        }
    };
    Ok(ParamValue::Plain(value))
}

fn check_bounds(spec: &ParamSpec, v: f64, shown: &str) -> Result<(), String> {
    if let Some(min) = spec.min {
        if v < min {
            return Err(format!("value {shown} is below the minimum {min}"));
        }
    }
    if let Some(max) = spec.max {
        if v > max {
            return Err(format!("value {shown} is above the maximum {max}"));
        }
    }
    Ok(())
}

fn check_pattern(spec: &ParamSpec, s: &str) -> Result<(), String> {
    match (&spec.regex, &spec.pattern) {
        (Some(re), Some(p)) if !re.is_match(s) => Err(format!("'{s}' does not match the pattern {p}")),
        _ => Ok(()),
    }
}
