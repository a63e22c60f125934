//! Runs, failures, resume, retries, timeouts, rollback.
use crate::harness::Env;

const LEDGER: &str = r#"
local function mark(line) exec{shell = "echo '" .. line .. "' >> ledger", echo = false} end
"#;

fn ledger(env: &Env) -> Vec<String> {
    env.read("ledger").lines().map(str::to_string).collect()
}

#[test]
fn a_failed_run_resumes_at_the_failed_step_and_never_repeats_a_completed_one() {
    let env = Env::new();
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "deploy" }}
{LEDGER}
local first = step("one", function() mark("one"); return {{ value = 41 }} end)
step("two", function()
  mark("two")
  exec{{"test", "-f", "ready"}}
  return first.value + 1
end)
step("three", function() mark("three") end)
"#
        ),
    );
    let r = env.run(&["run", "rb.lua"]);
    r.assert_code(1);
    assert!(r.stderr.contains("rb.lua:8: step 'two': exec: `test -f ready` exited with code 1"), "{}", r.stderr);
    let show = env.show("last");
    assert_eq!(show["status"], "failed");
    assert_eq!(Env::step(&show, "one")["status"], "succeeded");
    assert_eq!(Env::step(&show, "two")["status"], "failed");
    assert!(Env::step(&show, "two")["error"].as_str().unwrap().starts_with("rb.lua:8: step 'two'"));

    env.write("ready", "");
    env.run(&["resume", "last"]).assert_code(0);
    let show = env.show("last");
    assert_eq!(show["status"], "succeeded");
    assert_eq!(Env::step(&show, "two")["result"], 42);
    assert_eq!(Env::step(&show, "two")["attempts"], 2);
    assert_eq!(ledger(&env), ["one", "two", "two", "three"]);
}

#[test]
fn rollback_runs_undos_in_reverse_order_each_journaled() {
    let env = Env::new();
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "rb", rollback = "auto" }}
{LEDGER}
for _, n in ipairs({{"a", "b", "c"}}) do
  step("make " .. n, {{ undo = function(r) mark("undo " .. r.made) end }}, function() mark(n); return {{ made = n }} end)
end
step("no undo", function() mark("plain") end)
step("boom", function() error("disk full") end)
"#
        ),
    );
    let r = env.run(&["run", "rb.lua"]);
    r.assert_code(1);
    assert_eq!(ledger(&env), ["a", "b", "c", "plain", "undo c", "undo b", "undo a"]);
    let show = env.show("last");
    assert_eq!(show["status"], "rolled_back");
    for n in ["a", "b", "c"] {
        assert_eq!(Env::step(&show, &format!("make {n}"))["undo_status"], "done");
    }
    assert!(show["error"].as_str().unwrap().contains("rb.lua:9: step 'boom': disk full"), "{show}");
}

#[test]
fn an_interrupted_rollback_resumes_without_running_any_undo_twice() {
    let env = Env::new();
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "rb", rollback = "auto" }}
{LEDGER}
step("a", {{ undo = function() mark("undo a") end }}, function() mark("a") end)
step("b", {{ undo = function()
  mark("undo b attempt")
  exec{{"test", "-f", "undo-ok"}}
  mark("undo b")
end }}, function() mark("b") end)
step("c", {{ undo = function() mark("undo c") end }}, function() mark("c") end)
step("fail", function() error("migration broke") end)
"#
        ),
    );
    env.run(&["run", "rb.lua"]).assert_code(1);
    assert_eq!(env.status("last"), "rollback_failed");
    assert_eq!(ledger(&env), ["a", "b", "c", "undo c", "undo b attempt"]);
    env.write("undo-ok", "");
    let r = env.run(&["resume", "last"]);
    r.assert_code(1);
    assert_eq!(env.status("last"), "rolled_back");
    assert_eq!(ledger(&env), ["a", "b", "c", "undo c", "undo b attempt", "undo b attempt", "undo b", "undo a"]);
}

