//! A secret's value never appears in stdout, stderr, JSON events or the journal file.
use crate::harness::{contains_bytes, journal_bytes, Env};

const VALUE: &str = "s3cr3t-Pa55w0rd-xyz";

#[test]
fn a_secret_value_never_reaches_output_events_or_the_journal() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "sec", params = { token = { type = "secret", env = "API_TOKEN", required = true } } }
local pw = secret("DB_PASSWORD")
local url = "postgres://app:" .. pw .. "@db:5432/app"
log.info("connecting", { url = url, token = params.token })
print("token is", params.token, "url is", url)
step("echo through a command", function()
  local r = exec{"sh", "-c", "echo token=$TOKEN; echo pw=$PW >&2", env = { TOKEN = params.token, PW = pw }}
  return { out = r.stdout, err = r.stderr, url = tostring(url) }
end)
step("argv is refused", { continue_on_error = true }, function()
  exec{"echo", params.token}
end)
step("stdin is fine", function()
  return exec{"cat", stdin = pw}.stdout
end)
step("error quoting it", { continue_on_error = true }, function()
  local r = exec{"sh", "-c", "echo $PW", env = { PW = pw }}
  error("login failed for " .. r.stdout)
end)
"#,
    );
    let envs = [("API_TOKEN", "tok-"), ("DB_PASSWORD", VALUE)];
    let token = format!("{}{}", envs[0].1, "0123456789abcdef");
    for format in ["text", "json"] {
        let r = env.run_env(&["run", "rb.lua", "--output", format], &[("API_TOKEN", &token), ("DB_PASSWORD", VALUE)]);
        r.assert_code(0);
        for leaked in [VALUE, token.as_str()] {
            assert!(!r.all().contains(leaked), "{format} output leaked a secret:\n{}", r.all());
        }
        assert!(r.all().contains("<secret:DB_PASSWORD>"), "{}", r.all());
        assert!(r.all().contains("<secret:token>"), "{}", r.all());
    }
    let show = env.show("last");
    let refused = Env::step(&show, "argv is refused")["error"].as_str().unwrap().to_string();
    assert!(refused.contains("process list") && refused.contains("secret 'token'"), "{refused}");
    assert_eq!(Env::step(&show, "stdin is fine")["result"], "<secret:DB_PASSWORD>");
    let echoed = &Env::step(&show, "echo through a command")["result"];
    assert_eq!(echoed["out"], "token=<secret:token>\n");
    assert_eq!(echoed["url"], "<secret:DB_PASSWORD>");
    let events = env.run(&["show", "last", "--events", "--output", "json"]);
    events.assert_code(0);
    assert!(
        events.stdout.contains("\"event\":\"log\"") && events.stdout.contains("<secret:DB_PASSWORD>"),
        "{}",
        events.stdout
    );
    assert!(!events.stdout.contains(VALUE) && !events.stdout.contains(&token));
    let bytes = journal_bytes(&env.journal_path());
    assert!(!bytes.is_empty());
    assert!(!contains_bytes(&bytes, VALUE.as_bytes()), "the journal file holds the secret");
    assert!(!contains_bytes(&bytes, token.as_bytes()), "the journal file holds the token");
}

#[test]
fn the_journal_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.write("rb.lua", "runbook { name = \"perm\" }\nstep(\"a\", function() end)\n");
    env.run(&["run", "rb.lua"]).assert_code(0);
    let mode = std::fs::metadata(env.journal_path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir = std::fs::metadata(env.path(".runbook")).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir, 0o700);
}

/// Every place a secret could end up: run, resume, plan, doc, show, history, the journal and its
/// WAL, the metrics file and the REPL history; secrets from the environment, a file of short
/// lines, and one declared late (after a param already held its value).
#[test]
fn no_output_file_or_journal_holds_a_secret_whatever_its_source() {
    let env = Env::new();
    let from_env = "env-Secret-4711-value";
    let short_pass = "Hunter2-xyz";
    let late = "late-Declared-9911";
    env.write("creds.txt", &format!("user: deploy-bot\npass: {short_pass}\n"));
    env.write(
        "rb.lua",
        r#"-- The secret is read before the declaration; a plain param reads the same variable.
local pw = secret("APP_PW")
runbook {
  name = "everywhere",
  params = { plain = { type = "string", env = "APP_PW", description = "the same variable, by mistake" },
             late_plain = { type = "string", env = "LATE_PW" } },
}
local creds = secret{ file = "creds.txt", name = "creds" }
approve("Rotate with " .. os.getenv("APP_PW") .. "?")
step("print a file of short lines", function() return exec{"cat", "creds.txt"}.stdout end)
step("leak a param", function() print("plain is " .. params.plain); return params.late_plain end)
local late = secret("LATE_PW")
step("after the late one", function() exec{"test", "-f", "go"}; return "done" end)
"#,
    );
    let envs = [("APP_PW", from_env), ("LATE_PW", late)];
    let mut seen = String::new();
    for args in [
        vec!["plan", "rb.lua"],
        vec!["plan", "rb.lua", "--output", "json"],
        vec!["doc", "rb.lua"],
        vec!["check", "rb.lua"],
    ] {
        let r = env.run_env(&args, &envs);
        r.assert_code(0);
        seen.push_str(&r.all());
    }
    let metrics = env.path("m.prom").display().to_string();
    let r = env.run_env(&["run", "rb.lua", "--yes", "--metrics-file", &metrics], &envs);
    r.assert_code(1);
    seen.push_str(&r.all());
    env.write("go", "");
    let r = env.run_env(&["resume", "last", "--metrics-file", &metrics], &envs);
    seen.push_str(&r.all());
    for args in [
        vec!["show", "last", "--events"],
        vec!["show", "last", "--output", "json", "--events"],
        vec!["history"],
        vec!["history", "--output", "json"],
    ] {
        seen.push_str(&env.run_env(&args, &envs).all());
    }
    seen.push_str(&env.read("m.prom"));
    // The REPL, its session record and its history file.
    let history = env.path("repl-history");
    let mut repl = env
        .cmd(&["repl"])
        .envs(envs)
        .env("RUNBOOK_HISTORY", &history)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = repl.stdin.take().unwrap();
        writeln!(stdin, "local s = secret('APP_PW')").unwrap();
        writeln!(stdin, "os.getenv('APP_PW')").unwrap();
    }
    let out = crate::harness::finish(repl, 30);
    seen.push_str(&String::from_utf8_lossy(&out.stdout));
    seen.push_str(&String::from_utf8_lossy(&out.stderr));
    seen.push_str(&std::fs::read_to_string(&history).unwrap_or_default());
    seen.push_str(&env.run_env(&["sessions", "show", "last"], &envs).all());

    for secret in [from_env, short_pass, "user: deploy-bot", late] {
        assert!(!seen.contains(secret), "'{secret}' leaked:\n{seen}");
    }
    let bytes = journal_bytes(&env.journal_path());
    for secret in [from_env, short_pass, late] {
        assert!(!contains_bytes(&bytes, secret.as_bytes()), "'{secret}' is in the journal or its WAL");
    }
    assert!(seen.contains("<secret:APP_PW>") && seen.contains("<secret:creds>"), "{seen}");
}
