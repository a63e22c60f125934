//! Work a killed, timed-out or cancelled attempt left on a database server is found by its
//! label (`application_name` = `runbook/<run>/<step>#<attempt>`; a leading comment on MySQL) and
//! stopped before the step runs again, so a resumed step never runs beside its first attempt.
//! Local commands carry the same label in their environment (`RUNBOOK_WORK`), which the
//! processes they start inherit.
use crate::harness::{signal, Env};
use crate::servers::{mariadb, postgres};

/// The sessions of a run's step, as pg_stat_activity shows them: `pid|state|application_name`.
fn sessions(url: &str, run: &str, step: &str) -> Vec<String> {
    let out = postgres().query(
        url,
        &format!(
            "select pid || '|' || state || '|' || application_name from pg_stat_activity \
             where application_name like 'runbook/{run}/{step}#%' and state <> 'idle' order by pid"
        ),
    );
    out.lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// The newest run's id, or "" before the first is journaled.
fn newest_run(env: &Env) -> String {
    let r = env.run(&["history", "--output", "json"]);
    serde_json::from_str::<serde_json::Value>(&r.stdout)
        .ok()
        .and_then(|v| v[0]["run_id"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "{what}: not within 30s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

const REINDEX: &str = r#"runbook { name = "reindex" }
local c = db.connect(env("PGURL"))
step("reindex", function(attempt)
  -- The first attempt is the long one that gets killed; the resumed one is short.
  c:execute("select pg_sleep($1)", attempt == 1 and 30 or 2)
end)
"#;

#[test]
fn a_statement_left_running_by_a_killed_runner_is_stopped_before_the_step_runs_again() {
    let env = Env::new();
    let url = postgres().fresh_database("orphan");
    env.write("rb.lua", REINDEX);
    let runner = env.cmd(&["run", "rb.lua"]).env("PGURL", &url).spawn().unwrap();
    let mut run = String::new();
    wait_until("the run is journaled", || {
        run = newest_run(&env);
        !run.is_empty()
    });
    wait_until("the statement runs on the server", || sessions(&url, &run, "reindex").len() == 1);
    let first = sessions(&url, &run, "reindex").remove(0);
    assert!(first.ends_with(&format!("|active|runbook/{run}/reindex#1")), "{first}");
    let orphan_pid = first.split('|').next().unwrap().to_string();

    signal(runner.id(), 9);
    let _ = crate::harness::finish(runner, 30);
    // The server does not know the client died: the statement goes on.
    assert_eq!(sessions(&url, &run, "reindex"), vec![first.clone()], "the orphan still runs");

    let resumed = env.cmd(&["resume", &run]).env("PGURL", &url).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut seen = Vec::new();
    wait_until("the second attempt runs", || {
        let now = sessions(&url, &run, "reindex");
        seen.push(now.clone());
        now.iter().any(|s| s.ends_with("#2"))
    });
    let out = crate::harness::finish(resumed, 60);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("cancelled PostgreSQL backend {orphan_pid} of runbook/{run}/reindex#1")),
        "the log names the orphan it stopped:\n{stdout}"
    );
    // Never two statements of the step at once.
    for s in &seen {
        assert!(s.len() <= 1, "two sessions of the step at once: {s:?}");
    }
    assert!(seen.iter().all(|s| s.iter().all(|l| !l.starts_with(&format!("{orphan_pid}|")) || s.len() == 1)));
}

#[test]
fn a_step_timeout_cancels_its_statement_on_the_server() {
    let env = Env::new();
    let url = postgres().fresh_database("timeout");
    env.write(
        "rb.lua",
        r#"runbook { name = "slow" }
local c = db.connect(env("PGURL"))
step("slow", { timeout = "1s" }, function() c:execute("select pg_sleep(30)") end)
"#,
    );
    let out = env.cmd(&["run", "rb.lua"]).env("PGURL", &url).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("cancelled PostgreSQL backend"), "{stdout}");
    let run = env.show("last")["run_id"].as_str().unwrap().to_string();
    assert_eq!(sessions(&url, &run, "slow"), Vec::<String>::new(), "nothing of the step runs on the server");
}

#[test]
fn a_cancelled_run_stops_its_statement_on_the_server() {
    let env = Env::new();
    let url = postgres().fresh_database("cancel");
    env.write("rb.lua", REINDEX);
    let runner = env
        .cmd(&["run", "rb.lua"])
        .env("PGURL", &url)
        .env("RUNBOOK_LEASE_SECS", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut run = String::new();
    wait_until("the statement runs", || {
        run = newest_run(&env);
        !run.is_empty() && sessions(&url, &run, "reindex").len() == 1
    });
    env.run(&["cancel", &run]).assert_code(0);
    let out = crate::harness::finish(runner, 30);
    assert!(String::from_utf8_lossy(&out.stdout).contains("cancelled PostgreSQL backend"));
    assert_eq!(sessions(&url, &run, "reindex"), Vec::<String>::new());
}

#[test]
fn a_mysql_query_left_running_by_a_killed_runner_is_killed_before_the_step_runs_again() {
    let env = Env::new();
    let maria = mariadb();
    env.write(
        "rb.lua",
        r#"runbook { name = "maria" }
local c = db.connect(env("MYURL"))
step("sleep", function(attempt) c:execute("select sleep(?)", attempt == 1 and 30 or 1) end)
"#,
    );
    let runner = env.cmd(&["run", "rb.lua"]).env("MYURL", &maria.url).spawn().unwrap();
    let mut run = String::new();
    let processlist = |run: &str| -> usize {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let url = maria.url.clone();
        let pattern = format!("/* runbook/{run}/sleep#%");
        rt.block_on(async move {
            use sqlx::Connection;
            let mut c = sqlx::MySqlConnection::connect(&url).await.unwrap();
            let n: i64 = sqlx::query_scalar("select count(*) from information_schema.processlist where info like ?")
                .bind(pattern)
                .fetch_one(&mut c)
                .await
                .unwrap();
            n as usize
        })
    };
    wait_until("the query runs", || {
        run = newest_run(&env);
        !run.is_empty() && processlist(&run) == 1
    });
    signal(runner.id(), 9);
    let _ = crate::harness::finish(runner, 30);
    assert_eq!(processlist(&run), 1, "the orphan still runs");
    let out = env.cmd(&["resume", &run]).env("MYURL", &maria.url).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("KILL CONNECTION"), "{stdout}");
    assert_eq!(processlist(&run), 0);
}

#[test]
fn a_remote_command_left_running_by_a_killed_runner_is_killed_before_the_step_runs_again() {
    let s = crate::servers::sshd();
    let env = Env::new();
    let marker = format!("307.{}", std::process::id());
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "remote" }}
local host = ssh.connect({{ host = "{host}", user = "{user}", key = "{key}", known_hosts = "{kh}" }})
step("rebuild index", function(attempt)
  if attempt == 1 then host:exec("sleep {marker}; echo first >> /tmp/rb-orphan-{marker}") end
  host:exec("echo again >> /tmp/rb-orphan-{marker}")
end)
"#,
            host = s.hosts[0],
            user = s.user,
            key = s.key.display(),
            kh = s.known_hosts.display(),
        ),
    );
    let pgrep = || {
        let out = std::process::Command::new("pgrep").args(["-f", &format!("^sleep {marker}")]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let runner = env.spawn(&["run", "rb.lua"]);
    wait_until("the remote command runs", || pgrep() == 1);
    // Its marker names the run, the step and the attempt.
    let run = env.show("last")["run_id"].as_str().unwrap().to_string();
    let markers: Vec<String> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!(".runbook-{run}.rebuild_index-")))
        .collect();
    assert_eq!(markers.len(), 1, "{markers:?}");
    assert!(markers[0].contains(".1."), "attempt 1: {markers:?}");
    signal(runner.id(), 9);
    let _ = crate::harness::finish(runner, 30);
    assert_eq!(pgrep(), 1, "the remote command outlives its runner");
    let out = env.run(&["resume", &run]);
    out.assert_code(0);
    assert!(out.stdout.contains("killed process group"), "{}", out.stdout);
    assert_eq!(pgrep(), 0);
    let ledger = std::fs::read_to_string(format!("/tmp/rb-orphan-{marker}")).unwrap_or_default();
    let _ = std::fs::remove_file(format!("/tmp/rb-orphan-{marker}"));
    assert_eq!(ledger, "again\n", "the abandoned command never went on to its next line");
}

