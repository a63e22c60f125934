//! SIGKILL at random moments across repeated runs, while an outside SQLite client reads the
//! journal in a loop: in every run, each step's effect (and each undo's) happens once, plus one
//! repeat for each kill that landed while that very step or undo was running (the journal says
//! which was in flight), the run completes, and the journal passes SQLite's integrity check.
use std::collections::HashMap;

use crate::harness::{signal, Env, Rng};

const STEPS: usize = 30;
const KILLS: usize = 50;

fn runbook(round: usize) -> String {
    let mut body = format!("runbook {{ name = \"crash\" }}\n-- round {round}\n");
    for i in 1..=STEPS {
        body.push_str(&format!(
            "step(\"step {i}\", function() exec{{shell = \"echo step-{i} >> ledger-{round}\", echo = false}}; sleep(\"20ms\"); return {i} end)\n"
        ));
    }
    body
}

fn history(env: &Env) -> Vec<serde_json::Value> {
    let out = env.run(&["history", "--limit", "1000", "--output", "json"]);
    serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

#[test]
fn fifty_sigkills_leave_every_step_done_once_and_the_journal_sound() {
    let env = Env::new();
    let mut rng = Rng::seeded();
    env.run(&["history"]).assert_code(0);
    let mut reader = crate::durability::outside_reader(&env.journal_path(), true);
    let mut kills = 0;
    let mut round = 0;
    while kills < KILLS {
        round += 1;
        env.write("crash.lua", &runbook(round));
        let mut kills_this_round = 0;
        let mut lives = 0;
        let mut run_id: Option<String> = None;
        let mut killed_in: HashMap<String, usize> = HashMap::new();
        let runs_before = history(&env).len();
        loop {
            if let Some(id) = &run_id {
                if env.status(id) == "succeeded" {
                    break;
                }
            }
            let args: Vec<String> = match &run_id {
                None => vec!["run".into(), "crash.lua".into()],
                Some(id) => vec!["resume".into(), id.clone()],
            };
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let child =
                env.cmd(&args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
            lives += 1;
            if kills < KILLS {
                std::thread::sleep(std::time::Duration::from_millis(5 + rng.below(150)));
                signal(child.id(), 9);
            }
            let status = crate::harness::finish(child, 60).status;
            {
                use std::os::unix::process::ExitStatusExt;
                if status.signal() == Some(9) {
                    kills += 1;
                    kills_this_round += 1;
                } else {
                    assert_eq!(status.code(), Some(0), "a life that was not killed must finish the run");
                }
            }
            if let Some(id) = &run_id {
                let show = env.show(id);
                for s in show["steps"].as_array().unwrap().iter().filter(|s| s["status"] == "running") {
                    *killed_in.entry(s["name"].as_str().unwrap().to_string()).or_default() += 1;
                }
            }
            if run_id.is_none() {
                // The first process may die before it journaled its run: then start again.
                let runs = history(&env);
                if runs.len() > runs_before {
                    run_id = runs[0]["run_id"].as_str().map(str::to_string);
                    let show = env.show(run_id.as_deref().unwrap());
                    for s in show["steps"].as_array().unwrap().iter().filter(|s| s["status"] == "running") {
                        *killed_in.entry(s["name"].as_str().unwrap().to_string()).or_default() += 1;
                    }
                }
            }
            assert!(lives < 400, "round {round} never completed");
        }
        let ledger = env.read(&format!("ledger-{round}"));
        let mut extra = 0;
        for i in 1..=STEPS {
            let n = ledger.lines().filter(|l| *l == format!("step-{i}")).count();
            let kills_in_step = killed_in.get(&format!("step {i}")).copied().unwrap_or(0);
            assert!(
                n >= 1 && n - 1 <= kills_in_step,
                "round {round}: step {i} ran {n} times with {kills_in_step} kill(s) while it ran\n{ledger}"
            );
            extra += n - 1;
        }
        assert!(extra <= kills_this_round, "round {round}: {extra} repeats for {kills_this_round} kills");
        let show = env.show(run_id.as_deref().unwrap());
        let steps = show["steps"].as_array().unwrap();
        assert_eq!(steps.len(), STEPS);
        for (i, s) in steps.iter().enumerate() {
            assert_eq!(s["status"], "succeeded");
            assert_eq!(s["result"], i + 1);
        }
        eprintln!("round {round}: {kills_this_round} kills over {lives} processes; {extra} step(s) repeated");
    }

    let _ = reader.kill();
    let _ = reader.wait();
    assert_eq!(integrity(&env), "ok");
}

fn integrity(env: &Env) -> String {
    let db = env.journal_path();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
        sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&mut conn).await.unwrap()
    })
}

