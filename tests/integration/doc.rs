//! `runbook doc`: a runbook as a Markdown guide, and the committed guides of runbooks/ kept
//! current.
use std::path::Path;
use std::process::Command;

use crate::harness::{Env, BIN};

#[test]
fn committed_guides_of_every_runbook_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("runbooks")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".lua") else { continue };
        // A module the runbooks require, or a runbook's tests (load_test.lua is a runbook):
        // only files that declare a runbook have a guide.
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if stem.starts_with('_') || !text.lines().any(|l| l.starts_with("runbook {")) {
            continue;
        }
        let out = Command::new(BIN)
            .args(["doc", &format!("runbooks/{name}")])
            .current_dir(root)
            .env_remove("RUNBOOK_STATE")
            // Defaults shown in the guides must not depend on this machine's environment.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .output()
            .unwrap();
        assert!(out.status.success(), "runbook doc runbooks/{name}: {}", String::from_utf8_lossy(&out.stderr));
        let fresh = String::from_utf8(out.stdout).unwrap();
        let committed = std::fs::read_to_string(root.join(format!("docs/runbooks/{stem}.md"))).unwrap_or_default();
        assert!(
            fresh == committed,
            "docs/runbooks/{stem}.md is not current; regenerate the guides with\n  for f in $(grep -l '^runbook {{' runbooks/[!_]*.lua); do runbook doc \"$f\" --output docs/runbooks/$(basename \"$f\" .lua).md; done"
        );
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} runbooks found");
}

#[test]
fn a_guide_lists_params_steps_gates_undo_and_the_rollback_order() {
    let env = Env::new();
    env.write(
        "deploy.lua",
        r#"
runbook {
  name = "deploy",
  description = "Ship a release to the web hosts",
  lock = "web",
  rollback = "auto",
  params = {
    version = { type = "string", required = true, description = "release to ship" },
    strategy = { type = "enum", choices = { "rolling", "canary" }, default = "rolling" },
    token = { type = "secret", env = "DEPLOY_TOKEN", description = "registry token" },
  },
}
step("backup", { description = "Dump the database", undo = function() end }, function() return 1 end)
approve("ship " .. params.version .. "?")
step("migrate", { retries = 2, timeout = "5m", undo = function() end }, function() end)
step("smoke", { description = "Requests | checks" }, function() end)
"#,
    );
    let r = env.run(&["doc", "deploy.lua"]);
    r.assert_code(0);
    let md = r.stdout;
    for line in [
        "# deploy",
        "Ship a release to the web hosts",
        "- Run: `runbook run deploy.lua -p version=...`",
        "- Lock: `web`: one run at a time, across every runner of the journal",
        "- Rollback: automatic (the undo of each completed step, newest first)",
        "| `strategy` | enum: rolling, canary | `rolling` | no |  |",
        "| `token` | secret |  | no | registry token (env `DEPLOY_TOKEN`) **Secret**: never stored or shown; give it again on resume. |",
        "| `version` | string |  | yes | release to ship |",
        "1. **backup**: Dump the database _(undo)_ (line 13)",
        "2. **Approval gate:** \"ship <params.version>?\" (line 14).",
        "3. **migrate** _(retries=2 (backoff 1.0s..1m00s); timeout=5m00s; undo)_ (line 15)",
        "4. **smoke**: Requests | checks (line 16)",
        "- Rollback is automatic: when a step fails, the undo of each step that completed runs, newest first: **migrate**, then **backup**.",
    ] {
        assert!(md.lines().any(|l| l.starts_with(line)), "missing `{line}` in:\n{md}");
    }
    // --output writes the file; nothing ran, nothing was journaled.
    env.run(&["doc", "deploy.lua", "--output", "deploy.md"]).assert_code(0);
    assert_eq!(env.read("deploy.md"), md);
    assert!(!env.journal_path().exists(), "doc touched the journal");

    let bad = env.run(&["doc", "missing.lua"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    env.write("broken.lua", "runbook { name = ");
    let bad = env.run(&["doc", "broken.lua"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.stderr.contains("broken.lua:1"), "{}", bad.stderr);
}