#[test]
fn retries_with_backoff_count_attempts_and_pass_the_attempt_number() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "retry" }
local seen = {}
step("flaky", { retries = 3, backoff = { base = "10ms", max = "50ms" } }, function(attempt)
  seen[#seen + 1] = attempt
  if attempt < 3 then error("not yet " .. attempt) end
  return { attempt = attempt }
end)
step("report", function() return seen end)
"#,
    );
    let r = env.run(&["run", "rb.lua", "--output", "json"]);
    r.assert_code(0);
    let retries: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["event"] == "step_retry")
        .collect();
    assert_eq!(retries.len(), 2);
    assert!(retries[0]["error"].as_str().unwrap().contains("not yet 1"));
    // Equal jitter: attempt n waits between half and all of min(base * 2^(n-1), max).
    let d1 = retries[0]["delay_ms"].as_u64().unwrap();
    let d2 = retries[1]["delay_ms"].as_u64().unwrap();
    assert!((5..=10).contains(&d1), "first delay {d1}ms");
    assert!((10..=20).contains(&d2), "second delay {d2}ms");
    let show = env.show("last");
    assert_eq!(Env::step(&show, "flaky")["attempts"], 3);
    assert_eq!(Env::step(&show, "report")["result"], serde_json::json!([1, 2, 3]));
    // The delay is waited, not only reported: the next attempt starts after it.
    let events: Vec<serde_json::Value> = r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ts = |e: &serde_json::Value| chrono_ms(e["ts"].as_str().unwrap());
    for (i, e) in events.iter().enumerate().filter(|(_, e)| e["event"] == "step_retry") {
        let next = events[i + 1..].iter().find(|n| n["event"] == "step_started").unwrap();
        assert!(ts(next) - ts(e) + 1 >= e["delay_ms"].as_i64().unwrap(), "{e} then {next}");
    }
}

#[test]
fn exhausted_retries_fail_the_run_with_the_last_error() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "r" }
step("always", { retries = 1, backoff = "1ms" }, function(a) error("attempt " .. a .. " failed") end)
"#,
    );
    let r = env.run(&["run", "rb.lua"]);
    r.assert_code(1);
    assert!(r.stderr.contains("rb.lua:2: step 'always': attempt 2 failed"), "{}", r.stderr);
    assert_eq!(Env::step(&env.show("last"), "always")["attempts"], 2);
}

#[test]
fn timeouts_stop_waiting_steps_commands_and_pure_lua_loops() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "t" }
step("sleepy", { timeout = "200ms", continue_on_error = true }, function() sleep("10s") end)
step("command", { timeout = "200ms", continue_on_error = true }, function() exec{"sleep", "10"} end)
step("spin", { timeout = "200ms", continue_on_error = true }, function() while true do end end)
step("exec timeout", { continue_on_error = true }, function() exec{"sleep", "10", timeout = "100ms"} end)
step("group a", { timeout = "200ms", continue_on_error = true }, function() exec{"sh", "-c", "sleep 1; touch leaked-a"} end)
step("group b", { continue_on_error = true }, function() exec{"sh", "-c", "sleep 1; touch leaked-b", timeout = "200ms"} end)
"#,
    );
    let started = std::time::Instant::now();
    env.run(&["run", "rb.lua"]).assert_code(0);
    let show = env.show("last");
    for name in ["sleepy", "command", "spin"] {
        let s = Env::step(&show, name);
        assert_eq!(s["status"], "failed", "{name}");
        assert!(s["error"].as_str().unwrap().contains("timed out"), "{name}: {s}");
    }
    assert!(Env::step(&show, "exec timeout")["error"].as_str().unwrap().contains("timed out after 100ms"));
    // Not a timing assertion on the product, only a guard that nothing waited its full 10s.
    assert!(started.elapsed() < std::time::Duration::from_secs(9));
    // The whole process group died with the timeout: nothing it started finishes later.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        !env.path("leaked-a").exists() && !env.path("leaked-b").exists(),
        "a timed-out command's children outlived it"
    );
}

#[test]
fn when_skips_and_continue_on_error_goes_on() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "w" }
local a = step("skipped", { when = false }, function() return 1 end)
local b = step("by function", { when = function() return a == nil end }, function() return "ran" end)
step("false by function", { when = function() return false end }, function() exec{"touch", "must-not-exist"} end)
local c = step("fails", { continue_on_error = true }, function() error("ignored") end)
step("after", function() return { b = b, c_is_nil = c == nil } end)
"#,
    );
    env.run(&["run", "rb.lua"]).assert_code(0);
    let show = env.show("last");
    assert_eq!(Env::step(&show, "skipped")["status"], "skipped");
    assert_eq!(Env::step(&show, "false by function")["status"], "skipped");
    assert!(!env.path("must-not-exist").exists(), "a `when` returning false must not run the step");
    assert_eq!(Env::step(&show, "fails")["status"], "failed");
    assert_eq!(Env::step(&show, "after")["result"], serde_json::json!({"b": "ran", "c_is_nil": true}));
}

