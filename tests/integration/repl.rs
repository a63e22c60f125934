//! `runbook repl` driven in a real pseudo-terminal: evaluation, completion, Ctrl-C, history,
//! query tables, attaching to a failed run to retry, skip and resume it, and the session record.
use std::process::Command;
use std::time::Duration;

use crate::harness::Env;
use crate::pty::{Pty, CTRL_C, CTRL_U, UP};
use crate::servers;

const PROMPT: &str = "runbook> ";

fn repl_cmd(env: &Env, args: &[&str]) -> Command {
    let mut all = vec!["repl"];
    all.extend_from_slice(args);
    let mut c = env.cmd(&all);
    c.env("RUNBOOK_HISTORY", env.path("history")).env("USER", "oncall").env("RUNBOOK_HOSTNAME", "bastion");
    // Long results print as they are (the pager has its own test).
    c.env("RUNBOOK_PAGER", "off");
    c
}

/// A REPL with `pg` connected to `url` (given as a secret through PG_URL).
fn pg_repl(env: &Env, url: &str) -> Pty {
    let mut c = repl_cmd(env, &[]);
    c.env("PG_URL", url);
    let mut p = Pty::spawn(c);
    p.expect(PROMPT);
    p.line("pg = db.connect(secret{ env = \"PG_URL\", name = \"pg_url\" })");
    p.expect(PROMPT);
    p
}

fn start(env: &Env) -> Pty {
    let mut p = Pty::spawn(repl_cmd(env, &[]));
    p.expect(PROMPT);
    p
}

#[test]
fn expressions_statements_multiline_and_bad_input() {
    let env = Env::new();
    let mut p = start(&env);
    p.line("1 + 2");
    p.expect("\n3\n");
    p.expect(PROMPT);
    // A statement prints nothing; `local` at the start keeps the variable for the session.
    p.line("local greeting = \"hi\"");
    p.expect(PROMPT);
    p.line("greeting .. \"!\"");
    p.expect("\nhi!\n");
    // An open function continues on the next line with the continuation prompt.
    p.line("function double(x)");
    p.expect("...> ");
    p.line("  return x * 2");
    p.expect("...> ");
    p.line("end");
    p.expect(PROMPT);
    p.line("double(21)");
    p.expect("\n42\n");
    // An open table and an open string continue too.
    p.line("t = {");
    p.expect("...> ");
    p.line("  a = 1 }");
    p.expect(PROMPT);
    p.line("t.a + 1");
    p.expect("\n2\n");

    // Bad input leaves the session usable, with a clear message.
    p.line("x = = 1");
    p.expect("error: repl:1:");
    p.expect(PROMPT);
    p.line("error(\"boom\")");
    p.expect("error: repl:1: boom");
    p.line("nil + 1");
    p.expect("error: repl:1: attempt to perform arithmetic on a nil value");
    p.line("http.get(\"http://127.0.0.1:9/\", { timeout = \"2s\" })");
    p.expect("error: ");
    p.expect("http");
    p.expect(PROMPT);
    p.line("big = {} for i = 1, 100000 do big[i] = { id = i, name = \"row \" .. i, nested = { deep = { deeper = { deepest = {} } } } } end");
    p.expect(PROMPT);
    p.line("big");
    p.expect("-- cut:");
    p.expect("entries beyond 40 per table not shown");
    p.expect(PROMPT);
    p.line("{ a = { b = { c = { d = { e = 1 } } } } }");
    p.expect("{...}");
    p.expect("tables deeper than 4 levels");
    // Steps belong in runbooks: the REPL says what to do instead, and records no run.
    p.line("step(\"x\", function() end)");
    p.expect("step() belongs in a runbook; in the REPL");
    p.line("runbook { name = \"adhoc\" }");
    p.expect("runbook{} belongs in a runbook");
    p.line("print(\"hello from print\")");
    p.expect("hello from print");
    p.line("double(greeting:len())");
    p.expect("\n4\n");
    p.quit();
}