const UNDO_STEPS: usize = 12;
const ROLLBACK_KILLS: usize = 30;

/// Steps that each record their effect and undo in a ledger; the last fails, so the run rolls
/// back (`rollback = "auto"`).
fn rollback_runbook(round: usize) -> String {
    let mut body = format!("runbook {{ name = \"crash-undo\", rollback = \"auto\" }}\n-- round {round}\n");
    for i in 1..=UNDO_STEPS {
        body.push_str(&format!(
            "step(\"step {i}\", {{ undo = function() exec{{shell = \"echo undo-{i} >> ledger-{round}\", echo = false}}; sleep(\"15ms\") end }}, function() exec{{shell = \"echo step-{i} >> ledger-{round}\", echo = false}}; sleep(\"15ms\") end)\n"
        ));
    }
    body.push_str("step(\"fail\", function() exec{\"false\"} end)\n");
    body
}

#[test]
fn sigkills_during_rollbacks_leave_every_undo_done_once_and_the_journal_sound() {
    let env = Env::new();
    let mut rng = Rng::seeded();
    env.run(&["history"]).assert_code(0);
    let mut reader = crate::durability::outside_reader(&env.journal_path(), true);
    let mut kills = 0;
    let mut round = 0;
    let mut cut_undos = 0;
    while kills < ROLLBACK_KILLS {
        round += 1;
        env.write("undo.lua", &rollback_runbook(round));
        let runs_before = history(&env).len();
        let mut run_id: Option<String> = None;
        let mut in_flight: HashMap<String, usize> = HashMap::new();
        let mut lives = 0;
        loop {
            if let Some(id) = &run_id {
                if env.status(id) == "rolled_back" {
                    break;
                }
            }
            let args: Vec<String> = match &run_id {
                None => vec!["run".into(), "undo.lua".into()],
                Some(id) => vec!["resume".into(), id.clone()],
            };
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let child =
                env.cmd(&args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
            lives += 1;
            if kills < ROLLBACK_KILLS {
                std::thread::sleep(std::time::Duration::from_millis(5 + rng.below(400)));
                signal(child.id(), 9);
            }
            let status = crate::harness::finish(child, 60).status;
            {
                use std::os::unix::process::ExitStatusExt;
                if status.signal() == Some(9) {
                    kills += 1;
                }
            }
            if run_id.is_none() {
                let runs = history(&env);
                if runs.len() > runs_before {
                    run_id = runs[0]["run_id"].as_str().map(str::to_string);
                }
            }
            if let Some(id) = &run_id {
                for s in env.show(id)["steps"].as_array().unwrap() {
                    let name = s["name"].as_str().unwrap();
                    if s["status"] == "running" {
                        *in_flight.entry(format!("step-{}", name.trim_start_matches("step "))).or_default() += 1;
                    }
                    if s["undo_status"] == "running" {
                        *in_flight.entry(format!("undo-{}", name.trim_start_matches("step "))).or_default() += 1;
                    }
                }
            }
            assert!(lives < 400, "round {round} never completed");
        }
        cut_undos += in_flight.iter().filter(|(k, _)| k.starts_with("undo-")).map(|(_, n)| n).sum::<usize>();
        let ledger = env.read(&format!("ledger-{round}"));
        for i in 1..=UNDO_STEPS {
            for what in ["step", "undo"] {
                let key = format!("{what}-{i}");
                let n = ledger.lines().filter(|l| *l == key).count();
                let cut = in_flight.get(&key).copied().unwrap_or(0);
                assert!(
                    n >= 1 && n - 1 <= cut,
                    "round {round}: {key} ran {n} times with {cut} kill(s) in it\n{ledger}"
                );
            }
        }
        // Every undo ran after its step, newest first.
        let undos: Vec<&str> = ledger.lines().filter(|l| l.starts_with("undo-")).collect();
        let mut firsts: Vec<usize> = Vec::new();
        for u in &undos {
            let i: usize = u.trim_start_matches("undo-").parse().unwrap();
            if !firsts.contains(&i) {
                firsts.push(i);
            }
        }
        assert_eq!(firsts, (1..=UNDO_STEPS).rev().collect::<Vec<_>>(), "round {round}\n{ledger}");
        eprintln!("round {round}: {lives} processes, {kills} kills so far");
    }
    let _ = reader.kill();
    let _ = reader.wait();
    assert_eq!(integrity(&env), "ok");
    assert!(cut_undos > 0, "some kills landed while an undo ran");
}
