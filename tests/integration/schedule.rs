//! The shared PostgreSQL journal, the queue and its workers, and the built-in scheduler:
//! exactly-once fires across schedulers, takeover of a dead scheduler's run, graceful shutdown,
//! overlap and catch-up, and a lock that holds across machines.
use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{self, Env};
use crate::servers;

/// A process of `runbook` with the given journal and host name; output goes to a log file (a
/// pipe nobody reads would fill up during a long run).
fn spawn(env: &Env, args: &[&str], state: &str, host: &str, log: &str) -> Child {
    let log = std::fs::File::create(env.path(log)).unwrap();
    env.cmd(args)
        .env("RUNBOOK_STATE", state)
        .env("RUNBOOK_HOSTNAME", host)
        .env("RUNBOOK_LEASE_SECS", "3")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn runbook")
}

fn run_with(env: &Env, args: &[&str], state: &str, host: &str) -> harness::Run {
    env.run_env(args, &[("RUNBOOK_STATE", state), ("RUNBOOK_HOSTNAME", host), ("RUNBOOK_LEASE_SECS", "3")])
}

/// Stops a process with SIGTERM and waits for it (failing after `secs`).
fn terminate(child: Child, secs: u64) -> std::process::Output {
    harness::signal(child.id(), 15);
    harness::finish(child, secs)
}

/// Polls until `f` returns Some, or fails after `secs` with `what`.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ledger(env: &Env) -> Vec<String> {
    env.read("ledger").lines().map(str::to_string).collect()
}

#[test]
fn the_postgres_journal_serves_every_command() {
    let pg = servers::postgres();
    let url = pg.fresh_database("journal");
    let env = Env::new();
    env.write(
        "deploy.lua",
        r#"runbook { name = "deploy", params = { version = { type = "string", required = true } } }
step("backup", function() exec{shell = "echo backup >> ledger"}; return "dump-1" end)
step("migrate", function()
  if env("BREAK") == "1" then fail("migration 42 failed") end
  exec{shell = "echo migrate " .. params.version .. " >> ledger"}
end)
approve("switch traffic?")
step("switch", function() exec{shell = "echo switch >> ledger"} end)
"#,
    );
    let broke =
        env.run_env(&["run", "deploy.lua", "-p", "version=1.4.2"], &[("RUNBOOK_STATE", url.as_str()), ("BREAK", "1")]);
    broke.assert_code(1);
    assert!(broke.all().contains("migration 42 failed"), "{}", broke.all());
    let history = run_with(&env, &["history", "--output", "json"], &url, "alpha");
    history.assert_code(0);
    let runs: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    assert_eq!(runs[0]["runbook"], "deploy");
    assert_eq!(runs[0]["status"], "failed");
    let show = run_with(&env, &["show", "last", "--output", "json"], &url, "alpha");
    let show: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(Env::step(&show, "backup")["status"], "succeeded");
    assert_eq!(Env::step(&show, "backup")["result"], "dump-1");
    assert_eq!(Env::step(&show, "migrate")["status"], "failed");

    // Resumed from the failed step: the backup is not taken again; the gate stops it (no
    // terminal), approve and resume finish it.
    run_with(&env, &["resume", "last"], &url, "alpha").assert_code(3);
    run_with(&env, &["approve", "last"], &url, "alpha").assert_code(0);
    run_with(&env, &["resume", "last"], &url, "alpha").assert_code(0);
    assert_eq!(ledger(&env), ["backup", "migrate 1.4.2", "switch"]);

    // Queued, listed, cancelled: all in PostgreSQL.
    let queued = run_with(&env, &["enqueue", "deploy.lua", "-p", "version=2.0"], &url, "alpha");
    queued.assert_code(0);
    let id = queued.stdout.trim().to_string();
    assert_eq!(pg.query(&url, &format!("SELECT status FROM runs WHERE id = '{id}'")), "queued");
    run_with(&env, &["cancel", &id], &url, "alpha").assert_code(0);
    assert_eq!(pg.query(&url, &format!("SELECT status FROM runs WHERE id = '{id}'")), "cancelled");

    // The journal's password is never shown, not even when it cannot be reached.
    let bad = url.replace(&pg.port.to_string(), &servers::free_port().to_string());
    let out = run_with(&env, &["history"], &bad, "alpha");
    out.assert_code(2);
    assert!(!out.all().contains(pg.password), "{}", out.all());
    assert!(out.all().contains("postgres://runbook@127.0.0.1"), "{}", out.all());
}

