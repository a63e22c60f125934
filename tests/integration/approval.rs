//! Approval gates in their three modes: no terminal (wait), --yes, and a person at a terminal.
use crate::harness::{Env, BIN};

const GATED: &str = r#"runbook { name = "gated" }
step("before", function() exec{shell = "echo before >> ledger"} end)
approve("Drop the old tables?")
step("after", function() exec{shell = "echo after >> ledger"} end)
"#;

#[test]
fn without_a_terminal_the_run_waits_until_approved_then_resumes() {
    let env = Env::new();
    env.write("rb.lua", GATED);
    let r = env.run(&["run", "rb.lua"]);
    r.assert_code(3);
    assert!(r.stdout.contains("approval needed: Drop the old tables?"), "{}", r.stdout);
    assert_eq!(env.status("last"), "waiting_approval");
    // Resuming without approval waits again, and does not repeat the first step.
    env.run(&["resume", "last"]).assert_code(3);
    let a = env.run(&["approve", "last"]);
    a.assert_code(0);
    assert!(a.stdout.contains("runbook resume"), "{}", a.stdout);
    env.run(&["resume", "last"]).assert_code(0);
    assert_eq!(env.read("ledger"), "before\nafter\n");
    let show = env.show("last");
    let gate = Env::step(&show, "approve: Drop the old tables?");
    assert_eq!(gate["status"], "approved");
    assert!(gate["actor"].as_str().is_some_and(|a| !a.is_empty()));
    // Approving a run that is not waiting is refused.
    env.run(&["approve", "last"]).assert_code(2);
}

#[test]
fn yes_passes_every_gate_and_records_it() {
    let env = Env::new();
    env.write("rb.lua", GATED);
    env.run(&["run", "rb.lua", "--yes"]).assert_code(0);
    let show = env.show("last");
    assert!(Env::step(&show, "approve: Drop the old tables?")["actor"].as_str().unwrap().contains("--yes"));
    assert_eq!(env.read("ledger"), "before\nafter\n");
}