#[test]
fn a_local_grandchild_left_running_by_a_killed_runner_is_stopped_before_the_step_runs_again() {
    let env = Env::new();
    let marker = format!("309.{}", std::process::id());
    // The shell starts a child in the background, out of reach of the shell's own death.
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "local" }}
step("started in the background", function() exec{{ shell = "sleep 4{marker} >/dev/null 2>&1 & echo started" }} end)
step("rebuild", function(attempt)
  if attempt == 1 then exec{{ shell = "sleep {marker} & wait; echo first >> ledger" }} end
  exec{{ shell = "echo again >> ledger" }}
end)
"#
        ),
    );
    let pgrep = |pattern: &str| {
        let out = std::process::Command::new("pgrep").args(["-f", pattern]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let runner = env.spawn(&["run", "rb.lua"]);
    wait_until("the command runs", || pgrep(&format!("^sleep {marker}")) == 1);
    let run = newest_run(&env);
    signal(runner.id(), 9);
    let _ = crate::harness::finish(runner, 30);
    assert_eq!(pgrep(&format!("^sleep {marker}")), 1, "the grandchild outlives its runner and its shell");
    let out = env.run(&["resume", &run]);
    out.assert_code(0);
    assert!(
        out.stdout.contains(&format!("`sleep {marker}` left running by runbook/{run}/rebuild#1")),
        "{}",
        out.stdout
    );
    assert_eq!(pgrep(&format!("^sleep {marker}")), 0);
    assert_eq!(env.read("ledger"), "again\n", "the abandoned command never went on");
    // What an earlier, completed step put in the background on purpose is left alone.
    assert_eq!(
        pgrep(&format!("^sleep 4{marker}")),
        1,
        "a completed step's background process is not an orphan: {}",
        out.stdout
    );
    let _ = std::process::Command::new("pkill").args(["-f", &format!("^sleep 4{marker}")]).status();
}