#[test]
fn a_lock_held_on_one_machine_holds_against_another_until_its_run_ends_even_when_its_holder_died() {
    let pg = servers::postgres();
    let url = pg.fresh_database("locks");
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "reindex", lock = "db-maintenance" }
step("work", function() exec{shell = "echo start >> ledger; sleep 30"} end)
"#,
    );
    let alpha = spawn(&env, &["run", "rb.lua"], &url, "alpha", "alpha.log");
    wait_for(30, "alpha to start", || ledger(&env).contains(&"start".to_string()).then_some(()));
    let beta = run_with(&env, &["run", "rb.lua"], &url, "beta");
    beta.assert_code(4);
    assert!(
        beta.all().contains("(running, pid") && beta.all().contains("on alpha)"),
        "names the holder: {}",
        beta.all()
    );
    let alpha_run = pg.query(&url, "SELECT id FROM runs WHERE host = 'alpha'");

    // The holder dies without a word: once its lease (3 s here) runs out it is interrupted, and
    // its run (resumable) still holds the lock.
    harness::signal(alpha.id(), 9);
    harness::finish(alpha, 10);
    env.write(
        "rb.lua",
        "runbook { name = \"reindex\", lock = \"db-maintenance\" }\nstep(\"work\", function() return 1 end)\n",
    );
    wait_for(30, "alpha's run to be seen interrupted", || {
        let r = run_with(&env, &["run", "rb.lua"], &url, "beta");
        assert_eq!(r.code, 4, "{}", r.all());
        r.all().contains(&format!("held by run {alpha_run} (interrupted")).then_some(())
    });
    // Someone decides it will not continue: cancelled, its lock is free.
    run_with(&env, &["cancel", &alpha_run], &url, "beta").assert_code(0);
    let beta = run_with(&env, &["run", "rb.lua"], &url, "beta");
    beta.assert_code(0);
}

const TICK: &str = r#"runbook { name = "tick" }
step("record", function() exec{shell = "echo " .. current_run().id .. " >> ledger"} end)
"#;

#[test]
fn three_schedulers_fire_each_second_exactly_once_for_a_minute() {
    let pg = servers::postgres();
    let url = pg.fresh_database("sched3");
    let env = Env::new();
    env.write("tick.lua", TICK);
    env.write(
        "runbook.toml",
        "[[schedule]]\nname = \"tick\"\nrunbook = \"tick.lua\"\ncron = \"* * * * * *\"\noverlap = \"queue\"\n",
    );
    let schedulers: Vec<Child> = ["a", "b", "c"]
        .iter()
        .map(|h| spawn(&env, &["schedule"], &url, &format!("host-{h}"), &format!("{h}.log")))
        .collect();
    std::thread::sleep(Duration::from_secs(60));
    for s in schedulers {
        let out = terminate(s, 30);
        assert!(out.status.success(), "scheduler exits cleanly on SIGTERM: {:?}", out.status);
    }
    // One row per second, no gap, no twin (the key is (schedule, fire_at)).
    let fires = pg.query(&url, "SELECT fire_at FROM schedule_fires WHERE schedule = 'tick' ORDER BY fire_at");
    let times: Vec<chrono::DateTime<chrono::Utc>> =
        fires.lines().map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap().into()).collect();
    assert!(times.len() >= 55, "about 60 fires in 60 s: {}", times.len());
    for pair in times.windows(2) {
        assert_eq!((pair[1] - pair[0]).num_milliseconds(), 1000, "no second lost or fired twice: {pair:?}");
    }
    let outcomes = pg.query(&url, "SELECT DISTINCT outcome FROM schedule_fires");
    assert_eq!(outcomes, "queued");
    // Every fire has its own run; each run that ran did its side effect exactly once.
    let runs = pg.query(&url, "SELECT id || ' ' || status FROM runs WHERE queue_key = 'schedule:tick' ORDER BY id");
    let runs: BTreeMap<String, String> =
        runs.lines().map(|l| l.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).unwrap()).collect();
    assert_eq!(runs.len(), times.len(), "one run per fire");
    let linked = pg.query(&url, "SELECT count(DISTINCT run_id) FROM schedule_fires WHERE schedule = 'tick'");
    assert_eq!(linked, runs.len().to_string());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for id in ledger(&env) {
        *seen.entry(id).or_default() += 1;
    }
    for (id, status) in &runs {
        match status.as_str() {
            "succeeded" => assert_eq!(seen.get(id), Some(&1), "run {id} did its work once"),
            // A fire of the last instant, still waiting when the schedulers stopped, or stopped
            // by the shutdown before its step began.
            "queued" | "interrupted" => assert_eq!(seen.get(id), None),
            other => panic!("run {id} ended {other}"),
        }
    }
    assert!(runs.values().filter(|s| *s == "succeeded").count() >= 50);
    assert_eq!(seen.len(), runs.values().filter(|s| *s == "succeeded").count(), "no side effect without its run");
}

