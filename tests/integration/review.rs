//! Regressions from the first review of the engine: each test is one bug that was reproduced,
//! kept fixed.
use crate::harness::{contains_bytes, journal_bytes, signal, Env};
use crate::run::wait_for;

#[test]
fn resuming_a_rollback_through_an_unapproved_gate_rolls_back_instead_of_going_forward() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "ra", rollback = "auto" }
step("A", { undo = function() exec{"test", "-e", "undo-ok"}; exec{shell = "echo undo-A >> log"} end }, function() return 1 end)
if env("FAIL") then error("transient") end
approve("go on?")
step("B", function() exec{shell = "echo B-ran >> log"} end)
"#,
    );
    env.run_env(&["run", "rb.lua"], &[("FAIL", "1")]).assert_code(1);
    assert_eq!(env.status("last"), "rollback_failed");
    env.write("undo-ok", "");
    env.run(&["resume", "last"]).assert_code(1);
    assert_eq!(env.status("last"), "rolled_back");
    assert_eq!(env.read("log"), "undo-A\n", "B must not run while rolling back");
}

#[test]
fn resuming_a_rollback_replays_past_failed_steps_and_retries_their_later_undos() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "coe", rollback = "auto" }
step("A", { undo = function() exec{shell = "echo undo-A >> log"} end }, function() return 1 end)
step("B", { continue_on_error = true }, function() fail("optional thing failed") end)
step("C", { undo = function()
  exec{shell = "if [ -e undo-c-tried ]; then echo undo-C >> log; else touch undo-c-tried; exit 1; fi"}
end }, function() return 3 end)
step("D", function() fail("boom") end)
"#,
    );
    env.run(&["run", "rb.lua"]).assert_code(1);
    assert_eq!(env.status("last"), "rollback_failed");
    env.run(&["resume", "last"]).assert_code(1);
    let show = env.show("last");
    assert_eq!(show["status"], "rolled_back");
    assert_eq!(Env::step(&show, "C")["undo_status"], "done");
    assert_eq!(env.read("log"), "undo-C\nundo-A\n");
    assert!(show["error"].as_str().unwrap().contains("boom"), "the failure that started the rollback is kept: {show}");
}

#[test]
fn a_live_runner_on_this_host_is_never_taken_over_even_with_a_late_heartbeat() {
    let env = Env::new();
    env.write(
        "rb.lua",
        "runbook { name = \"stopped\" }\nstep(\"a\", function() exec{\"touch\", \"up\"}; sleep(\"2s\") end)\n",
    );
    let mut cmd = env.cmd(&["run", "rb.lua"]);
    cmd.env("RUNBOOK_LEASE_SECS", "1");
    let child = cmd.stdout(std::process::Stdio::null()).spawn().unwrap();
    wait_for(|| env.path("up").exists());
    signal(child.id(), 19); // SIGSTOP: its heartbeat goes stale
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let r = env.run(&["resume", "last"]);
    signal(child.id(), 18); // SIGCONT
    r.assert_code(2);
    assert!(r.stderr.contains("is still running"), "{}", r.stderr);
    let out = crate::harness::finish(child, 60);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(env.status("last"), "succeeded");
}

#[test]
fn a_runner_taken_over_from_another_host_stops_without_recording() {
    let env = Env::new();
    env.write(
        "rb.lua",
        "runbook { name = \"fence\" }\nstep(\"a\", function() exec{shell = \"echo $RUNBOOK_HOSTNAME >> log\"}; sleep(\"1500ms\"); return os.getenv(\"RUNBOOK_HOSTNAME\") end)\n",
    );
    let mut cmd = env.cmd(&["run", "rb.lua"]);
    cmd.env("RUNBOOK_LEASE_SECS", "1").env("RUNBOOK_HOSTNAME", "host-a");
    let a = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    wait_for(|| env.read("log").contains("host-a"));
    signal(a.id(), 19);
    std::thread::sleep(std::time::Duration::from_millis(1800));
    assert_eq!(env.status("last"), "interrupted", "seen from another host, a stale heartbeat means gone");
    let b = env.run_env(&["resume", "last"], &[("RUNBOOK_HOSTNAME", "host-b"), ("RUNBOOK_LEASE_SECS", "1")]);
    signal(a.id(), 18);
    b.assert_code(0);
    let out = crate::harness::finish(a, 60);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("taken over by another process"));
    let show = env.show("last");
    assert_eq!(show["status"], "succeeded");
    assert_eq!(show["host"], "host-b");
    assert_eq!(Env::step(&show, "a")["result"], "host-b", "the old runner recorded nothing after the takeover");
}

