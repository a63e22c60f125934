//! `runbook test`: the runner's own tests, on the test files of tests/testing/: a passing suite
//! (fakes, faults, step fakes, virtual time and step timeouts on it, health checks reading the
//! body, secrets and the environment from the test, the real argument checks, assertions), tests
//! that must fail (an unfaked call, one the runbook swallowed, a wrong expectation) and a test
//! file that does not load.
use crate::harness::{Env, Run};

fn runbook_test(env: &Env, args: &[&str]) -> Run {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testing");
    let mut all = vec!["test"];
    all.extend_from_slice(args);
    // In the process's environment, never read by a test: world.lua's test checks it is not.
    env.cmd(&all).current_dir(dir).env("WORLD_API_TOKEN", "from-the-process").output().expect("run runbook test").into()
}

#[test]
fn a_passing_suite_runs_runbooks_through_the_engine_with_fakes_on_a_virtual_clock() {
    let env = Env::new();
    let r = runbook_test(&env, &["passing", "--output", "json"]);
    r.assert_code(0);
    let report: serde_json::Value =
        serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    assert_eq!(report["passed"], 20, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    let names: Vec<&str> = report["tests"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"release retries back off and waits on the virtual clock"), "{names:?}");
    assert!(
        names.contains(&"a run waits at its gate, and its resume goes on without redoing what was done"),
        "{names:?}"
    );
    assert!(names.contains(&"so does its rollback"), "{names:?}");
    // Hours of backoff and waiting, on the virtual clock: the whole file well inside seconds
    // even on a loaded machine (the figure itself is for benches, not asserted finely here).
    assert!(report["ms"].as_u64().unwrap() < 20_000, "{report}");
    // A store's `get{ to = PATH }` wrote into the test's world, never at PATH.
    assert!(!std::path::Path::new("/tmp/runbook-world-test-must-not-exist.json").exists());
    // Nothing of the runs is printed: the report is the output.
    assert!(!r.stdout.contains("started: release") && r.stderr.trim().is_empty(), "{}", r.all());
    // The filter runs the named tests and skips the rest.
    let r = runbook_test(&env, &["passing", "-k", "virtual clock"]);
    r.assert_code(0);
    assert!(r.stdout.contains("2 passed, 0 failed, 18 skipped"), "{}", r.stdout);
    // A filter that matches nothing ran nothing: not a green run.
    let r = runbook_test(&env, &["passing", "-k", "no such test"]);
    r.assert_code(2);
    assert!(r.stderr.contains("no test's name contains \"no such test\" (20 test(s) skipped)"), "{}", r.all());
}