const SLOW: &str = r#"runbook { name = "slow" }
local id = current_run().id
step("a", function() exec{shell = "echo a " .. id .. " >> ledger"} end)
step("b", function() exec{shell = "echo b-start " .. id .. " >> ledger; sleep 3; echo b-end " .. id .. " >> ledger"} end)
step("c", function() exec{shell = "echo c " .. id .. " >> ledger"} end)
"#;

fn lines_of(env: &Env, id: &str) -> Vec<String> {
    ledger(env).into_iter().filter(|l| l.ends_with(id)).map(|l| l.split(' ').next().unwrap().to_string()).collect()
}

#[test]
fn a_run_whose_scheduler_was_killed_is_resumed_by_another_after_its_lease() {
    let pg = servers::postgres();
    let url = pg.fresh_database("takeover");
    let env = Env::new();
    env.write("slow.lua", SLOW);
    env.write(
        "runbook.toml",
        "[[schedule]]\nname = \"slow\"\nrunbook = \"slow.lua\"\ncron = \"* * * * * *\"\noverlap = \"skip\"\n",
    );
    let mut procs: HashMap<String, Child> = HashMap::new();
    for h in ["alpha", "beta"] {
        procs.insert(h.to_string(), spawn(&env, &["schedule"], &url, h, &format!("{h}.log")));
    }
    let (id, host) = wait_for(30, "a run in step b", || {
        let line = ledger(&env).into_iter().find(|l| l.starts_with("b-start"))?;
        let id = line.split(' ').nth(1)?.to_string();
        let host = pg.query(&url, &format!("SELECT host FROM runs WHERE id = '{id}'"));
        Some((id, host))
    });
    let victim = procs.remove(&host).expect("the owner is one of the schedulers");
    harness::signal(victim.id(), 9);
    harness::finish(victim, 10);
    let survivor = if host == "alpha" { "beta" } else { "alpha" };
    wait_for(40, "the run to be resumed and finish", || {
        (pg.query(&url, &format!("SELECT status FROM runs WHERE id = '{id}'")) == "succeeded").then_some(())
    });
    assert_eq!(pg.query(&url, &format!("SELECT host FROM runs WHERE id = '{id}'")), survivor);
    let resumed =
        pg.query(&url, &format!("SELECT count(*) FROM events WHERE run_id = '{id}' AND event = 'run_resumed'"));
    assert_eq!(resumed, "1");
    // Step a ran once; b was cut off and ran again (at least once); c ran once, after b ended.
    let lines = lines_of(&env, &id);
    assert_eq!(lines, ["a", "b-start", "b-start", "b-end", "c"], "{lines:?}");
    // While the dead scheduler's run was pending, the other did not start another one.
    let overlapping = pg.query(
        &url,
        &format!("SELECT count(*) FROM runs WHERE queue_key = 'schedule:slow' AND id > '{id}' AND started_at < (SELECT finished_at FROM runs WHERE id = '{id}') AND status <> 'queued'"),
    );
    assert_eq!(overlapping, "0");
    for (_, p) in procs {
        terminate(p, 30);
    }
}

