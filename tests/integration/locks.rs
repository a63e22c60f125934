//! `lock = "name"`: one run at a time. A run keeps its lock until it ends for good, also at a gate,
//! failed or killed (it can be resumed); `runbook unlock` releases one by hand.
use crate::harness::{signal, Env};
use crate::run::wait_for;

const LOCKED: &str = r#"runbook { name = "locked", lock = "db-maintenance" }
step("hold", function() exec{"touch", "holding"}; exec{shell = "for i in $(seq 300); do test -f release && break; sleep 0.1; done"} end)
"#;

#[test]
fn a_second_run_is_refused_while_the_holder_runs_and_while_its_killed_run_can_be_resumed() {
    let env = Env::new();
    env.write("rb.lua", LOCKED);
    let first = env.spawn(&["run", "rb.lua"]);
    wait_for(|| env.path("holding").exists());
    let holder = env.show("last");
    let holder_id = holder["run_id"].as_str().unwrap().to_string();
    let second = env.run(&["run", "rb.lua"]);
    second.assert_code(4);
    assert!(second.stderr.contains("lock 'db-maintenance' is held by run"), "{}", second.stderr);
    assert!(second.stderr.contains(&holder_id), "{}", second.stderr);
    assert!(second.stderr.contains(&format!("running, pid {}", first.id())), "{}", second.stderr);

    // Its process died, but the run is resumable: the lock is still the run's.
    signal(first.id(), 9);
    let _ = crate::harness::finish(first, 60);
    env.write("release", "");
    let third = env.run(&["run", "rb.lua"]);
    third.assert_code(4);
    assert!(third.stderr.contains(&format!("held by run {holder_id} (interrupted")), "{}", third.stderr);
    assert!(third.stderr.contains(&format!("runbook cancel {holder_id}")), "{}", third.stderr);
    // The run itself takes its lock back when resumed, and releases it when it ends.
    env.run(&["resume", &holder_id]).assert_code(0);
    let fourth = env.run(&["run", "rb.lua"]);
    fourth.assert_code(0);
    assert!(!fourth.stdout.contains("took over"), "{}", fourth.stdout);
}

const GATED_LOCK: &str = r#"runbook { name = "rotate", lock = "rotate-app-role" }
step("temporary superuser", function() exec{shell = "echo made >> ledger"} end)
approve("Rotate the password now?")
step("rotate", function() exec{shell = "echo rotated >> ledger"} end)
"#;

#[test]
fn a_run_waiting_at_a_gate_keeps_its_lock_until_it_is_cancelled() {
    let env = Env::new();
    env.write("rb.lua", GATED_LOCK);
    env.run(&["run", "rb.lua"]).assert_code(3);
    let waiting = env.show("last")["run_id"].as_str().unwrap().to_string();
    let second = env.run(&["run", "rb.lua"]);
    second.assert_code(4);
    assert!(second.stderr.contains(&format!("held by run {waiting} (waiting_approval")), "{}", second.stderr);
    assert_eq!(env.read("ledger"), "made\n", "the second run did nothing");
    env.run(&["cancel", &waiting]).assert_code(0);
    assert_eq!(env.status(&waiting), "cancelled");
    // Cancelled: the lock is free.
    env.run(&["run", "rb.lua", "--yes"]).assert_code(0);
    assert_eq!(env.read("ledger"), "made\nmade\nrotated\n");
}

#[test]
fn a_failed_run_keeps_its_lock_until_resumed_to_its_end() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "flaky", lock = "flaky" }
step("work", function() exec{"test", "-f", "fixed"} end)
"#,
    );
    env.run(&["run", "rb.lua"]).assert_code(1);
    let failed = env.show("last")["run_id"].as_str().unwrap().to_string();
    let second = env.run(&["run", "rb.lua"]);
    second.assert_code(4);
    assert!(second.stderr.contains(&format!("held by run {failed} (failed")), "{}", second.stderr);
    env.write("fixed", "");
    env.run(&["resume", &failed]).assert_code(0);
    env.run(&["run", "rb.lua"]).assert_code(0);
}

#[test]
fn unlock_releases_a_stopped_runs_lock_by_hand_and_journals_who_did() {
    let env = Env::new();
    env.write("rb.lua", GATED_LOCK);
    env.run(&["run", "rb.lua"]).assert_code(3);
    let waiting = env.show("last")["run_id"].as_str().unwrap().to_string();
    let unlocked = env.run(&["unlock", "rotate-app-role"]);
    unlocked.assert_code(0);
    assert!(unlocked.stdout.contains(&format!("held by run {waiting} (waiting_approval)")), "{}", unlocked.stdout);
    let events = env.run(&["show", &waiting, "--events", "--output", "json"]);
    assert!(events.stdout.contains("lock_released") && events.stdout.contains("runbook unlock"), "{}", events.stdout);
    // Another run takes the lock; the unlocked run cannot continue beside it.
    env.write("rb2.lua", &GATED_LOCK.replace("name = \"rotate\"", "name = \"rotate2\""));
    env.run(&["run", "rb2.lua"]).assert_code(3);
    env.run(&["approve", &waiting]).assert_code(0);
    let resumed = env.run(&["resume", &waiting]);
    assert_eq!(resumed.code, 4, "{}", resumed.all());
    assert_eq!(env.read("ledger"), "made\nmade\n");
    // Nothing to unlock, and a live holder, are refused.
    env.run(&["unlock", "no-such-lock"]).assert_code(2);
    env.write("live.lua", LOCKED);
    let live = env.spawn(&["run", "live.lua"]);
    wait_for(|| env.path("holding").exists());
    let refused = env.run(&["unlock", "db-maintenance"]);
    refused.assert_code(2);
    assert!(refused.stderr.contains("runbook cancel"), "{}", refused.stderr);
    env.write("release", "");
    assert_eq!(crate::harness::finish(live, 60).status.code(), Some(0));
}

#[test]
fn a_lock_left_behind_by_a_run_that_ended_or_was_never_recorded_is_free() {
    let env = Env::new();
    env.write("rb.lua", LOCKED);
    env.write("release", "");
    env.run(&["run", "rb.lua"]).assert_code(0);
    let ended = env.show("last")["run_id"].as_str().unwrap().to_string();
    // As if killed between recording the end and releasing the lock; then a run never recorded
    // whose process (on another host, its heartbeat long stale) is gone.
    for holder in [ended.as_str(), "20990101-000000-deadbeef"] {
        let db = env.journal_path();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
            sqlx::query("INSERT INTO locks (name, run_id, host, pid, pid_start, acquired_at, heartbeat_at, lease_secs) VALUES ('db-maintenance', $1, 'elsewhere', 1, NULL, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', 30)")
                .bind(holder)
                .execute(&mut conn)
                .await
                .unwrap();
        });
        let r = env.run(&["run", "rb.lua"]);
        r.assert_code(0);
        assert!(r.stdout.contains(&format!("took over lock 'db-maintenance' from run {holder}")), "{}", r.stdout);
    }
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
