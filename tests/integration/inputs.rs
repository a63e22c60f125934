//! Inputs as people write them: a file saved with a byte order mark, `default = {}` for a list,
//! a runbook asking whether it is a dry run, the whole statement in a dry run's report, an
//! http:// S3 endpoint, history's columns with full run ids, and errors that name the failing
//! line however the call was written.
use crate::harness::Env;

#[test]
fn a_runbook_saved_with_a_utf8_bom_runs() {
    let env = Env::new();
    env.write("rb.lua", "\u{feff}runbook { name = \"bom\" }\nstep(\"s\", function() return 1 end)\n");
    env.run(&["run", "rb.lua"]).assert_code(0);
    env.run(&["check", "rb.lua"]).assert_code(0);
}

#[test]
fn a_list_param_defaults_to_an_empty_table() {
    let env = Env::new();
    env.write(
        "rb.lua",
        "runbook { name = \"l\", params = { hosts = { type = \"list\", default = {} } } }\nstep(\"n\", function() return #params.hosts end)\n",
    );
    env.run(&["run", "rb.lua"]).assert_code(0);
    assert_eq!(Env::step(&env.show("last"), "n")["result"], 0);
}

#[test]
fn a_dry_run_knows_it_is_one_and_reports_the_whole_statement() {
    let env = Env::new();
    let long_where = (1..=30).map(|i| format!("id = {i}")).collect::<Vec<_>>().join(" or ");
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "dry" }}
local c = db.connect("sqlite::memory:")
step("mode", function() return current_run().dry_run end)
step("delete", function() c:execute("delete from sessions where {long_where}") end)
"#
        ),
    );
    let r = env.run(&["run", "rb.lua", "--dry-run"]);
    r.assert_code(0);
    assert_eq!(Env::step(&env.show("last"), "mode")["result"], true);
    assert!(r.stdout.contains("id = 30"), "the whole statement: {}", r.stdout);
    env.run(&["run", "rb.lua"]).assert_code(1);
    assert_eq!(Env::step(&env.show("last"), "mode")["result"], false);
}

#[test]
fn an_http_s3_endpoint_without_allow_http_says_what_to_set() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "s3" }
step("open", function() storage.open("s3://bucket/x", { endpoint = "http://127.0.0.1:9", region = "us-east-1" }) end)
"#,
    );
    let r = env.run(&["run", "rb.lua"]);
    r.assert_code(1);
    assert!(r.stderr.contains("set allow_http = true"), "{}", r.stderr);
}

#[test]
fn history_aligns_its_columns_for_full_run_ids() {
    let env = Env::new();
    env.write("rb.lua", "runbook { name = \"h\" }\nstep(\"s\", function() end)\n");
    env.run(&["run", "rb.lua"]).assert_code(0);
    let r = env.run(&["history"]);
    let lines: Vec<&str> = r.stdout.lines().collect();
    // A run id is 24 characters: the runbook column starts after it and a space, on every line.
    assert_eq!(lines[0].find("RUNBOOK"), Some(25), "{}", r.stdout);
    assert_eq!(lines[1].get(24..26), Some(" h"), "{}", r.stdout);
}

#[test]
fn a_change_allowed_once_is_remembered_for_the_run() {
    let env = Env::new();
    env.write("rb.lua", "runbook { name = \"c\" }\nstep(\"s\", function() exec{\"test\", \"-f\", \"go\"} end)\n");
    env.run(&["run", "rb.lua"]).assert_code(1);
    env.write(
        "rb.lua",
        "runbook { name = \"c\" }\n-- fixed\nstep(\"s\", function() exec{\"test\", \"-f\", \"go\"} end)\n",
    );
    env.run(&["resume", "last"]).assert_code(2);
    env.run(&["resume", "last", "--allow-changed"]).assert_code(1);
    // The run now continues with the changed file: no refusal at the next resume.
    env.write("go", "");
    env.run(&["resume", "last"]).assert_code(0);
}

#[test]
fn a_repl_that_reads_nothing_records_no_session() {
    let env = Env::new();
    let r = env.cmd(&["repl"]).env("RUNBOOK_HISTORY", "off").output().unwrap();
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
    let sessions = env.run(&["sessions", "--output", "json"]);
    sessions.assert_code(0);
    assert_eq!(sessions.stdout.trim(), "[]", "{}", sessions.stdout);
}

#[test]
fn an_error_in_a_returned_call_names_its_own_line_in_a_runbook_and_a_module() {
    let env = Env::new();
    env.write("lib/q.lua", "local M = {}\nfunction M.count(c)\n  return c:scalar(\"selec 2\")\nend\nreturn M\n");
    env.write(
        "rb.lua",
        r#"runbook { name = "tail" }
local c = db.connect("sqlite::memory:")
step("direct", { continue_on_error = true }, function()
  return c:scalar("selec 1")
end)
step("in a module", { continue_on_error = true }, function()
  return require("lib.q").count(c)
end)
local function spin(n) if n == 0 then return "deep" end return spin(n - 1) end
step("own recursion", function() return spin(300000) end)
"#,
    );
    let r = env.run(&["run", "rb.lua"]);
    let show = env.show("last");
    let direct = Env::step(&show, "direct")["error"].as_str().unwrap().to_string();
    assert!(direct.starts_with("rb.lua:4: step 'direct'"), "{direct}\n{}", r.stderr);
    let module = Env::step(&show, "in a module")["error"].as_str().unwrap().to_string();
    assert!(module.contains("lib/q.lua:3:"), "{module}");
    assert_eq!(Env::step(&show, "own recursion")["result"], "deep", "the runbook's own tail calls stay tail calls");
}

#[test]
fn a_parser_overflow_and_a_huge_token_are_reported_on_their_line_in_short() {
    let env = Env::new();
    let deep = format!("runbook {{ name = \"deep\" }}\n\nlocal x = {}1{}\n", "(".repeat(300), ")".repeat(300));
    env.write("deep.lua", &deep);
    let r = env.run(&["run", "deep.lua"]);
    r.assert_code(2);
    assert!(r.stderr.contains("deep.lua:3: syntax error: C stack overflow"), "{}", r.stderr);

    env.write("long.lua", &format!("runbook {{ name = \"long\" }}\nlocal x = 1{}\n", "..1".repeat(100_000)));
    let r = env.run(&["check", "long.lua"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("long.lua:2: syntax error: malformed number near '1..1"), "{}", r.stderr);
    assert!(r.stderr.len() < 2_000, "the token is cut, not printed whole: {} bytes", r.stderr.len());
}