#[test]
fn results_round_trip_through_the_journal_with_null_kept() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "types" }
local r = step("produce", function()
  return { int = 7, float = 1.5, text = "héllo", yes = true, list = {1, 2, 3}, nested = { gone = null }, big = 9007199254740993 }
end)
step("consume", function()
  assert(math.type(r.int) == "integer", "int stays an integer")
  assert(r.nested.gone == null, "null survives")
  local keys = 0
  for _ in pairs(r.nested) do keys = keys + 1 end
  return { keys = keys, sum = r.list[1] + r.list[2] + r.list[3], big = r.big }
end)
"#,
    );
    env.run(&["run", "rb.lua"]).assert_code(0);
    let show = env.show("last");
    let produced = &Env::step(&show, "produce")["result"];
    assert_eq!(produced["nested"], serde_json::json!({"gone": null}));
    assert_eq!(produced["float"], 1.5);
    assert_eq!(
        Env::step(&show, "consume")["result"],
        serde_json::json!({"keys": 1, "sum": 6, "big": 9007199254740993i64})
    );
}

#[test]
fn a_result_that_cannot_be_stored_is_an_error_naming_the_step_and_the_value() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "ns" }
step("returns a function", function() return { ok = true, cb = { fn = function() end } } end)
"#,
    );
    let r = env.run(&["run", "rb.lua"]);
    r.assert_code(1);
    assert!(r.stderr.contains("rb.lua:2: step 'returns a function': result.cb.fn is a function"), "{}", r.stderr);
    env.write("rb.lua", "runbook { name = \"ns\" }\nstep(\"cycle\", function() local t = {}; t.t = t; return t end)\n");
    let r = env.run(&["run", "rb.lua"]);
    r.assert_code(1);
    assert!(r.stderr.contains("step 'cycle'") && r.stderr.contains("nested more than"), "{}", r.stderr);
}

#[test]
fn duplicate_step_names_are_an_error_naming_both_lines() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "dup" }
for _, t in ipairs({"users", "orders"}) do
  step("vacuum", function() return t end)
end
"#,
    );
    let r = env.run(&["run", "rb.lua"]);
    r.assert_code(2);
    assert!(r.stderr.contains("rb.lua:3: duplicate step name 'vacuum' (first at rb.lua:3)"), "{}", r.stderr);
    assert!(r.stderr.contains("loop key"), "{}", r.stderr);
    assert_eq!(r.stderr.matches("duplicate step name").count(), 1, "printed once: {}", r.stderr);
}

#[test]
fn dry_run_evaluates_steps_but_no_mutating_primitive_acts() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "dry" }
local r = step("look", function() return exec{"echo", "looking", readonly = true}.stdout end)
step("touch", function() exec{"touch", "created-by-dry-run"}; return r end)
"#,
    );
    let out = env.run(&["run", "rb.lua", "--dry-run"]);
    out.assert_code(0);
    assert!(out.stdout.contains("would run `touch created-by-dry-run`"), "{}", out.stdout);
    assert!(!env.path("created-by-dry-run").exists());
    let show = env.show("last");
    assert_eq!(show["status"], "dry_run");
    assert_eq!(show["dry_run"], true);
    assert_eq!(Env::step(&show, "look")["result"], "looking\n");
    assert_eq!(Env::step(&show, "touch")["status"], "dry_run");
    let r = env.run(&["resume", "last"]);
    r.assert_code(2);
    assert!(r.stderr.contains("already ended (dry_run)"), "{}", r.stderr);
}

#[test]
fn sigterm_interrupts_gracefully_and_the_run_resumes() {
    let env = Env::new();
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "term" }}
{LEDGER}
step("first", function() mark("first") end)
step("long", function() mark("long"); exec{{shell = "test -f fast || sleep 30"}} end)
step("last", function() mark("last") end)
"#
        ),
    );
    let child = env.spawn(&["run", "rb.lua"]);
    wait_for(|| env.read("ledger").contains("long"));
    crate::harness::signal(child.id(), 15);
    let out = crate::harness::finish(child, 60);
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let show = env.show("last");
    assert_eq!(show["status"], "interrupted");
    assert!(Env::step(&show, "long")["error"].as_str().unwrap().contains("interrupted by SIGTERM"));
    env.write("fast", "");
    env.run(&["resume", "last"]).assert_code(0);
    assert_eq!(ledger(&env), ["first", "long", "long", "last"]);
}

