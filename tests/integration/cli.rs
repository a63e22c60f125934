//! The commands around runs: plan, check, history, show, help, completions, references.
use crate::harness::Env;

const RB: &str = r#"runbook {
  name = "nightly-backup",
  description = "Back up and prune",
  params = { keep = { type = "integer", default = 30, description = "days to keep" }, url = { type = "secret", env = "DB_URL" } },
  lock = "backup",
}
local conn = exec{"psql", "-c", "select 1"}
local b = step("dump", { description = "pg_dump to disk", retries = 2, timeout = "30m", undo = function() end }, function()
  return exec{"pg_dump"}
end)
for _, t in ipairs(b.tables) do step("check " .. t, function() end) end
approve("Prune backups older than " .. params.keep .. " days?")
step("prune", { when = function() return b.ok end }, function() end)
"#;

#[test]
fn plan_lists_steps_options_and_gates_without_running_anything() {
    let env = Env::new();
    env.write("rb.lua", RB);
    let r = env.run(&["plan", "rb.lua"]);
    r.assert_code(0);
    let out = &r.stdout;
    assert!(out.contains("nightly-backup (rb.lua)"), "{out}");
    assert!(out.contains("lock: backup"), "{out}");
    assert!(out.contains("keep") && out.contains("default 30") && out.contains("days to keep"), "{out}");
    assert!(out.contains("1. dump  (line 8)  [retries=2"), "{out}");
    assert!(out.contains("timeout=30m") && out.contains("undo"), "{out}");
    assert!(out.contains("pg_dump to disk"), "{out}");
    assert!(out.contains("approval: Prune backups older than 30 days?"), "{out}");
    assert!(out.contains("3. prune"), "{out}");
    assert!(!env.path(".runbook").exists(), "plan must not touch a journal");
    let j = env.run(&["plan", "rb.lua", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(v["steps"].as_array().unwrap().len(), 3);
    assert_eq!(v["runbook"]["params"][0]["name"], "keep");
}

#[test]
fn check_accepts_a_good_runbook_and_rejects_a_broken_one() {
    let env = Env::new();
    env.write("rb.lua", RB);
    let r = env.run(&["check", "rb.lua"]);
    r.assert_code(0);
    assert!(r.stdout.contains("ok (nightly-backup: 2 step(s), 1 approval gate(s))"), "{}", r.stdout);
    env.write("bad.lua", "runbook { name = \"x\" }\nstep(\"a\", { retires = 3 }, function() end)\n");
    let r = env.run(&["check", "bad.lua"]);
    r.assert_code(2);
    assert!(r.stderr.contains("bad.lua:2: step 'a': unknown step option 'retires'"), "{}", r.stderr);
}

#[test]
fn show_json_has_the_documented_shape() {
    let env = Env::new();
    env.write("rb.lua", "runbook { name = \"shape\", params = { n = { type = \"integer\", default = 2 } } }\nstep(\"a\", function() return { n = params.n } end)\nstep(\"b\", function() end)\n");
    env.run(&["run", "rb.lua"]).assert_code(0);
    let v = env.show("last");
    for key in ["run_id", "runbook", "path", "status", "params", "started_at", "finished_at", "steps"] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["runbook"], "shape");
    assert_eq!(v["params"], serde_json::json!({"n": 2}));
    let step = &v["steps"][0];
    for key in ["name", "status", "attempts", "started_at", "finished_at", "duration_ms", "result", "error"] {
        assert!(step.get(key).is_some(), "missing steps[].{key} in {step}");
    }
    assert!(v["started_at"].as_str().unwrap().ends_with('Z'), "RFC 3339 UTC");
    for key in ["run_id", "runbook", "path", "status", "started_at", "finished_at"] {
        assert!(v[key].is_string(), "{key} is not a string in {v}");
    }
    assert!(
        step["duration_ms"].is_u64() && step["started_at"].is_string() && step["finished_at"].is_string(),
        "{step}"
    );
    let id = v["run_id"].as_str().unwrap().to_string();
    env.run(&["run", "rb.lua"]).assert_code(0);
    assert_eq!(env.show(&id)["run_id"], id.as_str(), "a full id names the run");
    let r = env.run(&["show", &id[..8]]);
    r.assert_code(2);
    assert!(r.stderr.contains("matches several runs"), "{}", r.stderr);
}

#[test]
fn json_output_is_one_event_per_line() {
    let env = Env::new();
    env.write(
        "rb.lua",
        "runbook { name = \"ev\" }\nstep(\"a\", function() log.warn(\"careful\", { n = 1 }) return 5 end)\n",
    );
    let r = env.run(&["run", "rb.lua", "--output", "json"]);
    r.assert_code(0);
    let events: Vec<serde_json::Value> = r.stdout.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["run_started", "step_started", "log", "step_finished", "run_finished"]);
    for e in &events {
        for key in ["event", "run_id", "step", "status", "ts"] {
            assert!(e.get(key).is_some(), "{key} missing in {e}");
        }
    }
    let fin = &events[3];
    assert_eq!(fin["result"], 5);
    assert_eq!(fin["attempt"], 1);
    assert!(fin["duration_ms"].is_u64());
    assert_eq!(events[2]["level"], "warn");
}

