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
