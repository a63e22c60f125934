//! `runbook test --from-run RUN`: a test skeleton from a journaled run, so an incident becomes a
//! test. Its params (a secret's value is not in the journal: a placeholder to replace), each step
//! that ran as a step fake (its recorded result, or its error), its gates approved or not, and
//! its outcome as the expectation. Calls made outside steps (a connection opened at the top of
//! the runbook, an inventory read) need fakes of their own: the first run of the test names them.
use std::fmt::Write;
use std::path::Path;

use crate::error::{exit, Result};
use crate::journal::{StepKind, StepStatus};

pub async fn skeleton(state: Option<&str>, run: &str) -> Result<u8> {
    let journal = crate::journal::open(state).await?;
    let r = journal.find_run(run).await?;
    let steps = journal.steps(&r.id).await?;
    journal.close().await;
    let here = std::env::current_dir().unwrap_or_default();
    let path = Path::new(&r.path);
    let shown = path.strip_prefix(&here).unwrap_or(path).display().to_string();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "-- Written by `runbook test --from-run {}` from run {} of {} ({}).",
        run, r.id, r.runbook, r.status
    );
    let _ = writeln!(
        out,
        "-- Paths are from this file's folder: save it in {} or adjust the runbook's path.",
        here.display()
    );
    let _ = writeln!(out, "-- Each step that ran is faked with what it returned; calls outside steps need fakes");
    let _ = writeln!(out, "-- of their own (a run of the test names the first one missing).");
    let _ = writeln!(out, "test({}, function()", lua_string(&format!("{} as run {} went", r.runbook, r.id)));
    let _ = writeln!(out, "  local r = run({}, {{", lua_string(&shown));
    let _ = writeln!(out, "    params = {},", lua_value(&placeholders(&r.params), 2));
    let mut fakes = Vec::new();
    let mut approved = false;
    for s in &steps {
        match (s.kind, s.status) {
            (StepKind::Approval, StepStatus::Approved) => approved = true,
            (StepKind::Approval, _) | (_, StepStatus::Skipped) => {}
            (StepKind::Step, StepStatus::Succeeded) => {
                let result = s.result.clone().unwrap_or(serde_json::Value::Null);
                fakes.push(format!("        [{}] = {{ result = {} }},", lua_string(&s.name), lua_value(&result, 4)));
            }
            (StepKind::Step, StepStatus::Failed) => {
                let error = s.error.as_deref().unwrap_or("failed");
                fakes.push(format!(
                    "        [{}] = {{ error = {} }},",
                    lua_string(&s.name),
                    lua_string(error_cause(first_line(error)))
                ));
            }
            _ => {}
        }
    }
    let _ = writeln!(out, "    fakes = {{");
    let _ = writeln!(out, "      steps = {{");
    for f in &fakes {
        let _ = writeln!(out, "{f}");
    }
    let _ = writeln!(out, "      }},");
    let _ = writeln!(out, "    }},");
    if approved {
        let _ = writeln!(out, "    approve = true,");
    }
    let _ = writeln!(out, "  }})");
    let status = match r.status.to_string().as_str() {
        "running" | "interrupted" => "interrupted".to_string(),
        other => other.to_string(),
    };
    let _ = writeln!(out, "  expect(r.status).to_be({})", lua_string(&status));
    for s in steps.iter().filter(|s| s.status == StepStatus::Failed) {
        let error = s.error.as_deref().unwrap_or("failed");
        let _ = writeln!(
            out,
            "  expect(r.steps[{}].error).to_contain({})",
            lua_string(&s.name),
            lua_string(error_cause(first_line(error)))
        );
    }
    let _ = writeln!(out, "end)");
    // A secret's value never reaches the journal; this makes sure no other text shows one either.
    print!("{}", crate::secret::redact(&out));
    Ok(exit::OK)
}

/// The params as the test gives them: a secret's placeholder (`<secret:NAME>`) becomes a value to
/// fill in.
fn placeholders(params: &serde_json::Value) -> serde_json::Value {
    match params {
        serde_json::Value::String(s) if s.starts_with("<secret:") => {
            serde_json::Value::String(format!("REPLACE: {s} (a secret: put a test value here)"))
        }
        serde_json::Value::Object(m) => {
            serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), placeholders(v))).collect())
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(placeholders).collect()),
        other => other.clone(),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// The cause of a step's error, without the `file:line: step 'x': ` in front.
fn error_cause(s: &str) -> &str {
    match s.find("': ") {
        Some(i) if s[..i].contains("step '") => &s[i + 3..],
        _ => s,
    }
}

use crate::lua::literal::{is_identifier as is_name, quoted as lua_string};

/// A JSON value as a Lua literal, indented `depth` levels for its inner lines.
fn lua_value(v: &serde_json::Value, depth: usize) -> String {
    use serde_json::Value as J;
    // A table on one line when it is short, else one item per line.
    let table = |items: Vec<String>| {
        if items.is_empty() {
            return "{}".to_string();
        }
        let one = format!("{{ {} }}", items.join(", "));
        if one.len() <= 80 && !one.contains('\n') {
            return one;
        }
        let pad = "  ".repeat(depth + 1);
        format!("{{\n{pad}{},\n{}}}", items.join(&format!(",\n{pad}")), "  ".repeat(depth))
    };
    match v {
        J::Null => "null".into(),
        J::Bool(b) => b.to_string(),
        J::Number(n) => n.to_string(),
        J::String(s) => lua_string(s),
        J::Array(a) => table(a.iter().map(|x| lua_value(x, depth + 1)).collect()),
        J::Object(m) => table(
            m.iter()
                .map(|(k, x)| {
                    let key = if is_name(k) { k.clone() } else { format!("[{}]", lua_string(k)) };
                    format!("{key} = {}", lua_value(x, depth + 1))
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_becomes_lua_that_reads_back_the_same() {
        use mlua::LuaSerdeExt;
        let v = serde_json::json!({"a": [1, "x\"y\n", "\u{1}2"], "end": null, "ok": true, "nested": {"k-1": 2.5}});
        let text = super::lua_value(&v, 0);
        let lua = mlua::Lua::new();
        lua.globals().set("null", lua.null()).unwrap();
        let back: mlua::Value = lua.load(format!("return {text}")).eval().unwrap();
        let json = serde_json::to_value(&back).unwrap();
        assert_eq!(json["a"][1], "x\"y\n");
        assert_eq!(json["a"][2], "\u{1}2");
        assert_eq!(json["nested"]["k-1"], 2.5);
        assert_eq!(json["ok"], true);
    }

    #[test]
    fn a_steps_error_loses_its_location_and_keeps_its_cause() {
        assert_eq!(super::error_cause("s.lua:3: step 'two': boom at two"), "boom at two");
        assert_eq!(super::error_cause("no step here"), "no step here");
    }
}
