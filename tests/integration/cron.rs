//! `run --cron` for system cron: quiet stdout, JSON lines on stderr, no prompts, a lock that
//! sends the second of two simultaneous runs away (exit 4) or makes it wait (`--lock-wait`),
//! and node_exporter metrics.
use crate::harness::Env;

const NIGHTLY: &str = r#"runbook { name = "nightly", lock = "nightly" }
step("work", function() exec{shell = "echo start >> ledger; sleep 2; echo end >> ledger"}; return true end)
"#;

fn json_lines(stderr: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

#[test]
fn two_cron_runs_at_once_one_runs_the_other_exits_4_or_waits() {
    let env = Env::new();
    env.write("rb.lua", NIGHTLY);
    let a = env.spawn(&["run", "--cron", "rb.lua"]);
    let b = env.spawn(&["run", "--cron", "rb.lua"]);
    let (a, b) = (crate::harness::finish(a, 60), crate::harness::finish(b, 60));
    let mut codes = [a.status.code(), b.status.code()];
    codes.sort();
    assert_eq!(codes, [Some(0), Some(4)], "one runs, the other finds the lock held");
    for out in [&a, &b] {
        assert!(out.stdout.is_empty(), "stdout stays quiet: {}", String::from_utf8_lossy(&out.stdout));
        json_lines(&out.stderr);
    }
    let refused = if a.status.code() == Some(4) { &a } else { &b };
    let lines = json_lines(&refused.stderr);
    assert!(lines.iter().any(|l| l["event"] == "error" && l["exit"] == 4), "{lines:?}");

    // With --lock-wait the second waits for the first and then runs: two whole critical sections.
    let a = env.spawn(&["run", "--cron", "rb.lua", "--lock-wait", "30s"]);
    let b = env.spawn(&["run", "--cron", "rb.lua", "--lock-wait", "30s"]);
    let (a, b) = (crate::harness::finish(a, 60), crate::harness::finish(b, 60));
    assert_eq!((a.status.code(), b.status.code()), (Some(0), Some(0)));
    let ledger = env.read("ledger");
    let lines: Vec<&str> = ledger.lines().collect();
    assert_eq!(lines.len(), 6, "{ledger}");
    for pair in lines.chunks(2) {
        assert_eq!(pair, ["start", "end"], "never two runs at once: {ledger}");
    }
}

#[test]
fn cron_never_prompts_and_writes_metrics_that_parse() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "gated" }
step("one", function() return 1 end)
step("flaky", { continue_on_error = true }, function() fail("boom") end)
approve("go on?")
step("two", function() return 2 end)
"#,
    );
    let out = env.run(&["run", "--cron", "rb.lua", "--metrics-file", "metrics/gated.prom"]);
    // A missing folder for the metrics is reported (as JSON) and does not change the exit code.
    out.assert_code(3);
    assert!(out.stdout.is_empty());
    let lines = json_lines(out.stderr.as_bytes());
    assert!(lines.iter().any(|l| l["event"] == "run_finished" && l["status"] == "waiting_approval"), "{lines:?}");
    assert!(lines.iter().any(|l| l["event"] == "error" && l["message"].as_str().unwrap().contains("gated.prom")));

    std::fs::create_dir_all(env.path("metrics")).unwrap();
    env.run(&["approve", "last"]).assert_code(0);
    env.run(&["resume", "last", "--metrics-file", "metrics/gated.prom"]).assert_code(0);
    let text = env.read("metrics/gated.prom");
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("prometheus text format");
    let value = |name: &str, status: Option<&str>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && status.is_none_or(|st| s.labels.get("status") == Some(st)))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name}: {text}"))
    };
    assert_eq!(value("runbook_run_status", Some("succeeded")), 1.0);
    assert_eq!(value("runbook_run_status", Some("waiting_approval")), 0.0);
    assert_eq!(value("runbook_step_failures_total", None), 1.0);
    let now = chrono::Utc::now().timestamp() as f64;
    let last = value("runbook_last_success_timestamp_seconds", None);
    assert!((now - last).abs() < 120.0, "{last} vs {now}");
    assert!(value("runbook_run_duration_seconds", None) >= 0.0);
    assert!(scrape.samples.iter().all(|s| s.labels.get("runbook") == Some("gated")));
    assert!(!std::fs::read_dir(env.path("metrics")).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
}

#[test]
fn a_failed_run_posts_the_notify_webhook_of_runbook_toml() {
    let env = Env::new();
    let hook = crate::fixtures::HttpServer::start();
    env.write("runbook.toml", "[notify]\nwebhook_env = \"OPS_WEBHOOK\"\n");
    env.write(
        "rb.lua",
        r#"runbook { name = "nightly-backup" }
step("dump", function() return true end)
step("upload", function() fail("bucket unreachable") end)
"#,
    );
    env.write("ok.lua", "runbook { name = \"fine\" }\nstep(\"one\", function() return 1 end)\n");
    let url = hook.url("/echo?token=hook-secret-91b2");
    let out = env.run_env(&["run", "--cron", "rb.lua"], &[("OPS_WEBHOOK", &url)]);
    out.assert_code(1);
    env.run_env(&["run", "ok.lua"], &[("OPS_WEBHOOK", &url)]).assert_code(0);
    let posts = hook.recorded();
    assert_eq!(posts.len(), 1, "only the failed run notifies");
    assert_eq!(posts[0].method, "POST");
    let body: serde_json::Value = serde_json::from_slice(&posts[0].body).unwrap();
    assert_eq!(body["status"], "failed");
    assert_eq!(body["failed_step"], "upload");
    assert_eq!(body["runbook"], "nightly-backup");
    assert!(body["text"].as_str().unwrap().contains("failed at step 'upload'"), "{body}");
    assert!(body["error"].as_str().unwrap().contains("bucket unreachable"), "{body}");
    assert!(!out.all().contains("hook-secret-91b2"));
    // An unreachable webhook is reported without its token, even as the URL parser rewrote it.
    let unreachable = env.run_env(&["run", "rb.lua"], &[("OPS_WEBHOOK", "HTTP://127.0.0.1:1?token=leak-7c1d")]);
    unreachable.assert_code(1);
    assert!(unreachable.stderr.contains("notify webhook"), "{}", unreachable.stderr);
    assert!(!unreachable.all().contains("leak-7c1d"), "{}", unreachable.all());
    // Unset, the webhook's variable is an error that does not change the exit code.
    let missing = env.run(&["run", "rb.lua"]);
    missing.assert_code(1);
    assert!(missing.stderr.contains("webhook_env: the variable OPS_WEBHOOK is not set"), "{}", missing.stderr);
    env.write("runbook.toml", "[notify]\nwebhook = \"http://127.0.0.1:1/\"\non = [\"exploded\"]\n");
    let bad = env.run(&["run", "rb.lua"]);
    bad.assert_code(2);
    assert!(bad.stderr.contains("[notify] on: unknown status 'exploded'"), "{}", bad.stderr);
}
