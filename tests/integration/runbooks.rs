//! The ready runbooks of runbooks/ run end to end against real servers: PostgreSQL, the TLS
//! fixtures, a webhook receiver.
use std::path::Path;
use std::process::{Command, Stdio};

use crate::fixtures::{HttpServer, TestCa};
use crate::harness::Env;
use crate::servers;

fn runbook(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks").join(name).display().to_string()
}

#[test]
fn weekly_and_monthly_maintenance_report_and_maintain_the_listed_tables() {
    let pg = servers::postgres();
    let url = pg.fresh_database("maint");
    pg.query(
        &url,
        "create table media_assets (id serial primary key, brand_id int, name text);
         create index idx_media_assets_brand_id on media_assets (brand_id);
         insert into media_assets (brand_id, name) select g % 7, repeat('x', 200) from generate_series(1, 5000) g;
         delete from media_assets where id % 2 = 0;
         create table storage_quotas (brand_id int primary key, used_bytes bigint, quota_bytes bigint);",
    );
    let env = Env::new();
    let weekly = env.run_env(&["run", &runbook("maintenance_weekly.lua"), "-p", "top=5"], &[("DATABASE_URL", &url)]);
    weekly.assert_code(0);
    let show = env.show("last");
    let size = &Env::step(&show, "database size")["result"];
    assert!(size["bytes"].as_i64().unwrap() > 1_000_000, "{size}");
    let tables = Env::step(&show, "table sizes")["result"].as_array().unwrap().clone();
    assert_eq!(tables[0]["table"], "media_assets", "largest first: {tables:?}");
    let conns = &Env::step(&show, "connections")["result"];
    assert!(conns["total"].as_i64().unwrap() >= 1 && conns["max"].as_i64().unwrap() >= 10, "{conns}");
    assert_eq!(conns["level"], "ok");

    let monthly = env.run_env(
        &["run", &runbook("maintenance_monthly.lua"), "-p", "tables=media_assets,public.storage_quotas"],
        &[("DATABASE_URL", &url)],
    );
    monthly.assert_code(0);
    let show = env.show("last");
    let assets = &Env::step(&show, "maintain media_assets")["result"];
    let (before, after) = (assets["before"].as_i64().unwrap(), assets["after"].as_i64().unwrap());
    assert!(before > 0 && after > 0, "{assets}");
    assert_eq!(Env::step(&show, "maintain public.storage_quotas")["status"], "succeeded");
    assert_eq!(Env::step(&show, "report")["result"]["tables"], 2);
    // VACUUM ANALYZE ran: the table has statistics now.
    // (Statistics reach other sessions shortly after the vacuum: wait for them.)
    let mut analyzed = String::new();
    for _ in 0..50 {
        analyzed = pg.query(&url, "select last_vacuum is not null and last_analyze is not null from pg_stat_user_tables where relname = 'media_assets'");
        if analyzed == "t" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(analyzed, "t");

    let missing = env.run_env(
        &["run", &runbook("maintenance_monthly.lua"), "-p", "tables=media_assets,nope"],
        &[("DATABASE_URL", &url)],
    );
    missing.assert_code(1);
    assert!(missing.stderr.contains("no such table(s): nope"), "{}", missing.stderr);
}

#[test]
fn kill_idle_connections_lists_asks_and_terminates_only_the_idle_ones() {
    let pg = servers::postgres();
    let url = pg.fresh_database("idle");
    let app = format!("idle-test-{}", std::process::id());
    // Two connections left idle by a client that keeps its session open.
    let psql = servers::pg_bindir().unwrap().join("psql");
    let mut idle: Vec<std::process::Child> = (0..2)
        .map(|_| {
            Command::new(&psql)
                .args([url.as_str(), "-X", "-q", "-c", "select 1", "-f", "-"])
                .env("PGAPPNAME", &app)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let count = || {
        pg.query(
            &url,
            &format!("select count(*) from pg_stat_activity where application_name = '{app}' and state = 'idle'"),
        )
    };
    for _ in 0..100 {
        if count() == "2" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(count(), "2");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let env = Env::new();
    let args =
        ["run", &runbook("kill_idle_connections.lua"), "-p", "idle_for=1 second", "-p", &format!("application={app}")];
    // Without a terminal, the gate stops the run: nothing is terminated yet.
    let r = env.run_env(&args, &[("DATABASE_URL", &url)]);
    r.assert_code(3);
    let gated_run = env.show("last");
    let gated = gated_run["run_id"].as_str().unwrap().to_string();
    assert_eq!(Env::step(&gated_run, "list idle connections")["result"].as_array().unwrap().len(), 2);
    assert_eq!(count(), "2");
    // A dry run lists them and terminates nothing.
    let mut dry: Vec<&str> = args.to_vec();
    dry.extend(["--dry-run", "--yes"]);
    env.run_env(&dry, &[("DATABASE_URL", &url)]).assert_code(0);
    assert_eq!(count(), "2");
    // Approved: exactly those two are terminated.
    env.run(&["approve", &gated]).assert_code(0);
    env.run_env(&["resume", &gated], &[("DATABASE_URL", &url)]).assert_code(0);
    let show = env.show(&gated);
    assert_eq!(Env::step(&show, "terminate")["result"]["terminated"], 2, "{show}");
    assert_eq!(count(), "0");
    for c in &mut idle {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn cert_expiry_warns_soon_and_fails_critical_with_one_notification() {
    let ca = TestCa::new();
    let soon = HttpServer::start_tls(&ca.leaf("soon.test", -1.0, 20.5, 0xce01));
    let later = HttpServer::start_tls(&ca.leaf("later.test", -1.0, 120.5, 0xce02));
    let critical = HttpServer::start_tls(&ca.leaf("critical.test", -1.0, 3.5, 0xce03));
    let hook = HttpServer::start();
    let env = Env::new();
    env.write("ca.pem", &ca.pem);
    let ca_path = env.path("ca.pem").display().to_string();
    let hosts = format!("hosts={},{}", soon.target(), later.target());
    let ok = env.run(&["run", &runbook("cert_expiry.lua"), "-p", &hosts, "-p", &format!("ca={ca_path}")]);
    ok.assert_code(0);
    let result = Env::step(&env.show("last"), "check certificates")["result"].clone();
    assert_eq!(result["level"], "warning", "{result}");
    assert_eq!(result["hosts"][soon.target()]["days_left"], 20);
    assert!(ok.all().contains("certificate expires soon"), "{}", ok.all());

    let hosts = format!("hosts={},{}", later.target(), critical.target());
    let bad = env.run(&[
        "run",
        &runbook("cert_expiry.lua"),
        "-p",
        &hosts,
        "-p",
        &format!("ca={ca_path}"),
        "-p",
        &format!("webhook={}", hook.url("/ok")),
    ]);
    bad.assert_code(1);
    assert!(bad.stderr.contains(&format!("{} expires in 3 days", critical.target())), "{}", bad.stderr);
    let posts = hook.recorded();
    assert_eq!(posts.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&posts[0].body).unwrap();
    assert_eq!(body["failed_step"], "check certificates");
}

#[test]
fn storage_quota_warns_at_80_and_fails_at_95_percent() {
    let pg = servers::postgres();
    let url = pg.fresh_database("quota");
    pg.query(
        &url,
        "create table storage_quotas (brand_id int primary key, used_bytes bigint, quota_bytes bigint);
         insert into storage_quotas values (1, 50, 100), (2, 85, 100);",
    );
    let hook = HttpServer::start();
    let env = Env::new();
    let args = ["run".to_string(), runbook("storage_quota.lua"), "-p".into(), format!("webhook={}", hook.url("/ok"))];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ok = env.run_env(&args, &[("DATABASE_URL", &url)]);
    ok.assert_code(0);
    let result = Env::step(&env.show("last"), "check quotas")["result"].clone();
    assert_eq!(result["warnings"], serde_json::json!(["2"]));
    assert_eq!(result["quotas"][1]["level"], "warning");
    assert!(hook.recorded().is_empty());

    pg.query(&url, "insert into storage_quotas values (3, 97, 100)");
    let bad = env.run_env(&args, &[("DATABASE_URL", &url)]);
    bad.assert_code(1);
    assert!(bad.stderr.contains("storage quota critical: 3 97.0% of quota used"), "{}", bad.stderr);
    assert_eq!(hook.recorded().len(), 1);
    // The database URL (with its password) is nowhere in what was printed.
    assert!(!bad.all().contains(&url));
}

#[test]
fn health_check_reports_every_service_database_and_bucket() {
    let pg = servers::postgres();
    let url = pg.fresh_database("health");
    let web = HttpServer::start();
    let hook = HttpServer::start();
    let env = Env::new();
    std::fs::create_dir_all(env.path("bucket")).unwrap();
    let down = format!("http://127.0.0.1:{}/api/health", servers::free_port());
    let services = format!("services=api={},edge={}", web.url("/json"), web.url("/ok"));
    let s3 = servers::s3();
    let buckets = format!("buckets=file://{},s3://{}/health", env.path("bucket").display(), s3.bucket);
    let webhook = format!("webhook={}", hook.url("/ok"));
    let vars = [
        ("DATABASE_URL", url.as_str()),
        ("S3_ENDPOINT", s3.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", s3.access_key),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_key),
    ];
    let healthy =
        env.run_env(&["run", &runbook("health_check.lua"), "-p", &services, "-p", &buckets, "-p", &webhook], &vars);
    healthy.assert_code(0);
    let show = env.show("last");
    assert_eq!(Env::step(&show, "verdict")["result"], "healthy");
    assert_eq!(Env::step(&show, "database")["result"]["ok"], true);
    assert!(hook.recorded().is_empty());

    let services = format!("services=api={},worker={down}", web.url("/json"));
    let buckets = format!("buckets=s3://{}/health,s3://no-such-bucket-{}", s3.bucket, std::process::id());
    let sick =
        env.run_env(&["run", &runbook("health_check.lua"), "-p", &services, "-p", &buckets, "-p", &webhook], &vars);
    sick.assert_code(1);
    assert!(sick.stderr.contains("unhealthy: worker ("), "{}", sick.stderr);
    assert!(
        sick.stderr.contains("no-such-bucket"),
        "the missing bucket is reported: {}\n{}",
        sick.stderr,
        Env::step(&env.show("last"), "buckets")
    );
    assert!(!sick.all().contains(s3.secret_key), "the S3 secret leaked");
    let posts = hook.recorded();
    assert_eq!(posts.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&posts[0].body).unwrap();
    assert_eq!(body["failed_step"], "verdict");
    assert!(!sick.all().contains(&url), "the database URL leaked");
}

#[test]
fn scaling_check_measures_hosts_and_database_and_posts_what_fired() {
    let pg = servers::postgres();
    let url = pg.fresh_database("scaling");
    let s = servers::sshd();
    let hook = HttpServer::start();
    let env = Env::new();
    env.write(
        "runbook.toml",
        &format!(
            "[hosts.app]\nhosts = [\"{}\", \"{}\"]\nuser = \"{}\"\nkey = \"{}\"\nknown_hosts = \"{}\"\n",
            s.hosts[0],
            s.hosts[1],
            s.user,
            s.key.display(),
            s.known_hosts.display()
        ),
    );
    // A query that runs for a while: the slow-query trigger.
    let psql = servers::pg_bindir().unwrap().join("psql");
    let mut slow = Command::new(psql).args([url.as_str(), "-X", "-q", "-c", "select pg_sleep(20)"]).spawn().unwrap();
    let active = || {
        pg.query(&url, "select count(*) from pg_stat_activity where state = 'active' and query like 'select pg_sleep%'")
    };
    for _ in 0..100 {
        if active() == "1" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = env.run_env(
        &[
            "run",
            &runbook("scaling_check.lua"),
            "-p",
            "hosts=app",
            "-p",
            "cpu_samples=1",
            "-p",
            "cpu_percent=100",
            "-p",
            "memory_percent=1",
            "-p",
            &format!("webhook={}", hook.url("/ok")),
        ],
        &[("DATABASE_URL", &url)],
    );
    let _ = slow.kill();
    let _ = slow.wait();
    r.assert_code(0);
    let show = env.show("last");
    let hosts = &Env::step(&show, "hosts")["result"];
    for h in &s.hosts[..2] {
        let m = hosts[h]["memory"].as_f64().unwrap();
        assert!(m > 1.0 && m < 100.0, "{hosts}");
        assert_eq!(hosts[h]["cpu"].as_array().unwrap().len(), 1);
    }
    let fired: Vec<String> = Env::step(&show, "triggers")["result"]["fired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(fired.iter().any(|f| f.starts_with("database: a query has been running")), "{fired:?}");
    assert_eq!(fired.iter().filter(|f| f.contains(": memory ")).count(), 2, "{fired:?}");
    assert!(!fired.iter().any(|f| f.contains("CPU")), "CPU over 100% cannot fire: {fired:?}");
    let posts = hook.recorded();
    assert_eq!(posts.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&posts[0].body).unwrap();
    assert_eq!(body["status"], "triggered");
    assert_eq!(body["triggers"].as_array().unwrap().len(), fired.len());
}

#[test]
fn the_guides_load_test_ramps_holds_and_fails_past_its_latency_or_error_thresholds() {
    let env = Env::new();
    let srv = HttpServer::start();
    let run = |path: &str, more: &[&str]| {
        let mut args: Vec<String> =
            vec!["run".into(), runbook("load_test.lua"), "-p".into(), format!("url={}", srv.url(path))];
        args.extend(["-p".into(), format!("health={}", srv.url("/ok"))]);
        for p in ["users=5", "ramp_up=500ms", "hold=1s", "ramp_down=500ms", "think=50ms"].iter().chain(more) {
            args.extend(["-p".to_string(), p.to_string()]);
        }
        env.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let r = run("/slow/20", &[]);
    r.assert_code(0);
    let show = env.show("last");
    let load = &Env::step(&show, "load")["result"];
    assert!(load["requests"].as_u64().unwrap() > 10, "{load}");
    assert_eq!(load["error_rate"], 0.0);
    assert!(load["latency"]["p50"].as_f64().unwrap() >= 0.019, "{load}");
    assert_eq!(Env::step(&show, "healthy after")["status"], "succeeded");
    assert!(srv.recorded().iter().all(|q| q.path == "/slow/20" || q.path == "/ok"), "only the named URLs");

    let r = run("/slow/300", &["p95=100ms"]);
    r.assert_code(1);
    assert!(r.stderr.contains("step 'load'") && r.stderr.contains("crossed its thresholds: p95 "), "{}", r.stderr);

    let r = run("/status/500", &[]);
    r.assert_code(1);
    assert!(r.stderr.contains("error_rate 100.00% > 1.00% (status 500 Internal Server Error)"), "{}", r.stderr);
}