#[test]
fn completion_and_signature_hints() {
    let env = Env::new();
    env.write(
        "runbook.toml",
        "[hosts.web]\nhosts = [\"127.0.0.2\", \"127.0.0.3\"]\n\n[hosts.workers]\nhosts = [\"127.0.0.4\"]\n",
    );
    let mut p = start(&env);
    // `db.` and Tab twice lists the module's functions.
    p.wait_prompt();
    p.type_keys("db.");
    p.tab();
    p.tab();
    p.expect("connect(");
    p.send(CTRL_U);
    // A unique prefix completes in place.
    p.type_keys("ssh.gr");
    p.tab();
    p.expect("ssh.group");
    p.send(CTRL_U);
    p.enter("conn = db.connect(\"sqlite::memory:\")");
    p.expect(PROMPT);
    // Methods of the connection held in `conn`.
    p.wait_prompt();
    p.type_keys("conn:");
    p.tab();
    p.tab();
    let listed = p.expect("transaction(");
    for m in ["execute(", "query(", "query_one(", "session(", "execute_returning(", "set_password("] {
        assert!(listed.contains(m), "{m} not listed:\n{listed}");
    }
    p.send(CTRL_U);
    // After `name(`: the function's signature as a hint.
    p.type_keys("db.connect(");
    p.expect("url: string|Secret");
    p.send(CTRL_U);
    p.type_keys("conn:query(");
    p.expect("sql: string");
    p.send(CTRL_U);
    // Inventory group names inside ssh.group(", and the inventory table.
    p.type_keys("ssh.group(\"wo");
    p.tab();
    p.expect("ssh.group(\"workers");
    p.send(CTRL_U);
    p.enter("inventory.web[2]");
    p.expect("\n127.0.0.3\n");
    // :help gives signatures and an example, from the stubs.
    p.line(":help db.connect");
    p.expect("db.connect(url: string|Secret, opts?: DbOptions) -> DbConnection");
    p.expect("example: local pg = db.connect(");
    p.line(":help ssh");
    p.expect("ssh.rolling(hosts: string[]|string, fn: fun(session: SshSession, host: string): any, opts?: SshRollingOptions)");
    p.expect("SshSession methods:");
    // REPL commands.
    p.wait_prompt();
    p.type_keys(":ret");
    p.tab();
    p.expect(":retry");
    p.send(CTRL_U);
    p.enter("");
    p.quit();
}

#[test]
fn ctrl_c_cancels_a_running_call_and_keeps_the_session() {
    let env = Env::new();
    let mut p = start(&env);
    p.line("kept = 7");
    p.expect(PROMPT);
    // At the prompt, Ctrl-C clears the line being typed: it is not evaluated.
    p.wait_prompt();
    p.send("cleared = 1");
    p.interrupt();
    p.line("cleared == nil");
    p.expect("\ntrue\n");
    // During a 30 s sleep it cancels the call (the wait below is far shorter than the sleep).
    // (The marker is printed by the call, so it is not the echo of the typed line.)
    p.line("print(\"sleep\" .. \"ing\") sleep(\"30s\")");
    p.expect("info: sleeping");
    p.send(CTRL_C);
    p.expect_within("interrupted (Ctrl-C); the session is intact", Duration::from_secs(10));
    p.expect(PROMPT);
    // An HTTP health wait against a port nothing listens on.
    p.line("print(\"wait\" .. \"ing\") http.wait_healthy(\"http://127.0.0.1:9/health\", { timeout = \"60s\", interval = \"1s\" })");
    p.expect("info: waiting");
    p.send(CTRL_C);
    p.expect_within("interrupted (Ctrl-C)", Duration::from_secs(10));
    // And a pure-Lua loop.
    p.line("print(\"spinn\" .. \"ing\") while true do pcall(function() for i = 1, 100 do end end) end");
    p.expect("info: spinning");
    p.send(CTRL_C);
    p.expect_within("interrupted (Ctrl-C)", Duration::from_secs(10));
    p.expect(PROMPT);
    p.line("kept * 6");
    p.expect("\n42\n");
    p.quit();
}

