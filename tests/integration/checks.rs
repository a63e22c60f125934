//! The stdlib's `runbook.checks` and `runbook.notify` against real parts: the HTTP and HTTPS
//! fixtures, a SQLite database, a local store, an sshd host, and a webhook receiver.
use crate::fixtures::{HttpServer, TestCa};
use crate::harness::Env;
use crate::servers;

#[test]
fn checks_report_what_they_find_without_values_and_assert_fails_the_step() {
    let env = Env::new();
    let web = HttpServer::start();
    let ca = TestCa::new();
    let soon = HttpServer::start_tls(&ca.leaf("soon.test", -1.0, 10.5, 0xc0ffee1));
    let later = HttpServer::start_tls(&ca.leaf("later.test", -1.0, 200.5, 0xc0ffee2));
    env.write("ca.pem", &ca.pem);
    env.write(
        "frontend.env",
        "VITE_SUPABASE_URL=https://x.supabase.co\nSUPABASE_SERVICE_ROLE_KEY=sr-very-secret-value\n",
    );
    env.write("clean.env", "VITE_SUPABASE_URL=https://x.supabase.co\n");
    std::fs::create_dir_all(env.path("bucket")).unwrap();
    let s = servers::sshd();
    let host = &s.hosts[0];
    let down = format!("http://127.0.0.1:{}/", servers::free_port());
    env.write(
        "checks.lua",
        &format!(
            r#"runbook {{ name = "checks" }}
local checks = require "runbook.checks"
step("env", function()
  local r = checks.env{{ "PRESENT_VAR", "ABSENT_VAR" }}
  return {{ ok = r.ok, missing = r.missing, present = r.present, summary = r.summary }}
end)
step("file", function()
  local bad = checks.file_without("frontend.env", {{ "SUPABASE_SERVICE_ROLE_KEY" }})
  local good = checks.file_without("clean.env", {{ "SUPABASE_SERVICE_ROLE_KEY" }})
  return {{ bad = bad.ok, line = bad.found[1].line, summary = bad.summary, good = good.ok }}
end)
step("http", function()
  local r = checks.http{{
    ok = "{ok}",
    down = "{down}",
    json = {{ url = "{json}", json_path = "checks.db.status", equals = "up" }},
    wrong = {{ url = "{json}", json_path = "checks.db.status", equals = "down" }},
  }}
  return {{ ok = r.ok, summary = r.summary, ok_status = r.services.ok.status, json = r.services.json.ok }}
end)
step("database", function()
  local r = checks.database(db.connect("sqlite://app.db?mode=rwc"))
  return {{ ok = r.ok, summary = r.summary }}
end)
step("bucket", function() return checks.bucket(storage.open("file://./bucket")).ok end)
step("quota", function()
  return {{ checks.quota(70, 100).level, checks.quota(85, 100).level, checks.quota(96, 100).level, checks.quota(96, 100).ok }}
end)
step("tls", function()
  local r = checks.tls({{ "{soon}", "{later}" }}, {{ ca = "ca.pem", warn_days = 30, critical_days = 7 }})
  return {{ ok = r.ok, level = r.level, soon = r.hosts["{soon}"].level, later = r.hosts["{later}"].level,
            summary = r.summary }}
end)
step("disk", function()
  local s = ssh.connect("{host}", {{ user = "{user}", key = "{key}", known_hosts = "{known}" }})
  local r = checks.disk(s, {{ path = "/", warn = 0, critical = 101 }})
  return {{ ok = r.ok, level = r.level, used = r.used_percent }}
end)
step("assert", function()
  checks.assert(checks.env{{ "PRESENT_VAR" }}, checks.quota(99, 100), checks.env{{ "ABSENT_VAR" }})
end)
"#,
            ok = web.url("/ok"),
            down = down,
            json = web.url("/json"),
            soon = soon.target(),
            later = later.target(),
            user = s.user,
            key = s.key.display(),
            known = s.known_hosts.display(),
        ),
    );
    let r = env.run_env(&["run", "checks.lua"], &[("PRESENT_VAR", "1"), ("ABSENT_VAR", "")]);
    r.assert_code(1);
    let show = env.show("last");
    let result = |name: &str| Env::step(&show, name)["result"].clone();
    assert_eq!(result("env")["ok"], false);
    assert_eq!(result("env")["missing"], serde_json::json!(["ABSENT_VAR"]));
    assert_eq!(result("env")["present"], serde_json::json!(["PRESENT_VAR"]));
    assert_eq!(result("file")["bad"], false);
    assert_eq!(result("file")["line"], 2);
    assert_eq!(result("file")["good"], true);
    assert_eq!(result("file")["summary"], "frontend.env must not contain SUPABASE_SERVICE_ROLE_KEY at line 2");
    let http = result("http");
    assert_eq!(http["ok"], false);
    assert_eq!(http["ok_status"], 200);
    assert_eq!(http["json"], true, "{http}");
    let summary = http["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("unhealthy: down (") && summary.contains("wrong (checks.db.status is up, expected down)"),
        "{summary}"
    );
    assert!(!summary.contains("ok ("), "{summary}");
    assert_eq!(result("database")["ok"], true);
    assert_eq!(result("bucket"), true);
    assert_eq!(result("quota"), serde_json::json!(["ok", "warning", "critical", false]));
    let tls = result("tls");
    assert_eq!(
        (tls["soon"].as_str(), tls["later"].as_str(), tls["level"].as_str()),
        (Some("warning"), Some("ok"), Some("warning"))
    );
    assert_eq!(tls["ok"], true);
    assert!(tls["summary"].as_str().unwrap().contains("expires in 10 days"), "{tls}");
    let disk = result("disk");
    assert_eq!(disk["level"], "warning", "{disk}");
    assert!(disk["used"].as_i64().unwrap() >= 0);
    let failed = Env::step(&show, "assert");
    assert_eq!(failed["status"], "failed");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("99.0% of quota used; missing environment variables: ABSENT_VAR"), "{error}");
    // The key's value was never read into the run.
    assert!(!r.all().contains("sr-very-secret-value"));
    let journal = crate::harness::journal_bytes(&env.journal_path());
    assert!(!crate::harness::contains_bytes(&journal, b"sr-very-secret-value"));
}

