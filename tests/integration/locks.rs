//! `lock = "name"`: one run at a time; a dead holder's lock is taken over.
use crate::harness::{signal, Env};
use crate::run::wait_for;

const LOCKED: &str = r#"runbook { name = "locked", lock = "db-maintenance" }
step("hold", function() exec{"touch", "holding"}; exec{shell = "for i in $(seq 300); do test -f release && break; sleep 0.1; done"} end)
"#;

#[test]
fn a_second_run_is_refused_with_the_holder_then_takes_over_from_a_dead_one() {
    let env = Env::new();
    env.write("rb.lua", LOCKED);
    let first = env.spawn(&["run", "rb.lua"]);
    wait_for(|| env.path("holding").exists());
    let holder = env.show("last");
    let second = env.run(&["run", "rb.lua"]);
    second.assert_code(4);
    assert!(second.stderr.contains("lock 'db-maintenance' is held by run"), "{}", second.stderr);
    assert!(second.stderr.contains(holder["run_id"].as_str().unwrap()), "{}", second.stderr);
    assert!(second.stderr.contains(&format!("pid {}", first.id())), "{}", second.stderr);

    signal(first.id(), 9);
    let _ = crate::harness::finish(first, 60);
    env.write("release", "");
    let third = env.run(&["run", "rb.lua"]);
    third.assert_code(0);
    assert!(third.stdout.contains("took over lock 'db-maintenance'"), "{}", third.stdout);
    // The lock is released at the end: a fourth run goes straight through.
    let fourth = env.run(&["run", "rb.lua"]);
    fourth.assert_code(0);
    assert!(!fourth.stdout.contains("took over"));
}

#[test]
fn two_runs_started_together_never_both_hold_the_lock() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "race", lock = "one-at-a-time" }
step("critical", function() exec{shell = "echo in >> ledger; sleep 0.3; echo out >> ledger"} end)
"#,
    );
    for _ in 0..5 {
        let a = env.spawn(&["run", "rb.lua"]);
        let b = env.spawn(&["run", "rb.lua"]);
        let ca = crate::harness::finish(a, 60).status.code();
        let cb = crate::harness::finish(b, 60).status.code();
        let mut codes = [ca, cb];
        codes.sort();
        assert!(codes == [Some(0), Some(4)] || codes == [Some(0), Some(0)], "{codes:?}");
    }
    // Every critical section is whole: never two "in" in a row.
    let ledger = env.read("ledger");
    let lines: Vec<&str> = ledger.lines().collect();
    for pair in lines.chunks(2) {
        assert_eq!(pair, ["in", "out"], "{ledger}");
    }
}

#[test]
fn lock_wait_queues_a_second_run_behind_the_first_and_gives_up_after_its_time() {
    let env = Env::new();
    env.write("rb.lua", LOCKED);
    let first = env.spawn(&["run", "rb.lua"]);
    wait_for(|| env.path("holding").exists());
    // Too short a wait: refused as without it, after trying.
    let impatient = env.run(&["run", "rb.lua", "--lock-wait", "300ms"]);
    impatient.assert_code(4);
    assert!(
        impatient.stdout.contains("lock 'db-maintenance' is held by run") && impatient.stdout.contains("waiting up to"),
        "{}",
        impatient.stdout
    );
    // A patient one waits for the holder to finish, then runs.
    let patient = env.spawn(&["run", "rb.lua", "--lock-wait", "60s"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    env.write("release", "");
    let first = crate::harness::finish(first, 60);
    assert_eq!(first.status.code(), Some(0));
    let patient = crate::harness::finish(patient, 90);
    assert_eq!(patient.status.code(), Some(0), "{}", String::from_utf8_lossy(&patient.stdout));
    assert!(String::from_utf8_lossy(&patient.stdout).contains("waiting up to"), "it did wait");
    let bad = env.run(&["run", "rb.lua", "--lock-wait", "soon"]);
    bad.assert_code(2);
    assert!(bad.stderr.contains("invalid duration 'soon'"), "{}", bad.stderr);
}