#[test]
fn a_signal_during_rollback_stops_it_and_resume_finishes_it() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "rbsig", rollback = "auto" }
step("A", { undo = function() exec{shell = "echo undo-A >> log"} end }, function() end)
step("B", { undo = function() exec{shell = "echo undo-B-start >> log; test -e fast || sleep 30; echo undo-B >> log"} end }, function() end)
step("C", function() fail("boom") end)
"#,
    );
    let child = env.spawn(&["run", "rb.lua"]);
    wait_for(|| env.read("log").contains("undo-B-start"));
    signal(child.id(), 2);
    let out = crate::harness::finish(child, 60);
    assert_eq!(out.status.code(), Some(130));
    assert_eq!(env.status("last"), "interrupted");
    env.write("fast", "");
    env.run(&["resume", "last"]).assert_code(1);
    assert_eq!(env.status("last"), "rolled_back");
    assert_eq!(env.read("log"), "undo-B-start\nundo-B-start\nundo-B\nundo-A\n");
}

#[test]
fn a_signal_stops_a_step_spinning_in_pure_lua() {
    let env = Env::new();
    env.write(
        "rb.lua",
        "runbook { name = \"spin\" }\nstep(\"spin\", function() exec{\"touch\", \"up\"}; while true do end end)\n",
    );
    let child = env.spawn(&["run", "rb.lua"]);
    wait_for(|| env.path("up").exists());
    signal(child.id(), 15);
    let out = crate::harness::finish(child, 60);
    assert_eq!(out.status.code(), Some(130));
    assert_eq!(env.status("last"), "interrupted");
}

#[test]
fn an_interrupted_attempt_keeps_its_retry_budget() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "budget" }
step("flaky", { retries = 1, backoff = "1ms" }, function(attempt)
  exec{shell = "echo " .. attempt .. " >> attempts"}
  if attempt == 2 and not env("FAST") then sleep("30s") end
  error("always fails")
end)
"#,
    );
    let child = env.spawn(&["run", "rb.lua"]);
    wait_for(|| env.read("attempts").lines().count() == 2);
    signal(child.id(), 2);
    let _ = crate::harness::finish(child, 60);
    env.run_env(&["resume", "last"], &[("FAST", "1")]).assert_code(1);
    assert_eq!(env.read("attempts"), "1\n2\n3\n", "one attempt after the interruption, not a fresh budget");
}

#[test]
fn a_signal_before_the_declaration_exits_130() {
    let env = Env::new();
    env.write("rb.lua", "exec{\"touch\", \"up\"}\nexec{\"sleep\", \"30\"}\nrunbook { name = \"late\" }\n");
    let child = env.spawn(&["run", "rb.lua"]);
    wait_for(|| env.path("up").exists());
    signal(child.id(), 2);
    assert_eq!(crate::harness::finish(child, 60).status.code(), Some(130));
}

#[test]
fn a_declaration_caught_by_pcall_leaves_no_run_behind() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"pcall(runbook, { name = "pc", params = { n = { type = "integer", required = true } } })
runbook { name = "pc", lock = "pc-lock" }
step("a", function() end)
"#,
    );
    let r = env.run(&["run", "rb.lua"]);
    r.assert_code(2);
    assert!(r.stderr.contains("param 'n'"), "{}", r.stderr);
    let h = env.run(&["history", "--output", "json"]);
    assert_eq!(h.stdout.trim(), "[]", "no run recorded");
    env.write("ok.lua", "runbook { name = \"pc2\", lock = \"pc-lock\" }\nstep(\"a\", function() end)\n");
    env.run(&["run", "ok.lua"]).assert_code(0);
}

#[test]
fn secrets_stay_out_of_run_errors_params_and_step_names() {
    let env = Env::new();
    let pw = "hunter2-very-secret";
    env.write(
        "rb.lua",
        r#"runbook { name = "leak", rollback = "auto", params = { url = { type = "string", required = true } } }
local pw = secret("PW")
step("A", { undo = function() end }, function() end)
approve("connect with " .. os.getenv("PW") .. "?")
error("cannot connect with " .. os.getenv("PW"))
"#,
    );
    env.write(
        "name.lua",
        "runbook { name = \"leak2\" }\nlocal pw = secret(\"PW\")\nstep(\"b \" .. os.getenv(\"PW\"), function() end)\n",
    );
    let url = format!("postgres://u:{pw}@db/app");
    let r = env.run_env(&["run", "rb.lua", "--yes", "-p", &format!("url={url}")], &[("PW", pw)]);
    r.assert_code(1);
    assert!(!r.all().contains(pw), "{}", r.all());
    let show = env.run(&["show", "last", "--output", "json", "--events"]);
    assert!(!show.stdout.contains(pw), "{}", show.stdout);
    assert!(show.stdout.contains("<secret:PW>"));
    assert_eq!(env.status("last"), "rolled_back");
    let named = env.run_env(&["run", "name.lua"], &[("PW", pw)]);
    named.assert_code(2);
    assert!(named.stderr.contains("a step name contains the value of a secret"), "{}", named.stderr);
    assert!(!named.all().contains(pw));
    assert!(!contains_bytes(&journal_bytes(&env.journal_path()), pw.as_bytes()), "journal bytes hold the secret");
}