#[test]
fn tests_that_must_fail_fail_with_the_call_the_line_and_the_difference() {
    let env = Env::new();
    let junit = env.path("report.xml");
    let r = runbook_test(&env, &["failing", "--junit", junit.to_str().unwrap()]);
    r.assert_code(1);
    // The same report as JUnit XML for CI: each failure with its first line as the message.
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml") && xml.contains("tests=\"6\" failures=\"6\""), "{xml}");
    assert!(
        xml.contains(
            "<testcase classname=\"failing/unfaked_test.lua\" name=\"a wrong expectation shows the difference\">"
        ) && xml.contains(
            "<failure message=\"failing/unfaked_test.lua:19: not equal, at .status: got &quot;succeeded&quot;"
        ),
        "{xml}"
    );
    assert!(r.stdout.contains("0 passed, 6 failed"), "{}", r.stdout);
    let failure = |name: &str| -> String {
        let at = r.stdout.find(&format!(".lua: {name}\n")).unwrap_or_else(|| panic!("{name}: {}", r.stdout));
        r.stdout[at..].lines().nth(1).unwrap_or("").trim().to_string()
    };
    // The unfaked call: the test's line, the runbook's line and step, the call, the fakes tried.
    let unfaked = failure("an unfaked call fails the test");
    assert!(
        unfaked.starts_with("failing/unfaked_test.lua:4: ")
            && unfaked.contains("release.lua:12: step 'health': unfaked call: http GET https://app.example.com/api/health (fakes tried: none)")
            && unfaked.contains("fake it in `fakes.http`"),
        "{unfaked}"
    );
    // Swallowed by the runbook's own pcall: the run succeeded, the test still fails.
    let swallowed = failure("a call the runbook catches itself still fails the test");
    assert!(
        swallowed
            .contains("unfaked call: http GET https://app.example.com/ (fakes tried: \"/api/health\", \"/ready\")"),
        "{swallowed}"
    );
    let wrong = failure("a wrong expectation shows the difference");
    assert!(
        wrong.starts_with("failing/unfaked_test.lua:19: not equal, at .status: got \"succeeded\", want \"failed\""),
        "{wrong}"
    );
    // The crash proof names the crash point and the call that a resume ran again.
    let outside = failure("a mutating call outside any step is found by the crash proof");
    assert!(
        outside.starts_with(
            "failing/crash_test.lua:2: crash proof of failing/outside.lua: 1 problem(s) over 6 crash points"
        ),
        "{outside}"
    );
    assert!(
        r.stdout.contains(
            "`exec notify deploy started` is outside any step: it ran again on resume (put it in a step): \
             crashing before journal write 2 (step 'deploy' running) (and 5 point(s) in all: 2, 3, 4, 5, 6)"
        ),
        "{}",
        r.stdout
    );
    // A step that is not safe to run twice (an insert without a guard) and an undo that is not
    // (it fails once what it removes is gone): each crash point where a resume ran them again.
    assert!(
        r.stdout.contains(
            "the run ended rolled_back, succeeded without the crash: crashing before journal write 3 (step 'order' succeeded)"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(
            "the run ended rollback_failed, rolled_back without the crash: crashing before journal write 11 (undo of 'feature flag' done)"
        ),
        "{}",
        r.stdout
    );
    // Nothing of a crash point's journal shows: a test's runs say nothing.
    assert!(!r.stderr.contains("could not journal"), "{}", r.stderr);
    // No journal, no command, no request left the test: the runs' journals were the test's own.
    assert!(!std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testing/.runbook").exists());
}

#[test]
fn with_crash_every_run_of_the_suite_gets_its_crash_proof() {
    let env = Env::new();
    // The passing suite holds at every crash point of every run (retries included: the fakes'
    // answers go on after a crash, as the world does).
    let r = runbook_test(&env, &["passing", "--crash"]);
    r.assert_code(0);
    assert!(r.stdout.contains("20 passed, 0 failed"), "{}", r.stdout);
    // A test that passes plainly fails under --crash: its runbook calls exec outside its steps.
    runbook_test(&env, &["crash"]).assert_code(0);
    let r = runbook_test(&env, &["crash", "--crash"]);
    r.assert_code(1);
    assert!(
        r.stdout.contains(
            "crash/outside_test.lua:3: crash proof of crash/../failing/outside.lua: 1 problem(s) over 6 crash points"
        ),
        "{}",
        r.stdout
    );
}

#[test]
fn coverage_names_what_no_test_reached_in_each_runbook() {
    let env = Env::new();
    let r = runbook_test(&env, &["passing", "--coverage", "--output", "json"]);
    r.assert_code(0);
    let report: serde_json::Value =
        serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    let of = |name: &str| -> serde_json::Value {
        report["coverage"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["runbook"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name}: {report}"))
    };
    // world.lua's report step has a `when` no test made true.
    let world = of("passing/world.lua");
    assert_eq!(world["steps"], serde_json::json!([7, 8]), "{world}");
    assert_eq!(world["branches"], serde_json::json!([1, 2]), "{world}");
    assert_eq!(
        world["missed"],
        serde_json::json!(["line 39: step 'report' never ran", "line 39: the `when` of 'report' was never true"]),
        "{world}"
    );
    // release.lua's migration undo ran in a test; its gate-less plan is covered whole.
    let release = of("passing/release.lua");
    assert_eq!(release["undos"], serde_json::json!([1, 1]), "{release}");
    assert_eq!(release["missed"], serde_json::json!([]), "{release}");
}

#[test]
fn a_journaled_run_becomes_a_test_that_passes() {
    let env = Env::new();
    env.write(
        "incident.lua",
        r#"runbook { name = "incident", params = { url = { type = "secret", env = "DB_URL", required = true },
                                        hosts = { type = "list" } } }
local found = step("find", function() return { rows = 3, hosts = params.hosts } end)
step("fix", function() error('could not obtain lock on relation orders') end)
"#,
    );
    let r = env.run_env(&["run", "incident.lua", "-p", "hosts=a,b"], &[("DB_URL", "postgres://u:hunter2@db/app")]);
    r.assert_code(1);
    let r = env.run(&["test", "--from-run", "last"]);
    r.assert_code(0);
    let skeleton = r.stdout;
    assert!(!skeleton.contains("hunter2"), "{skeleton}");
    assert!(skeleton.contains("REPLACE: <secret:url>"), "{skeleton}");
    assert!(skeleton.contains(r#"["find"] = { result = { hosts = { "a", "b" }, rows = 3 } },"#), "{skeleton}");
    assert!(skeleton.contains(r#"expect(r.status).to_be("failed")"#), "{skeleton}");
    std::fs::write(env.path("incident_test.lua"), &skeleton).unwrap();
    let r = env.run(&["test", "incident_test.lua"]);
    r.assert_code(0);
    assert!(r.stdout.contains("1 passed, 0 failed"), "{}", r.stdout);
}

#[test]
fn every_shipped_runbook_has_tests_that_pass_at_every_crash_point() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let runbooks = root.join("runbooks");
    for e in std::fs::read_dir(&runbooks).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        if name.ends_with(".lua") && !name.ends_with("_test.lua") && text.lines().any(|l| l.starts_with("runbook {")) {
            let test = runbooks.join(name.replace(".lua", "_test.lua"));
            assert!(test.is_file(), "{name} has no test file beside it ({})", test.display());
        }
    }
    let env = Env::new();
    let r: Run =
        env.cmd(&["test", "runbooks", "--crash", "--output", "json"]).current_dir(root).output().unwrap().into();
    r.assert_code(0);
    let report: serde_json::Value =
        serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", r.stdout));
    assert_eq!(report["failed"], 0, "{report}");
    assert!(report["passed"].as_u64().unwrap() >= 85, "{report}");
}

#[test]
fn a_test_file_that_does_not_load_is_bad_input_with_its_line() {
    let env = Env::new();
    let r = runbook_test(&env, &["broken"]);
    r.assert_code(2);
    assert!(r.stdout.contains("ERROR broken/syntax_test.lua:4: syntax error"), "{}", r.stdout);
    let r = runbook_test(&env, &["no-such-folder"]);
    r.assert_code(2);
    assert!(r.stderr.contains("no-such-folder: no such file or folder"), "{}", r.all());
}

#[test]
fn init_scaffolds_a_project_whose_tests_pass_and_never_writes_over_a_file() {
    let env = Env::new();
    env.run(&["init", "ops"]).assert_code(0);
    for f in [
        "runbook.toml",
        "hello.lua",
        "hello_test.lua",
        "README.md",
        ".luarc.json",
        "types/runbook.lua",
        "types/test.lua",
    ] {
        assert!(env.path("ops").join(f).is_file(), "{f} missing");
    }
    let luarc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("ops/.luarc.json")).unwrap()).unwrap();
    assert_eq!(luarc["workspace.library"][0], "types");
    // The scaffold's tests pass, crash proof included, with nothing installed.
    let r: crate::harness::Run =
        env.cmd(&["test", "--crash"]).current_dir(env.path("ops")).output().expect("runbook test").into();
    r.assert_code(0);
    assert!(r.stdout.contains("4 passed, 0 failed"), "{}", r.stdout);
    // A second init stops at the first file that exists, and writes nothing.
    std::fs::write(env.path("ops/hello.lua"), "-- mine\n").unwrap();
    let r = env.run(&["init", "ops"]);
    r.assert_code(2);
    assert!(r.stderr.contains("exist already, nothing was written") && r.stderr.contains("hello.lua"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(env.path("ops/hello.lua")).unwrap(), "-- mine\n");
    // `runbook stubs` writes the stubs of the source tree, as they are, over earlier stubs but
    // never over a file of the user's.
    env.run(&["stubs", "editor"]).assert_code(0);
    env.run(&["stubs", "editor"]).assert_code(0);
    env.write("mine/test.lua", "print('my own test.lua')\n");
    let r = env.run(&["stubs", "mine"]);
    r.assert_code(2);
    assert!(r.stderr.contains("not stubs (no ---@meta), nothing was written"), "{}", r.stderr);
    assert_eq!(env.read("mine/test.lua"), "print('my own test.lua')\n");
    assert!(!env.path("mine/runbook.lua").exists());
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("stdlib/types");
    for f in ["runbook.lua", "runbook/deploy.lua", "runbook/scale.lua", "test.lua", "repl.lua"] {
        assert_eq!(
            std::fs::read_to_string(env.path("editor").join(f)).unwrap(),
            std::fs::read_to_string(repo.join(f)).unwrap(),
            "{f}"
        );
    }
}