#[test]
fn sigterm_lets_the_running_step_finish_and_a_restarted_scheduler_resumes_the_run() {
    let env = Env::new();
    let state = env.path("state.db").display().to_string();
    env.write("slow.lua", SLOW);
    env.write("runbook.toml", "[[schedule]]\nname = \"slow\"\nrunbook = \"slow.lua\"\ncron = \"* * * * * *\"\n");
    let first = spawn(&env, &["schedule"], &state, "box", "first.log");
    let id = wait_for(30, "a run in step b", || {
        ledger(&env).into_iter().find(|l| l.starts_with("b-start")).map(|l| l.split(' ').nth(1).unwrap().to_string())
    });
    let out = terminate(first, 30);
    assert!(out.status.success());
    assert_eq!(lines_of(&env, &id), ["a", "b-start", "b-end"], "b finished, c did not start");
    let show = env.run_env(&["show", &id, "--output", "json"], &[("RUNBOOK_STATE", &state)]);
    let show: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(show["status"], "interrupted");
    assert_eq!(Env::step(&show, "b")["status"], "succeeded");

    let second = spawn(&env, &["schedule"], &state, "box", "second.log");
    wait_for(30, "the interrupted run to finish", || (lines_of(&env, &id).len() == 4).then_some(()));
    terminate(second, 30);
    assert_eq!(lines_of(&env, &id), ["a", "b-start", "b-end", "c"]);
    let show = env.run_env(&["show", &id, "--output", "json"], &[("RUNBOOK_STATE", &state)]);
    let show: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(show["status"], "succeeded");
    assert_eq!(Env::step(&show, "b")["attempts"], 1, "b was not run again");
}

/// Start and end lines of every run never interleave: one run at a time.
fn assert_one_at_a_time(env: &Env) -> usize {
    let lines = ledger(env);
    for pair in lines.chunks(2) {
        assert!(pair.len() == 2 && pair[0].starts_with("start") && pair[1].starts_with("end"), "{lines:?}");
        assert_eq!(pair[0].split(' ').nth(1), pair[1].split(' ').nth(1), "{lines:?}");
    }
    lines.len() / 2
}

#[test]
fn overlap_skip_drops_fires_while_a_run_is_pending_and_queue_runs_them_in_turn() {
    const LONG: &str = r#"runbook { name = "long" }
step("work", function()
  local id = current_run().id
  exec{shell = "echo start " .. id .. " >> ledger; sleep 1.5; echo end " .. id .. " >> ledger"}
end)
"#;
    for (overlap, expect_skips) in [("skip", true), ("queue", false)] {
        let env = Env::new();
        let state = env.path("state.db").display().to_string();
        env.write("long.lua", LONG);
        env.write(
            "runbook.toml",
            &format!("[[schedule]]\nname = \"long\"\nrunbook = \"long.lua\"\ncron = \"* * * * * *\"\noverlap = \"{overlap}\"\n"),
        );
        let s = spawn(&env, &["schedule", "--concurrency", "4"], &state, "box", "s.log");
        std::thread::sleep(Duration::from_secs(6));
        terminate(s, 30);
        let listed = env.run_env(&["schedule", "--list", "--output", "json"], &[("RUNBOOK_STATE", &state)]);
        listed.assert_code(0);
        let runs_done = assert_one_at_a_time(&env);
        assert!(runs_done >= 2, "{overlap}: {}", env.read("ledger"));
        let history = env.run_env(&["history", "--limit", "100", "--output", "json"], &[("RUNBOOK_STATE", &state)]);
        let history: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
        let queued = history.as_array().unwrap().iter().filter(|r| r["status"] == "queued").count();
        let log = env.read("s.log");
        let skipped = log.matches("\"outcome\":\"skipped_overlap\"").count();
        if expect_skips {
            assert!(skipped >= 2, "skip: fires during a run are skipped: {log}");
            assert_eq!(queued, 0, "skip queues nothing");
        } else {
            assert_eq!(skipped, 0, "queue skips nothing: {log}");
            assert!(queued >= 1, "queue: the fires wait in line ({queued})");
        }
    }
}