#[test]
fn steps_and_primitives_inside_a_coroutine_are_refused_clearly() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "co" }
local co = coroutine.wrap(function(x) coroutine.yield(x * 2) end)
step("plain coroutines still work", function() return co(21) end)
local ok1, err1 = pcall(coroutine.wrap(function() step("a", function() end) end))
local ok2, err2 = pcall(coroutine.wrap(function() exec{"true"} end))
step("report", function() return { step = tostring(err1), exec = tostring(err2), ok = ok1 or ok2 } end)
step("after", function() return "the run goes on" end)
"#,
    );
    env.run(&["run", "rb.lua"]).assert_code(0);
    let show = env.show("last");
    assert_eq!(Env::step(&show, "plain coroutines still work")["result"], 42);
    let report = &Env::step(&show, "report")["result"];
    assert_eq!(report["ok"], false);
    assert!(report["step"].as_str().unwrap().contains("step 'a' cannot be called inside a coroutine"), "{report}");
    assert!(report["exec"].as_str().unwrap().contains("exec{} cannot be called inside a coroutine"), "{report}");
    assert_eq!(Env::step(&show, "after")["result"], "the run goes on");
}

// Second review.

const ROLLBACK_TWICE: &str = r#"runbook { name = "rr", rollback = "auto" }
step("A", { undo = function() exec{shell = "echo undo-A >> log"} end }, function() end)
step("B", { undo = function()
  exec{shell = "if [ -e undo-b-tried ]; then echo undo-B >> log; else touch undo-b-tried; exit 1; fi"}
end }, function() end)
if env("SLOW") then exec{"touch", "replaying"}; sleep("30s") end
step("C", function() if not env("FIXED") then fail("boom") end end)
step("D", function() exec{shell = "echo D-ran >> log"} end)
"#;

#[test]
fn a_signal_while_replaying_a_rollback_keeps_it_a_rollback() {
    let env = Env::new();
    env.write("rb.lua", ROLLBACK_TWICE);
    env.run(&["run", "rb.lua"]).assert_code(1);
    assert_eq!(env.status("last"), "rollback_failed");
    let mut cmd = env.cmd(&["resume", "last"]);
    cmd.env("SLOW", "1");
    let child = cmd.stdout(std::process::Stdio::null()).spawn().unwrap();
    wait_for(|| env.path("replaying").exists());
    signal(child.id(), 2);
    assert_eq!(crate::harness::finish(child, 60).status.code(), Some(130));
    assert_eq!(env.status("last"), "interrupted");
    env.run_env(&["resume", "last"], &[("FIXED", "1")]).assert_code(1);
    assert_eq!(env.status("last"), "rolled_back");
    assert_eq!(env.read("log"), "undo-B\nundo-A\n", "D never runs while rolling back");
}

#[test]
fn replay_gives_pcall_the_same_failure_so_undos_on_that_branch_are_reached() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "branch", rollback = "auto" }
local ok = pcall(step, "primary", function() fail("primary is down") end)
if not ok then
  step("fallback", { undo = function()
    exec{shell = "if [ -e tried ]; then echo undo-fallback >> log; else touch tried; exit 1; fi"}
  end }, function() end)
end
step("C", function() fail("boom") end)
"#,
    );
    env.run(&["run", "rb.lua"]).assert_code(1);
    assert_eq!(env.status("last"), "rollback_failed");
    env.run(&["resume", "last"]).assert_code(1);
    assert_eq!(env.status("last"), "rolled_back");
    assert_eq!(env.read("log"), "undo-fallback\n");
}

#[test]
fn an_undo_the_replay_cannot_reach_makes_the_rollback_fail_loudly() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "gone", rollback = "auto" }
if not env("SKIP") then
  step("A", { undo = function() exec{"test", "-e", "never"} end }, function() end)
end
step("C", function() fail("boom") end)
"#,
    );
    env.run(&["run", "rb.lua"]).assert_code(1);
    assert_eq!(env.status("last"), "rollback_failed");
    let r = env.run_env(&["resume", "last"], &[("SKIP", "1")]);
    r.assert_code(1);
    let show = env.show("last");
    assert_eq!(show["status"], "rollback_failed");
    assert!(show["error"].as_str().unwrap().contains("the undo of step(s) 'A' did not run"), "{show}");
}

