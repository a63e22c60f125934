//! `lock = "name"`: one run at a time; a dead holder's lock is taken over.
use crate::harness::{signal, Env};
use crate::run::wait_for;

const LOCKED: &str = r#"runbook { name = "locked", lock = "db-maintenance" }
step("hold", function() exec{"touch", "holding"}; exec{shell = "test -f release || sleep 30"} end)
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