#[test]
fn cancel_stops_a_live_run_and_closes_a_stopped_one() {
    let env = Env::new();
    env.write(
        "rb.lua",
        "runbook { name = \"c\" }\nstep(\"wait\", function() exec{\"touch\", \"started\"}; sleep(\"30s\") end)\n",
    );
    let mut c = env.cmd(&["run", "rb.lua"]);
    c.env("RUNBOOK_LEASE_SECS", "1");
    let child = c.stdout(std::process::Stdio::null()).spawn().unwrap();
    wait_for(|| env.path("started").exists());
    let r = env.run(&["cancel", "last"]);
    r.assert_code(0);
    assert!(r.stdout.contains("cancellation requested"), "{}", r.stdout);
    let out = crate::harness::finish(child, 60);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(env.status("last"), "cancelled");

    env.write("fail.lua", "runbook { name = \"f\" }\nstep(\"x\", function() error(\"no\") end)\n");
    env.run(&["run", "fail.lua"]).assert_code(1);
    env.run(&["cancel", "last"]).assert_code(0);
    assert_eq!(env.status("last"), "cancelled");
    env.run(&["resume", "last"]).assert_code(2);
}

#[test]
fn resume_refuses_a_changed_runbook_unless_allowed() {
    let env = Env::new();
    env.write("rb.lua", "runbook { name = \"ch\" }\nstep(\"a\", function() end)\nstep(\"b\", function() exec{\"test\", \"-f\", \"ok\"} end)\n");
    env.run(&["run", "rb.lua"]).assert_code(1);
    env.write(
        "rb.lua",
        "runbook { name = \"ch\" }\nstep(\"a\", function() end)\nstep(\"b\", function() return 'fixed' end)\n",
    );
    let r = env.run(&["resume", "last"]);
    r.assert_code(2);
    assert!(r.stderr.contains("changed since run") && r.stderr.contains("line 3 changed"), "{}", r.stderr);
    env.run(&["resume", "last", "--allow-changed"]).assert_code(0);
    assert_eq!(Env::step(&env.show("last"), "b")["result"], "fixed");
}

#[test]
fn memory_limit_stops_a_runaway_runbook() {
    let env = Env::new();
    env.write(
        "rb.lua",
        "runbook { name = \"mem\" }\nstep(\"hog\", function() local t = {} for i = 1, 1e8 do t[i] = string.rep('x', 64) .. i end end)\n",
    );
    let r = env.run(&["run", "rb.lua", "--max-memory", "16MB"]);
    r.assert_code(1);
    assert!(r.stderr.contains("out of memory"), "{}", r.stderr);
}

#[test]
fn require_finds_stdlib_and_files_beside_the_runbook() {
    let env = Env::new();
    env.write("lib/helpers.lua", "local M = {} function M.twice(x) return 2 * x end return M\n");
    env.write(
        "rb.lua",
        r#"runbook { name = "req" }
local h = require "lib.helpers"
local util = require "runbook.util"
step("use", function() return { twice = h.twice(21), size = util.format_bytes(1536) } end)
"#,
    );
    env.run(&["run", "rb.lua"]).assert_code(0);
    assert_eq!(Env::step(&env.show("last"), "use")["result"], serde_json::json!({"twice": 42, "size": "1.5 KiB"}));
}

pub fn wait_for(cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "condition not met within 20s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_chatty_command_is_echoed_up_to_a_cap_and_returned_whole() {
    let env = Env::new();
    env.write("rb.lua", "runbook { name = \"chatty\" }\nstep(\"seq\", function() local r = exec{\"seq\", \"1\", \"5000\"}; return #r.stdout end)\n");
    let r = env.run(&["run", "rb.lua"]);
    r.assert_code(0);
    assert_eq!(r.stdout.matches("[seq] | ").count(), 2000);
    assert!(
        r.stdout.contains("3000 more output line(s) of `seq 1 5000` not shown"),
        "{}",
        &r.stdout[r.stdout.len() - 500..]
    );
    let expected: usize = (1..=5000).map(|i: usize| i.to_string().len() + 1).sum();
    assert_eq!(Env::step(&env.show("last"), "seq")["result"], expected);
}

/// Milliseconds of an RFC 3339 UTC timestamp with milliseconds ("...T03:15:02.123Z"), within the day.
fn chrono_ms(ts: &str) -> i64 {
    let time = &ts[11..23];
    let (h, m, s) = (&time[0..2], &time[3..5], &time[6..]);
    let secs: f64 = s.parse().unwrap();
    h.parse::<i64>().unwrap() * 3_600_000 + m.parse::<i64>().unwrap() * 60_000 + (secs * 1000.0).round() as i64
}
