//! Typed params from -p, --params-file and the environment; every problem reported at once.
use crate::harness::Env;

const RB: &str = r#"runbook {
  name = "p",
  params = {
    count   = { type = "integer", default = 3, min = 1, max = 10, description = "how many" },
    ratio   = { type = "number", default = 0.5 },
    mode    = { type = "enum", choices = { "fast", "safe" }, required = true },
    host    = { type = "string", pattern = "[a-z0-9-]+", required = true },
    wait    = { type = "duration", default = "5s", max = "1h" },
    hosts   = { type = "list", default = { "a" } },
    force   = { type = "boolean", default = false },
    token   = { type = "secret", env = "P_TOKEN" },
    region  = { type = "string", env = "P_REGION", default = "eu" },
  },
}
step("echo", function()
  return { count = params.count * 2, ratio = params.ratio, mode = params.mode, host = params.host, wait = params.wait,
           hosts = params.hosts, n_hosts = #params.hosts, force = params.force, region = params.region,
           token = params.token and tostring(params.token) or "none" }
end)
"#;

#[test]
fn every_wrong_or_missing_param_is_reported_together_before_any_step() {
    let env = Env::new();
    env.write("rb.lua", RB);
    let r = env.run(&[
        "run",
        "rb.lua",
        "-p",
        "count=50",
        "-p",
        "ratio=x",
        "-p",
        "wait=5y",
        "-p",
        "force=maybe",
        "-p",
        "nope=1",
    ]);
    r.assert_code(2);
    for expected in [
        "param 'count' from -p: value 50 is above the maximum 10",
        "param 'ratio' from -p: expected a number",
        "param 'wait' from -p: invalid duration '5y'",
        "param 'force' from -p: expected true or false",
        "unknown param 'nope'",
        "param 'mode' (enum) is required",
        "param 'host' (string) is required",
    ] {
        assert!(r.stderr.contains(expected), "missing `{expected}` in:\n{}", r.stderr);
    }
    // Nothing ran, nothing was journaled.
    let h = env.run(&["history", "--output", "json"]);
    assert_eq!(h.stdout.trim(), "[]");
}

#[test]
fn values_come_typed_from_flags_file_and_environment() {
    let env = Env::new();
    env.write("rb.lua", RB);
    env.write("prod.toml", "mode = \"safe\"\nhosts = [\"web-1\", \"web-2\"]\ncount = 4\n");
    let r = env.run_env(
        &["run", "rb.lua", "--params-file", "prod.toml", "-p", "host=db-1", "-p", "count=5", "-p", "force=yes"],
        &[("P_REGION", "us"), ("P_TOKEN", "tok-123456")],
    );
    r.assert_code(0);
    let show = env.show("last");
    let result = &Env::step(&show, "echo")["result"];
    assert_eq!(result["count"], 10, "-p wins over the file");
    assert_eq!(result["mode"], "safe");
    assert_eq!(result["hosts"], serde_json::json!(["web-1", "web-2"]));
    assert_eq!(result["n_hosts"], 2);
    assert_eq!(result["force"], true);
    assert_eq!(result["region"], "us");
    assert_eq!(result["wait"], "5s");
    assert_eq!(result["token"], "<secret:token>");
    assert_eq!(show["params"]["token"], "<secret:token>");
    assert_eq!(show["params"]["count"], 5);
}

#[test]
fn a_bad_params_file_is_reported_with_its_line() {
    let env = Env::new();
    env.write("rb.lua", RB);
    env.write("bad.toml", "mode = \"safe\"\nhost = \n");
    let r = env.run(&["run", "rb.lua", "--params-file", "bad.toml"]);
    r.assert_code(2);
    assert!(r.stderr.contains("params file bad.toml") && r.stderr.contains("line 2"), "{}", r.stderr);
}

#[test]
fn resume_keeps_the_params_and_asks_again_for_secrets() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "rs", params = { n = { type = "integer", required = true }, pw = { type = "secret", env = "RS_PW", required = true } } }
step("a", function() return params.n end)
step("b", function() exec{"test", "-f", "go"}; return params.n + 1 end)
"#,
    );
    env.run_env(&["run", "rb.lua", "-p", "n=7"], &[("RS_PW", "hunter2-long")]).assert_code(1);
    env.write("go", "");
    let r = env.run(&["resume", "last"]);
    r.assert_code(2);
    assert!(r.stderr.contains("param 'pw' (secret) is required") && r.stderr.contains("give it again"), "{}", r.stderr);
    let r = env.run_env(&["resume", "last", "-p", "n=8"], &[("RS_PW", "hunter2-long")]);
    r.assert_code(2);
    assert!(r.stderr.contains("cannot change when resuming"), "{}", r.stderr);
    env.run_env(&["resume", "last"], &[("RS_PW", "hunter2-long")]).assert_code(0);
    assert_eq!(Env::step(&env.show("last"), "b")["result"], 8);
}

#[test]
fn a_secret_on_the_command_line_is_refused_and_a_param_given_twice_too() {
    let env = Env::new();
    env.write("rb.lua", RB);
    let r = env.run(&["run", "rb.lua", "-p", "mode=fast", "-p", "host=h", "-p", "token=abcdef123"]);
    r.assert_code(2);
    assert!(r.stderr.contains("param 'token' is a secret and cannot be given with -p"), "{}", r.stderr);
    assert!(!r.all().contains("abcdef123"));
    let r = env.run(&["run", "rb.lua", "-p", "mode=fast", "-p", "host=h", "-p", "host=i"]);
    r.assert_code(2);
    assert!(r.stderr.contains("param 'host' is given 2 times with -p"), "{}", r.stderr);
}
