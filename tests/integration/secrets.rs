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