#[test]
fn on_failure_posts_one_notification_naming_the_failed_step() {
    let env = Env::new();
    let hook = HttpServer::start();
    env.write(
        "notified.lua",
        r#"runbook { name = "notified", params = { webhook = { type = "string" } } }
local notify = require "runbook.notify"
notify.on_failure(params.webhook, function()
  step("prepare", function() return 1 end)
  step("migrate", { retries = 2, backoff = "10ms" }, function() error("relation media_assets already exists") end)
  step("release", function() end)
end)
"#,
    );
    let r = env.run(&["run", "notified.lua", "-p", &format!("webhook={}", hook.url("/ok"))]);
    r.assert_code(1);
    let posts = hook.recorded();
    assert_eq!(posts.len(), 1, "one notification for one failure (three attempts): {posts:?}");
    let body: serde_json::Value = serde_json::from_slice(&posts[0].body).unwrap();
    assert_eq!(body["failed_step"], "migrate");
    assert_eq!(body["status"], "failed");
    assert_eq!(body["runbook"], "notified");
    let run = env.show("last");
    assert_eq!(body["run_id"], run["run_id"]);
    assert!(body["text"].as_str().unwrap().contains("failed at step 'migrate'"), "{body}");
    assert!(body["error"].as_str().unwrap().contains("relation media_assets already exists"), "{body}");
    assert!(body["duration_ms"].is_number());
    assert_eq!(Env::step(&run, "migrate")["attempts"], 3);

    // A run that succeeds posts nothing; one stopped at a gate posts nothing either.
    env.write(
        "fine.lua",
        &format!(
            r#"runbook {{ name = "fine" }}
local notify = require "runbook.notify"
notify.on_failure("{url}", function()
  step("one", function() end)
  approve("go on?")
  step("two", function() end)
end)
"#,
            url = hook.url("/ok")
        ),
    );
    env.run(&["run", "fine.lua"]).assert_code(3);
    assert_eq!(hook.recorded().len(), 1);
}
