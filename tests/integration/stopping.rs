//! A run always stops: a step timeout, SIGTERM, `runbook cancel` and a gate are honoured whatever
//! the Lua code does (a `pcall` around a loop, a finalizer that never ends, one long call in C),
//! within a bounded time, with the journal saying why; a second signal ends the process at once.
use crate::harness::{signal, Env};
use crate::run::wait_for;

/// A `pcall` inside a loop would catch the stop at every turn.
const PCALL_LOOP: &str = r#"runbook { name = "spin" }
step("spin", { timeout = "1s" }, function()
  exec{"touch", "spinning"}
  while true do pcall(function() while true do end end) end
end)
"#;

/// One call in C that does not come back for minutes.
const LONG_C_CALL: &str = r#"runbook { name = "regex" }
step("regex", { timeout = "1s" }, function()
  exec{"touch", "spinning"}
  return (string.rep("x", 1e7):find(".-.-.-.-.-.-.-y"))
end)
"#;

#[test]
fn a_step_timeout_cannot_be_swallowed_by_pcall() {
    let env = Env::new();
    env.write("rb.lua", PCALL_LOOP);
    let out = crate::harness::finish(env.spawn(&["run", "rb.lua"]), 30);
    assert_eq!(out.status.code(), Some(1));
    let show = env.show("last");
    assert_eq!(show["status"], "failed");
    let err = Env::step(&show, "spin")["error"].as_str().unwrap().to_string();
    assert!(err.starts_with("rb.lua:4: step 'spin': step timed out"), "{err}");
}

#[test]
fn sigterm_and_cancel_stop_a_loop_that_catches_everything() {
    let env = Env::new();
    env.write("rb.lua", &PCALL_LOOP.replace("{ timeout = \"1s\" }, ", ""));
    let child = env.spawn(&["run", "rb.lua"]);
    wait_for(|| env.path("spinning").exists());
    signal(child.id(), 15);
    let out = crate::harness::finish(child, 30);
    assert_eq!(out.status.code(), Some(130));
    assert_eq!(env.status("last"), "interrupted");

    std::fs::remove_file(env.path("spinning")).unwrap();
    let mut cmd = env.cmd(&["run", "rb.lua"]);
    cmd.env("RUNBOOK_LEASE_SECS", "1").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let child = cmd.spawn().unwrap();
    wait_for(|| env.path("spinning").exists());
    env.run_env(&["cancel", "last"], &[("RUNBOOK_LEASE_SECS", "1")]).assert_code(0);
    let out = crate::harness::finish(child, 30);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(env.status("last"), "cancelled");
}

#[test]
fn one_long_call_in_c_is_ended_by_the_watchdog_and_the_run_stays_resumable() {
    let env = Env::new();
    env.write("rb.lua", LONG_C_CALL);
    let out = crate::harness::finish(env.spawn(&["run", "rb.lua"]), 30);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not return to the engine"));
    let show = env.show("last");
    assert_eq!(show["status"], "failed");
    let err = Env::step(&show, "regex")["error"].as_str().unwrap().to_string();
    assert!(err.contains("timed out after 1.0s") && err.contains("the process was ended"), "{err}");
    // Resumable: with the step fixed it runs to its end.
    env.write("rb.lua", &LONG_C_CALL.replace(".-.-.-.-.-.-.-y", "x"));
    env.run(&["resume", "last", "--allow-changed"]).assert_code(0);

    // SIGTERM during such a call: the same, as an interruption.
    env.write("rb2.lua", &LONG_C_CALL.replace("{ timeout = \"1s\" }, ", "").replace("regex", "regex2"));
    std::fs::remove_file(env.path("spinning")).unwrap();
    let child = env.spawn(&["run", "rb2.lua"]);
    wait_for(|| env.path("spinning").exists());
    std::thread::sleep(std::time::Duration::from_millis(200));
    signal(child.id(), 15);
    let out = crate::harness::finish(child, 30);
    assert_eq!(out.status.code(), Some(130));
    let show = env.show("last");
    assert_eq!(show["status"], "interrupted");
    assert!(Env::step(&show, "regex2")["error"].as_str().unwrap().contains("interrupted by SIGTERM"), "{show}");
}

#[test]
fn a_second_signal_ends_the_process_at_once() {
    let env = Env::new();
    env.write("rb.lua", &LONG_C_CALL.replace("{ timeout = \"1s\" }, ", ""));
    let child = env.spawn(&["run", "rb.lua"]);
    wait_for(|| env.path("spinning").exists());
    signal(child.id(), 15);
    std::thread::sleep(std::time::Duration::from_millis(100));
    signal(child.id(), 15);
    let started = std::time::Instant::now();
    let out = crate::harness::finish(child, 30);
    assert_eq!(out.status.code(), Some(130));
    // (Not a timing assertion: the watchdog alone would take its 2 s grace.)
    assert!(String::from_utf8_lossy(&out.stderr).contains("second signal"), "{:?}", started.elapsed());
}

#[test]
fn a_finalizer_that_never_ends_does_not_hold_the_process_after_the_run() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "gc" }
step("leave a finalizer", function() setmetatable({}, { __gc = function() while true do end end }) return 1 end)
"#,
    );
    let out = crate::harness::finish(env.spawn(&["run", "rb.lua"]), 30);
    assert_eq!(out.status.code(), Some(0), "the run's own exit code");
    assert!(String::from_utf8_lossy(&out.stderr).contains("a finalizer of the runbook did not end"));
    assert_eq!(env.status("last"), "succeeded");
}

#[test]
fn a_gate_caught_by_pcall_still_stops_the_run_before_anything_else_acts() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "gate" }
local ok = pcall(approve, "Rotate the password?")
exec{shell = "echo acted >> ledger"}
step("after", function() exec{shell = "echo step >> ledger"} end)
"#,
    );
    env.run(&["run", "rb.lua"]).assert_code(3);
    assert_eq!(env.read("ledger"), "", "nothing acted before the approval");
    assert_eq!(env.status("last"), "waiting_approval");
}