#[test]
fn history_lists_newest_first_and_filters() {
    let env = Env::new();
    env.write("a.lua", "runbook { name = \"alpha\" }\nstep(\"x\", function() end)\n");
    env.write("b.lua", "runbook { name = \"beta\" }\nstep(\"x\", function() error(\"no\") end)\n");
    env.run(&["run", "a.lua"]).assert_code(0);
    env.run(&["run", "b.lua"]).assert_code(1);
    let all: serde_json::Value = serde_json::from_str(&env.run(&["history", "--output", "json"]).stdout).unwrap();
    assert_eq!(all[0]["runbook"], "beta");
    assert_eq!(all[0]["status"], "failed");
    assert_eq!(all[1]["runbook"], "alpha");
    let text = env.run(&["history", "--runbook", "alpha"]);
    assert!(text.stdout.contains("alpha") && !text.stdout.contains("beta"), "{}", text.stdout);
}

#[test]
fn a_run_whose_process_died_shows_as_interrupted() {
    let env = Env::new();
    env.write(
        "rb.lua",
        "runbook { name = \"dies\" }\nstep(\"hang\", function() exec{\"touch\", \"up\"}; sleep(\"60s\") end)\n",
    );
    let child = env.spawn(&["run", "rb.lua"]);
    crate::run::wait_for(|| env.path("up").exists());
    assert_eq!(env.status("last"), "running");
    let r = env.run(&["resume", "last"]);
    r.assert_code(2);
    assert!(r.stderr.contains("is still running"), "{}", r.stderr);
    crate::harness::signal(child.id(), 9);
    let _ = crate::harness::finish(child, 60);
    assert_eq!(env.status("last"), "interrupted");
    assert!(env.run(&["history"]).stdout.contains("interrupted"));
}

#[test]
fn help_documents_exit_codes_and_every_command_has_examples() {
    let env = Env::new();
    let r = env.run(&["--help"]);
    r.assert_code(0);
    for code in ["0 ", "1 ", "2 ", "3 ", "4 ", "130"] {
        assert!(r.stdout.contains(&format!("  {code}")), "exit code {code} in help:\n{}", r.stdout);
    }
    for cmd in ["run", "resume", "plan", "check", "history", "show", "approve", "cancel", "completions"] {
        let h = env.run(&[cmd, "--help"]);
        h.assert_code(0);
        assert!(h.stdout.contains("Examples:"), "{cmd} --help has no examples");
    }
    let c = env.run(&["completions", "bash"]);
    c.assert_code(0);
    assert!(c.stdout.contains("runbook") && c.stdout.contains("resume"));
}

#[test]
fn unknown_runs_and_missing_files_are_usage_errors() {
    let env = Env::new();
    let r = env.run(&["show", "nope"]);
    r.assert_code(2);
    assert!(r.stderr.contains("no run matches 'nope'"), "{}", r.stderr);
    let r = env.run(&["run", "missing.lua"]);
    r.assert_code(2);
    assert!(r.stderr.contains("missing.lua does not exist"));
    let r = env.run(&["resume"]);
    r.assert_code(2);
}

#[test]
fn show_events_reads_like_the_live_output() {
    let env = Env::new();
    env.write("rb.lua", "runbook { name = \"ev\" }\nstep(\"a\", function() log.info(\"hello\", { n = 1 }) end)\n");
    env.run(&["run", "rb.lua"]).assert_code(0);
    let r = env.run(&["show", "last", "--events"]);
    r.assert_code(0);
    assert!(r.stdout.contains("[a] info: hello n=1"), "{}", r.stdout);
    assert!(r.stdout.contains("run succeeded after"), "{}", r.stdout);
}

#[test]
fn the_quickstart_runs_waits_for_approval_and_resumes_with_nothing_installed() {
    let env = Env::new();
    let quickstart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart.lua");
    let quickstart = quickstart.to_str().unwrap();
    let workdir = env.path("work");
    let workdir_param = format!("workdir={}", workdir.display());
    let r = env.run(&["run", quickstart, "-p", &workdir_param, "-p", "pause=10ms"]);
    r.assert_code(3);
    assert!(r.stdout.contains("approval needed: Ship v1.0.0"), "{}", r.stdout);
    env.run(&["approve", "last"]).assert_code(0);
    env.run(&["resume", "last"]).assert_code(0);
    let show = env.show("last");
    assert_eq!(show["status"], "succeeded");
    assert_eq!(Env::step(&show, "flaky health check")["attempts"], 2);
    assert_eq!(Env::step(&show, "record release")["result"]["version"], "v1.0.0");
    assert!(workdir.join("current").exists() && workdir.join("releases.db").exists());
    let verified = &Env::step(&show, "verify backup")["result"];
    assert_eq!(verified["verified"], true, "{verified}");
    assert_eq!(verified["rows"], 1);
    assert!(workdir.join("restore-drill/releases.db").exists());
}