/// Runs the binary under a pseudo-terminal (util-linux `script`), answering the prompt.
pub(crate) fn at_terminal(env: &Env, answer: &str) -> (i32, String) {
    let cmd = format!("{BIN} run rb.lua");
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(env.dir.path())
        .env("RUNBOOK_NO_PROGRESS", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux `script` is needed for the terminal tests: apt-get install bsdutils");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        crate::run::wait_for(|| env.read("ledger").contains("before"));
        std::thread::sleep(std::time::Duration::from_millis(200));
        stdin.write_all(answer.as_bytes()).unwrap();
    }
    let out = crate::harness::finish(child, 60);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn at_a_terminal_the_gate_asks_and_a_no_cancels() {
    let env = Env::new();
    env.write("rb.lua", GATED);
    let (code, out) = at_terminal(&env, "y\n");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Drop the old tables? [y/N]"), "{out}");
    assert_eq!(env.read("ledger"), "before\nafter\n");

    let env = Env::new();
    env.write("rb.lua", GATED);
    let (code, out) = at_terminal(&env, "n\n");
    assert_eq!(code, 1, "{out}");
    assert_eq!(env.status("last"), "cancelled");
    assert_eq!(env.read("ledger"), "before\n");
    assert_eq!(Env::step(&env.show("last"), "approve: Drop the old tables?")["status"], "declined");
}

const POLICY_CONFIG: &str = r#"
[serve.users.bob]
groups = ["dba"]
[serve.users.carol]
groups = ["dba"]
[serve.users.dave]
groups = ["web"]
"#;

fn policy_runbook(policy: &str) -> String {
    format!(
        r#"runbook {{ name = "gated" }}
step("before", function() exec{{shell = "echo before >> ledger"}} end)
approve("Drop the old tables?", {policy})
step("after", function() exec{{shell = "echo after >> ledger"}} end)
"#
    )
}

fn as_user(env: &Env, who: &str, args: &[&str]) -> crate::harness::Run {
    env.run_env(args, &[("USER", who), ("LOGNAME", who)])
}

#[test]
fn a_policy_refuses_the_requester_and_outsiders_and_waits_for_a_quorum_then_a_worker_resumes_the_run() {
    let env = Env::new();
    env.write("runbook.toml", POLICY_CONFIG);
    env.write("rb.lua", &policy_runbook(r#"{ approvers = { "group:dba" }, quorum = 2 }"#));
    // --yes is the requester's own approval: not enough for this gate.
    let r = as_user(&env, "alice", &["run", "rb.lua", "--yes"]);
    r.assert_code(3);
    assert!(r.stdout.contains("(group:dba; 2 approvals; not the requester)"), "{}", r.stdout);
    // A run alice started herself is hers to resume once approved; one she enqueued, a
    // worker's. This one goes through the queue.
    as_user(&env, "alice", &["cancel", "last"]).assert_code(0);
    std::fs::remove_file(env.path("ledger")).unwrap();
    as_user(&env, "alice", &["enqueue", "rb.lua"]).assert_code(0);
    env.run(&["worker", "--until-empty"]).assert_code(0);
    assert_eq!(env.status("last"), "waiting_approval");
    let refused = as_user(&env, "alice", &["approve", "last"]);
    refused.assert_code(5);
    assert!(refused.stderr.contains("alice started this run and cannot approve it"), "{}", refused.stderr);
    let outsider = as_user(&env, "dave", &["approve", "last"]);
    outsider.assert_code(5);
    assert!(outsider.stderr.contains("not among the gate's approvers (group:dba)"), "{}", outsider.stderr);

    let first = as_user(&env, "bob", &["approve", "last", "--comment", "plan looks right"]);
    first.assert_code(0);
    assert!(first.stdout.contains("1 of 2; waiting for more"), "{}", first.stdout);
    assert_eq!(env.status("last"), "waiting_approval");
    let twice = as_user(&env, "bob", &["approve", "last"]);
    twice.assert_code(2);
    assert!(twice.stderr.contains("bob already decided at this gate"), "{}", twice.stderr);

    let second = as_user(&env, "carol", &["approve", "last"]);
    second.assert_code(0);
    assert!(second.stdout.contains("approved: Drop the old tables? (run"), "{}", second.stdout);
    assert!(second.stdout.contains("by bob, carol"), "{}", second.stdout);
    assert_eq!(env.read("ledger"), "before\n");

    assert!(second.stdout.contains("a worker resumes it"), "{}", second.stdout);
    // Nobody types `runbook resume`: a worker takes the approved run and finishes it.
    env.run(&["worker", "--until-empty"]).assert_code(0);
    assert_eq!(env.status("last"), "succeeded");
    assert_eq!(env.read("ledger"), "before\nafter\n");
    let show = env.show("last");
    let gate = Env::step(&show, "approve: Drop the old tables?");
    assert_eq!(gate["status"], "approved");
    assert_eq!(gate["actor"], "bob, carol");
    let votes = gate["votes"].as_array().unwrap();
    assert_eq!(votes.len(), 2, "{gate}");
    assert_eq!(votes[0]["actor"], "bob");
    assert_eq!(votes[0]["via"], "cli");
    assert_eq!(votes[0]["comment"], "plan looks right");
    let text = env.run(&["show", "last"]);
    assert!(text.stdout.contains("- approve bob (cli,"), "{}", text.stdout);
}

#[test]
fn a_rejection_needs_a_reason_and_cancels_the_run() {
    let env = Env::new();
    env.write("runbook.toml", POLICY_CONFIG);
    env.write("rb.lua", &policy_runbook(r#"{ approvers = { "bob" } }"#));
    as_user(&env, "alice", &["run", "rb.lua"]).assert_code(3);
    as_user(&env, "bob", &["approve", "last", "--reject"]).assert_code(2);
    let r = as_user(&env, "bob", &["approve", "last", "--reject", "--comment", "not during the sale"]);
    r.assert_code(0);
    assert!(r.stdout.contains("the run is cancelled"), "{}", r.stdout);
    let show = env.show("last");
    assert_eq!(show["status"], "cancelled");
    assert!(show["error"].as_str().unwrap().contains("approval rejected by bob: not during the sale"), "{show}");
    assert_eq!(Env::step(&show, "approve: Drop the old tables?")["status"], "declined");
    // Nothing after the gate ran, and nothing can approve it any more.
    assert_eq!(env.read("ledger"), "before\n");
    as_user(&env, "carol", &["approve", "last"]).assert_code(2);
}

#[test]
fn a_gate_whose_time_ran_out_is_ended_by_a_worker_as_its_policy_says() {
    for (on_timeout, status) in [("cancel", "cancelled"), ("fail", "failed")] {
        let env = Env::new();
        env.write(
            "rb.lua",
            &policy_runbook(&format!(r#"{{ timeout = "1s", on_timeout = "{on_timeout}", self_approval = true }}"#)),
        );
        env.run(&["run", "rb.lua"]).assert_code(3);
        std::thread::sleep(std::time::Duration::from_millis(1300));
        let late = env.run(&["approve", "last"]);
        late.assert_code(2);
        assert!(late.stderr.contains("time ran out"), "{}", late.stderr);
        env.run(&["worker", "--until-empty"]).assert_code(0);
        let show = env.show("last");
        assert_eq!(show["status"], status, "{show}");
        assert!(show["error"].as_str().unwrap().contains("approval timed out after 1s"), "{show}");
        assert_eq!(env.read("ledger"), "before\n");
    }
}

#[test]
fn a_policy_with_a_mistake_is_refused_before_anything_runs_with_its_line() {
    let env = Env::new();
    for (policy, says) in [
        (r#"{ quorum = 0 }"#, "quorum must be at least 1"),
        (r#"{ approvers = { "bob" }, quorum = 2 }"#, "cannot be met by the 1 approver(s) named"),
        (r#"{ aprovers = { "bob" } }"#, "unknown key `aprovers`"),
        (r#"{ timeout = "soon" }"#, "timeout"),
        (r#"{ on_timeout = "explode" }"#, "on_timeout"),
    ] {
        env.write("rb.lua", &policy_runbook(policy));
        let r = env.run(&["check", "rb.lua"]);
        r.assert_code(2);
        assert!(r.stderr.contains("rb.lua:3:") && r.stderr.contains(says), "{policy}: {}", r.stderr);
    }
}

#[test]
fn votes_of_a_round_that_timed_out_no_longer_count_when_the_gate_meets_again() {
    let env = Env::new();
    env.write("runbook.toml", POLICY_CONFIG);
    env.write(
        "rb.lua",
        &policy_runbook(r#"{ approvers = { "group:dba" }, quorum = 2, timeout = "2s", on_timeout = "fail" }"#),
    );
    as_user(&env, "alice", &["run", "rb.lua"]).assert_code(3);
    as_user(&env, "bob", &["approve", "last"]).assert_code(0);
    std::thread::sleep(std::time::Duration::from_millis(2300));
    env.run(&["worker", "--until-empty"]).assert_code(0);
    assert_eq!(env.status("last"), "failed");
    // Resumed, the gate waits again: bob's vote of the first round is kept, marked, not counted.
    as_user(&env, "alice", &["resume", "last"]).assert_code(3);
    let carol = as_user(&env, "carol", &["approve", "last"]);
    carol.assert_code(0);
    assert!(carol.stdout.contains("1 of 2"), "{}", carol.stdout);
    let gate = Env::step(&env.show("last"), "approve: Drop the old tables?").clone();
    assert!(
        gate["votes"].as_array().unwrap().iter().any(|v| v["actor"] == "bob" && v["decision"] == "expired:approve"),
        "{gate}"
    );
    // bob decides again in this round, and the quorum is met by this round's votes.
    let bob = as_user(&env, "bob", &["approve", "last"]);
    bob.assert_code(0);
    assert!(bob.stdout.contains("approved"), "{}", bob.stdout);
    as_user(&env, "alice", &["resume", "last"]).assert_code(0);
    assert_eq!(env.read("ledger"), "before\nafter\n");
}