#[test]
fn history_persists_across_sessions_with_secrets_redacted() {
    let env = Env::new();
    let value = "hunter2-very-secret-value";
    let mut c = repl_cmd(&env, &[]);
    c.env("TEST_PW", value);
    let mut p = Pty::spawn(c);
    p.expect(PROMPT);
    // Typed before the secret is known: scrubbed from the history and the record once it is.
    p.line(&format!("early = \"{value}\""));
    p.expect(PROMPT);
    p.line("pw = secret{ env = \"TEST_PW\", name = \"db_password\" }");
    p.expect(PROMPT);
    p.line("pw");
    p.expect("<secret:db_password>");
    // A line with the secret's value typed in full is stored redacted.
    p.line(&format!("same = (\"{value}\" == \"x\")"));
    p.expect(PROMPT);
    p.line("marker_for_search = 1234");
    p.expect(PROMPT);
    p.quit();

    let history = std::fs::read_to_string(env.path("history")).expect("history file");
    assert!(!history.contains(value), "the secret's value is in the history:\n{history}");
    assert!(history.contains("same = (\"<secret:db_password>\" == \"x\")"), "{history}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.path("history")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "history file mode");

    // The second session recalls the first's lines: Up, and Ctrl-R search.
    let mut p = start(&env);
    p.wait_prompt();
    p.send(UP);
    p.expect("marker_for_search = 1234");
    p.send(CTRL_U);
    std::thread::sleep(Duration::from_millis(100));
    p.send("\x12");
    p.type_keys("same = ");
    p.expect("<secret:db_password>");
    p.send(CTRL_C);
    p.expect(PROMPT);
    p.quit();

    assert!(history.contains("early = \"<secret:db_password>\""), "{history}");
    // Nor in the session record. (The second session evaluated nothing: it is not recorded.)
    let shown = env.run(&["sessions", "show", "last", "--output", "json"]);
    shown.assert_code(0);
    let last: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(last["session"]["who"], "oncall");
    let all = env.run(&["sessions", "--output", "json"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&all.stdout).unwrap().as_array().unwrap().len(), 1);
    let first = serde_json::from_str::<serde_json::Value>(&all.stdout).unwrap()[0]["id"].as_str().unwrap().to_string();
    let r = env.run(&["sessions", "show", &first, "--output", "json"]);
    r.assert_code(0);
    assert!(!r.stdout.contains(value), "{}", r.stdout);
    assert!(r.stdout.contains("<secret:db_password>"), "{}", r.stdout);
    assert!(!crate::harness::contains_bytes(&crate::harness::journal_bytes(&env.journal_path()), value.as_bytes()));
}

#[test]
fn query_results_print_as_tables_from_postgres() {
    let pg = servers::postgres();
    let url = pg.fresh_database("repl");
    let env = Env::new();
    let mut p = pg_repl(&env, &url);
    p.line("pg");
    p.expect("<db connection (");
    p.line(
        "pg:query(\"select g as id, 'host-' || g as name, g * 1.5 as load from generate_series(1, 3) g order by g\")",
    );
    let out = p.expect("(3 rows)");
    let lines: Vec<&str> = out.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
    let header = lines.iter().position(|l| l.starts_with("id")).unwrap_or_else(|| panic!("no header in {out}"));
    assert_eq!(lines[header], "id | name   | load");
    assert_eq!(lines[header + 1], "---+--------+-----");
    assert_eq!(lines[header + 2], "1  | host-1 | 1.5");
    assert_eq!(lines[header + 4], "3  | host-3 | 4.5");
    p.line("pg:query(\"select * from missing_table\")");
    p.expect("error: db:");
    p.expect("missing_table");
    p.line("pg:scalar(\"select 40 + 2\")");
    p.expect("\n42\n");
    p.quit();
}

/// A runbook that fails at `check` until the file `fixed` exists; `prepare` and `finish` write
/// a ledger line each time they run.
const FLAKY: &str = r#"
runbook { name = "flaky", params = { target = { type = "string", default = "app" } } }
local prep = step("prepare", function()
  exec{ shell = "echo prepare >> ledger" }
  return { rows = 3, target = params.target }
end)
step("check", function()
  local r = exec{ "test", "-e", "fixed", check = false }
  if r.code ~= 0 then fail("the file 'fixed' is missing") end
  return { ok = true, rows = prep.rows }
end)
step("finish", function()
  exec{ shell = "echo finish >> ledger" }
end)
"#;

#[test]
fn attach_fix_retry_resume_to_succeeded() {
    let env = Env::new();
    env.write("flaky.lua", FLAKY);
    let r = env.run(&["run", "flaky.lua", "-p", "target=db1"]);
    r.assert_code(1);
    assert!(r.all().contains("the file 'fixed' is missing"), "{}", r.all());

    let mut p = Pty::spawn(repl_cmd(&env, &["--last"]));
    p.expect("failed step: 'check'");
    p.expect("runbook[");
    p.line("run.status");
    p.expect("\nfailed\n");
    p.line("run.params.target");
    p.expect("\ndb1\n");
    p.line("run.steps[\"prepare\"].result.rows");
    p.expect("\n3\n");
    p.line("run.steps.check.error");
    p.expect("the file 'fixed' is missing");
    p.line(":steps");
    p.expect("prepare | succeeded");
    // Retrying before the fix fails again, and says so.
    p.line(":retry check");
    p.expect("step 'check' failed again");
    // Fix the world by hand, retry, resume.
    p.line("exec{ \"touch\", \"fixed\" }");
    p.expect("]> ");
    p.line(":retry check");
    p.expect("step 'check' succeeded");
    p.line(":result check");
    p.expect("(bound to `result`)");
    p.line("result.rows");
    p.expect("\n3\n");
    p.line(":resume");
    p.expect("is succeeded");
    p.line("run.status");
    p.expect("\nsucceeded\n");
    p.quit();

    let show = env.show("last");
    assert_eq!(show["status"], "succeeded");
    let check = Env::step(&show, "check");
    assert_eq!(check["status"], "succeeded");
    assert_eq!(check["attempts"], 3, "{check}");
    assert_eq!(check["actor"], "oncall");
    // `prepare` ran once: the resume returned its recorded result.
    assert_eq!(env.read("ledger"), "prepare\nfinish\n");
    let events = env.run(&["show", "last", "--events", "--output", "json"]);
    assert!(events.stdout.contains("step_retried"), "{}", events.stdout);
}

#[test]
fn skip_is_recorded_with_who_and_why_then_resume() {
    let env = Env::new();
    env.write("flaky.lua", FLAKY);
    env.run(&["run", "flaky.lua"]).assert_code(1);
    let mut p = Pty::spawn(repl_cmd(&env, &["--last"]));
    p.expect("failed step: 'check'");
    p.line(":skip check");
    p.expect("usage: :skip check REASON");
    p.line(":skip prepare done already");
    p.expect("already succeeded");
    p.line(":skip check verified by hand on the primary");
    p.expect("recorded as skipped by oncall: verified by hand on the primary");
    p.line(":resume");
    p.expect("is succeeded");
    p.quit();
    let show = env.show("last");
    assert_eq!(show["status"], "succeeded");
    let check = Env::step(&show, "check");
    assert_eq!(check["status"], "skipped");
    assert_eq!(check["actor"], "oncall");
    assert_eq!(check["error"], "skipped by oncall: verified by hand on the primary");
    assert_eq!(env.read("ledger"), "prepare\nfinish\n");
}

#[test]
fn load_a_runbook_without_running_its_steps() {
    let env = Env::new();
    env.write("flaky.lua", FLAKY);
    let mut p = start(&env);
    p.line(":load flaky.lua target=web");
    p.expect("loaded runbook 'flaky' from flaky.lua: 3 step(s): prepare, check, finish");
    p.line("params.target");
    p.expect("\nweb\n");
    p.line(":load missing.lua");
    p.expect("error: cannot read missing.lua");
    p.quit();
    assert_eq!(env.read("ledger"), "", "a step ran during :load");
    assert_eq!(env.run(&["history", "--output", "json"]).stdout.trim(), "[]");
}

#[test]
fn timeline_lists_the_session_line_by_line() {
    let env = Env::new();
    let mut p = start(&env);
    p.line("1 + 2");
    p.expect("\n3\n");
    p.line("error(\"boom\")");
    p.expect("boom");
    p.line(":runs");
    p.expect("no runs in this journal yet");
    p.line(":timeline notes.md");
    p.expect("wrote the session's timeline (3 entries) to notes.md");
    p.quit();

    let md = env.read("notes.md");
    let lines: Vec<&str> = md.lines().collect();
    assert!(lines[0].starts_with("# Incident session 2"), "{md}");
    let id = lines[0].trim_start_matches("# Incident session ");
    assert_eq!(lines[1], "");
    assert_eq!(lines[2], "- who: oncall@bastion");
    assert!(lines[3].starts_with("- started: 20"), "{md}");
    assert_eq!(lines[4], "- ended: (in progress)");
    assert_eq!(lines[5], "- entries: 3");
    assert_eq!(lines[6], "");
    assert_eq!(lines[7], "| time (UTC) | who | what | outcome |");
    assert_eq!(lines[8], "|---|---|---|---|");
    let row = |i: usize, what: &str, outcome: &str| {
        let cells: Vec<&str> = lines[i].split(" | ").collect();
        assert_eq!(cells.len(), 4, "{}", lines[i]);
        let time = cells[0].trim_start_matches("| ");
        assert!(time.len() == 8 && time.as_bytes()[2] == b':' && time.as_bytes()[5] == b':', "{}", lines[i]);
        assert_eq!(cells[1], "oncall");
        assert_eq!(cells[2], what);
        assert!(cells[3].starts_with(outcome.split('*').next().unwrap()), "{}", lines[i]);
        assert!(cells[3].ends_with(outcome.split('*').nth(1).unwrap_or(" |")), "{}", lines[i]);
    };
    row(9, "`1 + 2`", "ok (* ms): 3 |");
    row(10, "`error(\"boom\")`", "error (* ms): repl:1: boom |");
    row(11, ":runs", "ok (* ms): no runs in this journal yet |");
    assert_eq!(lines.len(), 12, "{md}");

    // The CLI prints the same record, now ended.
    let r = env.run(&["sessions"]);
    r.assert_code(0);
    assert!(r.stdout.contains(id) && r.stdout.contains("oncall@bastion"), "{}", r.stdout);
    let shown = env.run(&["sessions", "show", &id[..12]]);
    shown.assert_code(0);
    assert!(shown.stdout.starts_with(&format!("# Incident session {id}\n")), "{}", shown.stdout);
    assert!(shown.stdout.contains("- ended: 20"), "{}", shown.stdout);
    for l in &lines[7..] {
        assert!(shown.stdout.contains(l), "{l} missing from:\n{}", shown.stdout);
    }
    let none = env.run(&["sessions", "show", "nope"]);
    assert_eq!(none.code, 2, "{}", none.all());
    assert!(none.stderr.contains("no session matches 'nope'"), "{}", none.stderr);
}

#[test]
fn gates_dry_runs_and_unknown_runs_are_respected() {
    let env = Env::new();
    env.write(
        "gated.lua",
        r#"
runbook { name = "gated" }
step("before", function() return 1 end)
approve("drop the old tables?")
step("after", function() exec{ shell = "echo after >> ledger" } end)
"#,
    );
    // No terminal: the gate stops the run, waiting for approval.
    env.run(&["run", "gated.lua"]).assert_code(3);
    let mut p = Pty::spawn(repl_cmd(&env, &["--last"]));
    p.expect("(waiting_approval)");
    // The load stops at the unapproved gate: nothing after it can be run by hand.
    p.line(":retry after");
    p.expect("step 'after' was not loaded: loading run");
    p.expect("stopped at 'approve: drop the old tables?'");
    p.line(":skip \"approve: drop the old tables?\" nobody asked");
    p.expect("is an approval gate: :approve");
    // The gate is decided from the REPL, journaled as such; the run then resumes here.
    p.line(":approve checked the table list");
    p.expect("approved by");
    p.line(":resume");
    p.expect("succeeded");
    p.quit();
    assert_eq!(env.read("ledger"), "after\n");
    let show = env.show("last");
    let gate = Env::step(&show, "approve: drop the old tables?");
    assert_eq!(gate["votes"][0]["via"], "repl");
    assert_eq!(gate["votes"][0]["comment"], "checked the table list");

    // A dry run is never continued or retried for real.
    env.write("flaky.lua", FLAKY);
    env.run(&["run", "flaky.lua", "--dry-run"]);
    let mut p = Pty::spawn(repl_cmd(&env, &["--last"]));
    p.expect("]> ");
    p.line(":resume");
    p.expect("was a dry run");
    p.quit();

    // An unknown run: the REPL says so and exits 2.
    let mut p = Pty::spawn(repl_cmd(&env, &["--run", "nope"]));
    p.expect("no run matches 'nope'");
    let status = p.child.wait().unwrap();
    assert_eq!(status.code(), Some(2));
}

/// Ctrl-C during a statement sends the server a real cancel request, and the REPL and the
/// timeline say what the server did: a sleeping query and an UPDATE blocked on a lock are
/// cancelled there (the UPDATE never commits later).
#[test]
fn ctrl_c_cancels_a_statement_on_the_server_and_says_what_the_server_did() {
    let pg = servers::postgres();
    let url = pg.fresh_database("replcancel");
    pg.query(&url, "create table accounts (id int primary key, balance int); insert into accounts values (1, 100)");
    let env = Env::new();
    let mut p = pg_repl(&env, &url);
    let busy = |what: &str| {
        pg.query(
            &url,
            &format!("select count(*) from pg_stat_activity where application_name like 'runbook/repl/%' and state = 'active' and query like '%{what}%'"),
        )
    };
    let wait_busy = |what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while busy(what) != "1" {
            assert!(std::time::Instant::now() < deadline, "{what} runs on the server");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    p.line("pg:scalar(\"select pg_sleep(30)\")");
    wait_busy("pg_sleep");
    p.send(CTRL_C);
    p.expect_within("Ctrl-C: cancelled on the server", Duration::from_secs(10));
    p.expect(PROMPT);
    assert_eq!(busy("pg_sleep"), "0", "nothing left running on the server");

    // An UPDATE waiting on a row lock another session holds for a few seconds.
    let mut holder = Command::new(servers::pg_bindir().unwrap().join("psql"))
        .args([url.as_str(), "-X", "-q", "-c", "begin; select * from accounts for update; select pg_sleep(4); commit;"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    p.line("pg:execute(\"update accounts set balance = balance - 10 where id = 1\")");
    wait_busy("update accounts");
    p.send(CTRL_C);
    p.expect_within("Ctrl-C: cancelled on the server", Duration::from_secs(10));
    p.expect(PROMPT);
    let _ = holder.wait();
    assert_eq!(
        pg.query(&url, "select balance from accounts where id = 1"),
        "100",
        "the cancelled UPDATE never committed"
    );
    p.quit();
    let timeline = env.run(&["sessions", "show", "last"]);
    assert!(timeline.stdout.matches("cancelled on the server").count() >= 2, "{}", timeline.stdout);
}

/// Ctrl-C during a local command: SIGTERM reaches its process group and its exit is seen,
/// and the REPL says so.
#[test]
fn ctrl_c_during_a_command_signals_it_and_reports_its_exit() {
    let env = Env::new();
    let mut p = start(&env);
    // (The marker is made by the shell, so it is not the echo of the typed line.)
    p.line("exec{shell = \"echo start''ed; sleep 30\"}");
    p.expect("| started");
    p.send(CTRL_C);
    p.expect_within("SIGTERM delivered to `sh -c", Duration::from_secs(10));
    p.expect("its exit was seen");
    p.expect(PROMPT);
    p.quit();
}

#[test]
fn a_missing_secret_param_is_typed_without_echo_and_kept_off_every_record() {
    let env = Env::new();
    let token = "typed-Token-5521-horse";
    env.write(
        "rb.lua",
        r#"runbook { name = "needs token", params = { token = { type = "secret", env = "DEPLOY_TOKEN" } } }
step("use it", function()
  exec{ "sh", "-c", 'test "$T" = "$(cat expected)" && test -f ready', env = { T = params.token } }
  return "used"
end)
"#,
    );
    env.write("expected", token);
    let r = env.run_env(&["run", "rb.lua"], &[("DEPLOY_TOKEN", token)]);
    r.assert_code(1);
    env.write("ready", "");

    // The REPL has no DEPLOY_TOKEN: the run's secret is missing until typed.
    let mut p = Pty::spawn(repl_cmd(&env, &["--last"]));
    p.expect("failed step: 'use it'");
    p.line(":retry use it");
    p.expect("step 'use it' failed again");
    p.line(":param token");
    p.expect("token (not echoed): ");
    p.enter(token);
    p.expect("'token' given to the attached run");
    p.line(":param nosuch");
    p.expect("has no param 'nosuch' (its params: token)");
    p.line(":retry use it");
    p.expect("step 'use it' succeeded");
    p.line(":resume");
    p.expect("is succeeded");
    let seen = p.quit();
    assert!(!seen.contains(token), "the value was echoed:\n{seen}");

    assert_eq!(env.show("last")["status"], "succeeded");
    let mut records = env.run(&["sessions", "show", "last"]).all();
    records.push_str(&env.run(&["show", "last", "--events"]).all());
    records.push_str(&std::fs::read_to_string(env.path("history")).unwrap_or_default());
    assert!(records.contains(":param token"), "the command is recorded, not its value:\n{records}");
    assert!(!records.contains(token), "{records}");
    let bytes = crate::harness::journal_bytes(&env.journal_path());
    assert!(!crate::harness::contains_bytes(&bytes, token.as_bytes()), "the value is in the journal or its WAL");
}

#[test]
fn ctrl_c_during_a_remote_command_stops_its_process_group_and_reports_its_exit() {
    let s = servers::sshd();
    let env = Env::new();
    let marker = format!("{}.{}", 30, std::process::id());
    let mut p = start(&env);
    p.line(&format!(
        "h = ssh.connect(\"{}\", {{ user = \"{}\", key = \"{}\", known_hosts = \"{}\" }})",
        s.hosts[0],
        s.user,
        s.key.display(),
        s.known_hosts.display()
    ));
    p.expect(PROMPT);
    p.line(&format!("h:exec(\"echo start''ed; sleep {marker}\")"));
    p.expect("started");
    p.send(CTRL_C);
    let said = p.expect_within(PROMPT, Duration::from_secs(10));
    assert!(said.contains(&format!("Ctrl-C: SIGTERM delivered to `echo start''ed; sleep {marker}` on ")), "{said}");
    assert!(
        said.contains("SIGTERM sent to its process group, which ended; its exit was seen (exit code 143)"),
        "{said}"
    );
    p.quit();
    let left = Command::new("pgrep").args(["-f", &format!("sleep {marker}")]).output().unwrap();
    assert!(left.stdout.is_empty(), "the remote sleep is gone: {}", String::from_utf8_lossy(&left.stdout));
}

#[test]
fn a_connection_is_one_session_as_in_psql_with_expanded_display_timing_and_watch() {
    let pg = servers::postgres();
    let url = pg.fresh_database("psqlish");
    pg.query(&url, "create table accounts (id int primary key, balance int); insert into accounts values (1, 100)");
    let env = Env::new();
    let mut p = pg_repl(&env, &url);
    // BEGIN on one line, the change on the next, ROLLBACK on a third: one server session.
    p.line("pg:execute(\"begin\")");
    p.expect(PROMPT);
    p.line("pg:execute(\"update accounts set balance = 0 where id = 1\")");
    p.expect("\n1\n");
    p.line("pg:scalar(\"select balance from accounts where id = 1\")");
    p.expect("\n0\n");
    p.line("pg:execute(\"rollback\")");
    p.expect(PROMPT);
    p.line("pg:scalar(\"select balance from accounts where id = 1\")");
    p.expect("\n100\n");
    // Arrays and JSON stay in their columns, in the query's order.
    p.line("pg:query(\"select 1 as id, array[1,2,3] as ids, jsonb_build_object('a', 1) as doc, 'x' as last\")");
    let out = p.expect("(1 row)");
    assert!(out.contains("id | ids     | doc     | last"), "{out}");
    assert!(out.contains("1  | [1,2,3] | {\"a\":1} | x"), "{out}");
    // A wide value is cut in the grid and whole in the expanded display.
    p.line("pg:query(\"select repeat('w', 60) || 'END' as wide\")");
    p.expect("cells cut at 48 characters");
    p.line(":x");
    p.expect("expanded display is on");
    p.line("pg:query(\"select 7 as id, repeat('w', 60) || 'END' as wide\")");
    let out = p.expect("(1 row)");
    assert!(out.contains("-[ RECORD 1 ]-"), "{out}");
    assert!(out.contains("id   | 7") && out.contains("wwwEND"), "{out}");
    p.line(":x off");
    p.expect("expanded display is off");
    p.line(":timing");
    p.expect("timing is on");
    p.line("pg:scalar(\"select 1\")");
    p.expect("Time: ");
    p.line(":timing off");
    p.expect("timing is off");
    p.line(":watch pg:scalar(\"select 'tick'\") 200ms");
    p.expect("(Ctrl-C stops)");
    p.expect("tick");
    p.expect("(Ctrl-C stops)");
    p.send(CTRL_C);
    p.expect_within("watched ", Duration::from_secs(10));
    p.quit();
}

#[test]
fn a_result_longer_than_the_screen_goes_through_the_pager() {
    let env = Env::new();
    let mut c = repl_cmd(&env, &[]);
    // A pager that keeps what it was given: the test reads it back.
    c.env("RUNBOOK_PAGER", format!("cat > {}", env.path("paged").display()));
    let mut p = Pty::spawn(c);
    p.expect(PROMPT);
    p.line("local t = {} for i = 1, 80 do t[i] = { n = i } end return t");
    p.expect(PROMPT);
    p.line("{ a = 1 }");
    p.expect("a = 1");
    p.line(":pager off");
    p.expect("pager is off");
    p.line("local t = {} for i = 1, 80 do t[i] = { n = i * 2 } end return t");
    p.expect("(80 rows)");
    p.quit();
    let paged = env.read("paged");
    assert!(paged.starts_with("n\n--\n1\n2\n") && paged.contains("(80 rows)"), "{paged}");
    assert!(!paged.contains("160"), "with the pager off, the second result printed directly: {paged}");
}
