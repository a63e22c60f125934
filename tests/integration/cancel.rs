//! Stopping a run on purpose: `runbook cancel` and a declined gate roll back a runbook declared
//! `rollback = "auto"` (unless `--no-rollback`), and `runbook rollback` rolls back on demand.
use crate::harness::Env;
use crate::run::wait_for;

/// A credential rotation in miniature: the first step makes something dangerous that its undo
/// removes; the second waits to be cancelled.
const ROTATION: &str = r#"runbook { name = "rotation", lock = "rotation", rollback = "auto" }
step("temporary superuser", { undo = function() exec{shell = "echo dropped >> ledger"} end }, function()
  exec{shell = "echo made >> ledger"}
end)
step("wait", { undo = function() exec{shell = "echo undo-wait >> ledger"} end }, function()
  exec{shell = "touch waiting; sleep 60"}
end)
"#;

fn lease() -> [(&'static str, &'static str); 1] {
    [("RUNBOOK_LEASE_SECS", "1")]
}

#[test]
fn cancelling_a_live_auto_rollback_run_runs_the_undos_of_its_completed_steps() {
    let env = Env::new();
    env.write("rb.lua", ROTATION);
    let mut cmd = env.cmd(&["run", "rb.lua"]);
    cmd.envs(lease()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    wait_for(|| env.path("waiting").exists());
    let c = env.run_env(&["cancel", "last"], &lease());
    c.assert_code(0);
    assert!(c.stdout.contains("it rolls back"), "{}", c.stdout);
    let out = crate::harness::finish(child, 60);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    // The cut-off step did not complete: only the completed step's undo ran, once.
    assert_eq!(env.read("ledger"), "made\ndropped\n");
    let show = env.show("last");
    assert_eq!(show["status"], "rolled_back");
    assert!(show["error"].as_str().unwrap().contains("cancelled"), "{show}");
    assert_eq!(Env::step(&show, "temporary superuser")["undo_status"], "done");
    // Ended for good: the lock is free.
    env.write("rb.lua", &ROTATION.replace("touch waiting; sleep 60", "true"));
    env.run(&["run", "rb.lua"]).assert_code(0);
}

#[test]
fn cancel_with_no_rollback_stops_the_run_without_its_undos() {
    let env = Env::new();
    env.write("rb.lua", ROTATION);
    let mut cmd = env.cmd(&["run", "rb.lua"]);
    cmd.envs(lease()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let child = cmd.spawn().unwrap();
    wait_for(|| env.path("waiting").exists());
    env.run_env(&["cancel", "last", "--no-rollback"], &lease()).assert_code(0);
    let out = crate::harness::finish(child, 60);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(env.status("last"), "cancelled");
    assert_eq!(env.read("ledger"), "made\n");
}

const GATED: &str = r#"runbook { name = "gated", rollback = "auto" }
step("before", { undo = function() exec{shell = "echo undone >> ledger"} end }, function()
  exec{shell = "echo before >> ledger"}
end)
approve("Promote the new primary?")
step("after", function() exec{shell = "echo after >> ledger"} end)
"#;

#[test]
fn a_declined_gate_rolls_back_an_auto_rollback_run() {
    let env = Env::new();
    env.write("rb.lua", GATED);
    let (code, out) = crate::approval::at_terminal(&env, "n\n");
    assert_eq!(code, 1, "{out}");
    assert_eq!(env.read("ledger"), "before\nundone\n");
    let show = env.show("last");
    assert_eq!(show["status"], "rolled_back");
    assert!(show["error"].as_str().unwrap().contains("approval declined"), "{show}");
    assert_eq!(Env::step(&show, "approve: Promote the new primary?")["status"], "declined");
}

#[test]
fn cancelling_a_run_waiting_for_approval_rolls_it_back_and_frees_its_lock() {
    let env = Env::new();
    env.write("rb.lua", &GATED.replace("rollback = \"auto\"", "rollback = \"auto\", lock = \"gated\""));
    env.run(&["run", "rb.lua"]).assert_code(3);
    let run = env.show("last")["run_id"].as_str().unwrap().to_string();
    let c = env.run(&["cancel", &run]);
    c.assert_code(0);
    assert!(c.stdout.contains("rolling back"), "{}", c.stdout);
    assert_eq!(env.read("ledger"), "before\nundone\n");
    let show = env.show(&run);
    assert_eq!(show["status"], "rolled_back");
    assert!(show["error"].as_str().unwrap().contains("cancelled by"), "{show}");
    // Again: it already ended.
    env.run(&["cancel", &run]).assert_code(2);
    env.run(&["run", "rb.lua", "--yes"]).assert_code(0);
    // --no-rollback closes a stopped run without its undos.
    env.run(&["run", "rb.lua"]).assert_code(3);
    env.run(&["cancel", "last", "--no-rollback"]).assert_code(0);
    assert_eq!(env.status("last"), "cancelled");
    assert_eq!(env.read("ledger"), "before\nundone\nbefore\nafter\nbefore\n");
}

#[test]
fn rollback_undoes_a_failed_or_cancelled_run_on_demand_once() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "manual" }
step("one", { undo = function() exec{shell = "echo undo-one >> ledger"} end }, function() exec{shell = "echo one >> ledger"} end)
step("two", { undo = function() exec{shell = "echo undo-two >> ledger"} end }, function() exec{shell = "echo two >> ledger"} end)
step("three", function() exec{"false"} end)
"#,
    );
    env.run(&["run", "rb.lua"]).assert_code(1);
    assert_eq!(env.status("last"), "failed", "rollback = manual: nothing undone by itself");
    let r = env.run(&["rollback", "last"]);
    r.assert_code(0);
    assert_eq!(env.read("ledger"), "one\ntwo\nundo-two\nundo-one\n");
    let show = env.show("last");
    assert_eq!(show["status"], "rolled_back");
    assert_eq!(Env::step(&show, "one")["undo_status"], "done");
    assert_eq!(Env::step(&show, "two")["undo_status"], "done");
    // Done once: a second rollback is refused, and a succeeded run is not rolled back.
    env.run(&["rollback", "last"]).assert_code(2);
    assert_eq!(env.read("ledger"), "one\ntwo\nundo-two\nundo-one\n");

    // A run cancelled without its undos can still be rolled back later.
    env.write("rb2.lua", GATED);
    env.run(&["run", "rb2.lua"]).assert_code(3);
    env.run(&["cancel", "last", "--no-rollback"]).assert_code(0);
    env.run(&["rollback", "last"]).assert_code(0);
    assert!(env.read("ledger").ends_with("before\nundone\n"), "{}", env.read("ledger"));
}

#[test]
fn rollback_refuses_a_run_that_is_running_now() {
    let env = Env::new();
    env.write("rb.lua", ROTATION);
    let child = env.spawn(&["run", "rb.lua"]);
    wait_for(|| env.path("waiting").exists());
    let r = env.run(&["rollback", "last"]);
    r.assert_code(2);
    assert!(r.stderr.contains("is running now"), "{}", r.stderr);
    assert_eq!(env.read("ledger"), "made\n", "no undo ran beside the live run");
    crate::harness::signal(child.id(), 9);
    let _ = crate::harness::finish(child, 30);
}