#[test]
fn catch_up_fires_the_newest_missed_time_only_when_asked() {
    let env = Env::new();
    let state = env.path("state.db").display().to_string();
    env.write("tick.lua", TICK);
    env.write(
        "runbook.toml",
        "[[schedule]]\nname = \"keen\"\nrunbook = \"tick.lua\"\ncron = \"* * * * * *\"\ncatch_up = \"last\"\n\n\
         [[schedule]]\nname = \"lazy\"\nrunbook = \"tick.lua\"\ncron = \"* * * * * *\"\ncatch_up = \"none\"\n",
    );
    let once = || {
        let r = env.run_env(&["schedule", "--once"], &[("RUNBOOK_STATE", &state)]);
        r.assert_code(0);
        r.stderr
    };
    // Never fired: --once fires each schedule's newest time.
    let first = once();
    assert_eq!(first.matches("\"why\":\"due\"").count(), 2, "{first}");
    // Down for 4 seconds: about 4 fires were missed by each.
    std::thread::sleep(Duration::from_secs(4));
    let second = once();
    let fired: Vec<&str> = second.lines().filter(|l| l.contains("schedule_fired")).collect();
    assert_eq!(fired.len(), 1, "only keen catches up, and only once: {second}");
    assert!(fired[0].contains("\"schedule\":\"keen\"") && fired[0].contains("\"why\":\"catch_up\""), "{second}");
    assert_eq!(ledger(&env).len(), 3, "three runs ran: {:?}", ledger(&env));
    let list = env.run_env(&["schedule", "--list"], &[("RUNBOOK_STATE", &state)]);
    assert!(list.stdout.contains("keen") && list.stdout.contains("succeeded"), "{}", list.stdout);
}

#[test]
fn workers_share_a_queue_and_run_each_run_once() {
    let pg = servers::postgres();
    let url = pg.fresh_database("queue");
    let env = Env::new();
    env.write("tick.lua", TICK);
    let mut ids = Vec::new();
    for _ in 0..30 {
        let r = run_with(&env, &["enqueue", "tick.lua"], &url, "box");
        r.assert_code(0);
        ids.push(r.stdout.trim().to_string());
    }
    let workers: Vec<Child> = (0..3)
        .map(|i| {
            let log = std::fs::File::create(env.path(&format!("w{i}.err"))).unwrap();
            env.cmd(&["worker", "--until-empty"])
                .env("RUNBOOK_STATE", &url)
                .env("RUNBOOK_HOSTNAME", format!("w{i}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap()
        })
        .collect();
    let mut total = 0;
    for w in workers {
        let out = harness::finish(w, 60);
        assert!(out.status.success());
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        total += summary["runs"].as_u64().unwrap();
    }
    assert_eq!(total, 30);
    let mut got = ledger(&env);
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "every queued run ran exactly once");
    assert_eq!(pg.query(&url, "SELECT count(*) FROM runs WHERE status = 'succeeded'"), "30");
    // A bad param or a secret is refused at enqueue time, not at 3 a.m.
    env.write("p.lua", "runbook { name = 'p', params = { n = { type = 'integer' }, token = { type = 'secret' } } }\n");
    let bad = run_with(&env, &["enqueue", "p.lua", "-p", "n=many"], &url, "box");
    bad.assert_code(2);
    let secret = run_with(&env, &["enqueue", "p.lua", "-p", "token=hunter2"], &url, "box");
    secret.assert_code(2);
    assert!(secret.all().contains("is a secret"), "{}", secret.all());
    assert_eq!(
        pg.query(&url, "SELECT count(*) FROM runs WHERE params LIKE '%hunter2%' OR queued_params LIKE '%hunter2%'"),
        "0"
    );
}