#[test]
fn a_value_that_becomes_secret_later_is_scrubbed_from_step_results_and_errors() {
    let env = Env::new();
    let token = "S3cr3tTokenValue-abc";
    env.write("pw.txt", &format!("{token}\n"));
    env.write(
        "rb.lua",
        r#"runbook { name = "late" }
local t = step("read", function() return { token = exec{"cat", "pw.txt", echo = false}.stdout } end)
step("use", { continue_on_error = true }, function() fail("bad token " .. t.token) end)
local s = secret{file = "pw.txt", name = "token"}
step("after", function() return "done" end)
"#,
    );
    env.run(&["run", "rb.lua", "--output", "json"]).assert_code(0);
    let show = env.run(&["show", "last", "--output", "json", "--events"]);
    assert!(!show.stdout.contains(token), "{}", show.stdout);
    assert!(!contains_bytes(&journal_bytes(&env.journal_path()), token.as_bytes()), "the journal file still holds it");
    let events: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    let steps = events["steps"].as_array().unwrap();
    let by = |n: &str| steps.iter().find(|s| s["name"] == n).unwrap().clone();
    assert_eq!(by("read")["result"], serde_json::json!({"token": "<secret:token>\n"}));
    assert!(by("use")["error"].as_str().unwrap().contains("bad token <secret:token>"), "{}", by("use"));
    assert!(
        events["events"].as_array().unwrap().iter().any(|e| e["event"] == "run_finished"),
        "run_finished is journaled"
    );
}

#[test]
fn a_param_that_held_a_secret_must_be_given_again_never_defaulted() {
    let env = Env::new();
    env.write("pw.txt", "S3cr3tTokenValue\n");
    env.write(
        "rb.lua",
        r#"runbook { name = "p", params = { url = { type = "string", default = "pg://localhost/test" } } }
local s = secret{file = "pw.txt", name = "pw"}
step("a", function() exec{"test", "-e", "go"}; return params.url end)
"#,
    );
    env.run(&["run", "rb.lua", "-p", "url=pg://u:S3cr3tTokenValue@prod"]).assert_code(1);
    env.write("go", "");
    let r = env.run(&["resume", "last"]);
    r.assert_code(2);
    assert!(r.stderr.contains("param 'url' held the value of a secret"), "{}", r.stderr);
    env.run(&["resume", "last", "-p", "url=pg://u:S3cr3tTokenValue@prod"]).assert_code(0);
    assert_eq!(Env::step(&env.show("last"), "a")["result"], "pg://u:<secret:pw>@prod");
}

#[test]
fn an_absurd_lease_is_clamped_and_a_live_run_is_not_taken_over() {
    let env = Env::new();
    env.write(
        "rb.lua",
        "runbook { name = \"lease\" }\nstep(\"a\", function() exec{\"touch\", \"up\"}; sleep(\"2s\") end)\n",
    );
    let mut cmd = env.cmd(&["run", "rb.lua"]);
    cmd.env("RUNBOOK_LEASE_SECS", "10000000000000000").env("RUNBOOK_HOSTNAME", "h1");
    let child = cmd.stdout(std::process::Stdio::null()).spawn().unwrap();
    wait_for(|| env.path("up").exists());
    let h = env.run_env(&["history", "--output", "json"], &[("RUNBOOK_HOSTNAME", "h2")]);
    h.assert_code(0);
    assert!(h.stdout.contains("\"status\":\"running\""), "{}", h.stdout);
    assert_eq!(crate::harness::finish(child, 60).status.code(), Some(0));
}

#[test]
fn a_failed_resume_of_a_non_coroutine_leaves_steps_usable() {
    let env = Env::new();
    env.write(
        "rb.lua",
        "runbook { name = \"co\" }\nlocal ok, err = pcall(coroutine.resume, nil)\nstep(\"a\", function() return tostring(err) end)\n",
    );
    env.run(&["run", "rb.lua"]).assert_code(0);
    assert!(Env::step(&env.show("last"), "a")["result"].as_str().unwrap().contains("coroutine expected"));
}

#[test]
fn cancel_during_a_rollback_cancels() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "cr", rollback = "auto" }
step("A", { undo = function() exec{"touch", "undoing"}; sleep("30s") end }, function() end)
step("B", function() fail("boom") end)
"#,
    );
    let mut cmd = env.cmd(&["run", "rb.lua"]);
    cmd.env("RUNBOOK_LEASE_SECS", "1");
    let child = cmd.stdout(std::process::Stdio::null()).spawn().unwrap();
    wait_for(|| env.path("undoing").exists());
    env.run(&["cancel", "last"]).assert_code(0);
    assert_eq!(crate::harness::finish(child, 60).status.code(), Some(1));
    assert_eq!(env.status("last"), "cancelled");
}
