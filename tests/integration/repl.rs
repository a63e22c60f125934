//! `runbook repl` driven in a real pseudo-terminal: evaluation, completion, Ctrl-C, history,
//! query tables, attaching to a failed run to retry, skip and resume it, and the session record.
use std::process::Command;
use std::time::Duration;

use crate::harness::Env;
use crate::pty::{Pty, CTRL_C, CTRL_U, TAB, UP};
use crate::servers;

const PROMPT: &str = "runbook> ";

fn repl_cmd(env: &Env, args: &[&str]) -> Command {
    let mut all = vec!["repl"];
    all.extend_from_slice(args);
    let mut c = env.cmd(&all);
    c.env("RUNBOOK_HISTORY", env.path("history")).env("USER", "oncall").env("RUNBOOK_HOSTNAME", "bastion");
    c
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
    p.send("db.");
    p.send(TAB);
    std::thread::sleep(Duration::from_millis(100));
    p.send(TAB);
    p.expect("connect(");
    p.send(CTRL_U);
    // A unique prefix completes in place.
    p.send("ssh.gr");
    p.send(TAB);
    p.expect("ssh.group");
    p.send(CTRL_U);
    p.enter("conn = db.connect(\"sqlite::memory:\")");
    p.expect(PROMPT);
    // Methods of the connection held in `conn`.
    p.wait_prompt();
    p.send("conn:");
    p.send(TAB);
    std::thread::sleep(Duration::from_millis(100));
    p.send(TAB);
    let listed = p.expect("scalar(");
    for m in ["execute(", "query(", "query_one("] {
        assert!(listed.contains(m), "{m} not listed:\n{listed}");
    }
    p.send(CTRL_U);
    // After `name(`: the function's signature as a hint.
    p.send("db.connect(");
    p.expect("url: string|Secret");
    p.send(CTRL_U);
    p.send("conn:query(");
    p.expect("sql: string");
    p.send(CTRL_U);
    // Inventory group names inside ssh.group(", and the inventory table.
    p.send("ssh.group(\"wo");
    p.send(TAB);
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
    p.send(":ret");
    p.send(TAB);
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
    // At the prompt, Ctrl-C clears the line being typed.
    p.wait_prompt();
    p.send("this is not sent");
    p.send(CTRL_C);
    p.expect(PROMPT);
    // During a 30 s sleep it cancels the call (the wait below is far shorter than the sleep).
    p.line("sleep(\"30s\")");
    std::thread::sleep(Duration::from_millis(300));
    p.send(CTRL_C);
    p.expect_within("interrupted (Ctrl-C); the session is intact", Duration::from_secs(10));
    p.expect(PROMPT);
    // An HTTP health wait against a port nothing listens on.
    p.line("http.wait_healthy(\"http://127.0.0.1:9/health\", { timeout = \"60s\", interval = \"1s\" })");
    std::thread::sleep(Duration::from_millis(500));
    p.send(CTRL_C);
    p.expect_within("interrupted (Ctrl-C)", Duration::from_secs(10));
    // And a pure-Lua loop.
    p.line("while true do end");
    std::thread::sleep(Duration::from_millis(300));
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
    p.send("\x12");
    p.send("same = ");
    p.expect("<secret:db_password>");
    p.send(CTRL_C);
    p.expect(PROMPT);
    p.quit();

    // Nor in the session record.
    let shown = env.run(&["sessions", "show", "last", "--output", "json"]);
    shown.assert_code(0);
    let all = env.run(&["sessions", "--output", "json"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&all.stdout).unwrap().as_array().unwrap().len(), 2);
    let first = serde_json::from_str::<serde_json::Value>(&all.stdout).unwrap()[1]["id"].as_str().unwrap().to_string();
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
    let mut c = repl_cmd(&env, &[]);
    c.env("PG_URL", &url);
    let mut p = Pty::spawn(c);
    p.expect(PROMPT);
    p.line("pg = db.connect(secret{ env = \"PG_URL\", name = \"pg_url\" })");
    p.expect(PROMPT);
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
