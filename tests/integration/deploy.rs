//! `runbook.deploy` against a staging environment the test builds: sshd hosts on 127.0.0.x, each
//! running a small HTTP service from its current release that answers /api/health with the
//! release's version (a release can be built to fail it).
use std::path::PathBuf;

use crate::harness::Env;
use crate::servers;

/// The service a release carries: /api/health answers {"status", "version"}, 503 when the
/// release was built unhealthy; / answers the same, every Nth request a 500 when the release was
/// built with ERRORS=N, after SLOW seconds when built slow; /metrics exports the requests by
/// status and their latencies (a histogram) for Prometheus.
const SERVER: &str = r##"import http.server, json, os, sys, threading, time
here = os.path.dirname(os.path.abspath(__file__))
def read(name, default):
    path = os.path.join(here, name)
    return open(path).read().strip() if os.path.exists(path) else default
version = read("VERSION", "")
healthy = not os.path.exists(os.path.join(here, "UNHEALTHY"))
errors_every = int(read("ERRORS", "0"))
slow = float(read("SLOW", "0"))
lock = threading.Lock()
served, by_status, total, seconds = 0, {}, 0, 0.0
bounds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]
buckets = [0] * len(bounds)
class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, code, body, kind):
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        global served, total, seconds
        start = time.monotonic()
        if self.path == "/metrics":
            with lock:
                lines = ["# TYPE http_requests_total counter"]
                lines += ['http_requests_total{status="%s"} %d' % (k, v) for k, v in sorted(by_status.items())]
                lines.append("# TYPE http_request_duration_seconds histogram")
                lines += ['http_request_duration_seconds_bucket{le="%g"} %d' % (b, n) for b, n in zip(bounds, buckets)]
                lines.append('http_request_duration_seconds_bucket{le="+Inf"} %d' % total)
                lines.append("http_request_duration_seconds_sum %f" % seconds)
                lines.append("http_request_duration_seconds_count %d" % total)
            self.reply(200, ("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4")
            return
        if self.path not in ("/", "/api/health"):
            self.reply(404, b"", "text/plain")
            return
        code = 200 if healthy else 503
        if self.path == "/":
            with lock:
                served += 1
                if errors_every and served % errors_every == 0:
                    code = 500
            if slow:
                time.sleep(slow)
        body = json.dumps({"status": "ok" if code == 200 else "failing", "version": version}).encode()
        self.reply(code, body, "application/json")
        took = time.monotonic() - start
        with lock:
            by_status[str(code)] = by_status.get(str(code), 0) + 1
            total += 1
            seconds += took
            for i, b in enumerate(bounds):
                if took <= b:
                    buckets[i] += 1
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
"##;

const RELEASE: &str = r#"
runbook {
  name = "release",
  params = {
    version = { type = "string", required = true },
    strategy = { type = "enum", choices = { "rolling", "canary", "blue_green" }, default = "rolling" },
    base = { type = "string", required = true },
    port = { type = "integer", required = true },
    max_failures = { type = "integer", default = 0 },
    group = { type = "string", default = "web" },
  },
}
local deploy = require "runbook.deploy"
local function ip(host) return host:match("^[^:]+") end
local app = deploy.layout {
  root = function(host) return params.base .. "/" .. ip(host) end,
  restart = "pidf=run-${RELEASE_COLOR:-main}.pid; dir=${RELEASE_COLOR:+colors/$RELEASE_COLOR}; dir=${dir:-current}; "
    .. "port=" .. params.port .. "; [ \"$RELEASE_COLOR\" = green ] && port=$((port + 1)); "
    .. "if [ -f $pidf ]; then kill $(cat $pidf) 2>/dev/null; sleep 0.3; fi; "
    .. "setsid nohup python3 $dir/server.py ${RELEASE_HOST%%:*} $port > service.log 2>&1 < /dev/null & echo $! > $pidf",
}
local function health(host, color)
  local port = params.port + (color == "green" and 1 or 0)
  http.wait_healthy("http://" .. ip(host) .. ":" .. port .. "/api/health",
    { timeout = "6s", interval = "200ms", attempt_timeout = "1s", json_path = "version", equals = params.version })
end
step("release " .. params.version, function()
  local r = deploy[params.strategy](app, params.group,
    { id = params.version, from = "build-" .. params.version, health = health, max_failures = params.max_failures })
  local out = {}
  for host, o in pairs(r) do out[host] = o.status end
  return out
end)
"#;

struct Staging {
    env: Env,
    hosts: Vec<String>,
    port: u16,
}

impl Staging {
    fn new(with_down: bool) -> Staging {
        let s = servers::sshd();
        let env = Env::new();
        let hosts: Vec<String> = s.hosts[..3].to_vec();
        let mut group = hosts.clone();
        if with_down {
            group.insert(1, s.down.clone());
        }
        let list = group.iter().map(|h| format!("\"{h}\"")).collect::<Vec<_>>().join(", ");
        env.write(
            "runbook.toml",
            &format!(
                "[hosts.web]\nhosts = [{list}]\nuser = \"{}\"\nkey = \"{}\"\nknown_hosts = \"{}\"\ntimeout = \"3s\"\n",
                s.user,
                s.key.display(),
                s.known_hosts.display()
            ),
        );
        env.write("release.lua", RELEASE);
        // One port number (and the next, for green) free on every loopback address used: each
        // host binds its own address.
        let port = loop {
            let p = servers::free_port();
            let free = |port: u16| {
                hosts.iter().all(|h| std::net::TcpListener::bind((h.split(':').next().unwrap(), port)).is_ok())
            };
            if p < u16::MAX && free(p) && free(p + 1) {
                break p;
            }
        };
        Staging { env, hosts, port }
    }

    fn build(&self, version: &str, healthy: bool) {
        self.env.write(&format!("build-{version}/server.py"), SERVER);
        self.env.write(&format!("build-{version}/VERSION"), version);
        if !healthy {
            self.env.write(&format!("build-{version}/UNHEALTHY"), "");
        }
    }

    fn release(&self, version: &str, strategy: &str, extra: &[&str]) -> crate::harness::Run {
        let base = self.env.path("hosts").display().to_string();
        let mut args = vec![
            "run".to_string(),
            "release.lua".into(),
            "-p".into(),
            format!("version={version}"),
            "-p".into(),
            format!("strategy={strategy}"),
            "-p".into(),
            format!("base={base}"),
            "-p".into(),
            format!("port={}", self.port),
        ];
        for e in extra {
            args.push("-p".into());
            args.push(e.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.env.run(&args)
    }

    fn root(&self, host: &str) -> PathBuf {
        self.env.path(&format!("hosts/{}", host.split(':').next().unwrap()))
    }

    /// The release `current` points at on a host.
    fn current(&self, host: &str) -> Option<String> {
        std::fs::read_link(self.root(host).join("current"))
            .ok()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
    }

    /// What the host's service answers once it answers `want` (or after 10 s, whatever it says):
    /// for services started without a health gate.
    fn serving_eventually(&self, host: &str, port: u16, want: &str) -> String {
        let mut last = String::new();
        for _ in 0..100 {
            last = self.serving(host, port);
            if last == want {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        last
    }

    /// What the host's service answers.
    fn serving(&self, host: &str, port: u16) -> String {
        let ip = host.split(':').next().unwrap();
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                &format!(
                    "import urllib.request,json\ntry:\n print(json.load(urllib.request.urlopen('http://{ip}:{port}/api/health', timeout=3))['version'])\nexcept Exception as e:\n print('down')"
                ),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Stop the services the releases started (pid files anywhere under the hosts' roots).
        fn walk(dir: &std::path::Path) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if p.is_dir() && !p.is_symlink() && name != "releases" {
                    walk(&p);
                } else if name.starts_with("run-") && name.ends_with(".pid") {
                    if let Ok(pid) = std::fs::read_to_string(&p) {
                        let _ = std::process::Command::new("kill").arg(pid.trim()).output();
                    }
                }
            }
        }
        walk(&self.env.path("hosts"));
    }
}

#[test]
fn rolling_then_a_canary_that_fails_its_health_check_is_rolled_back_and_the_rest_untouched() {
    let st = Staging::new(false);
    st.build("1.0.0", true);
    st.release("1.0.0", "rolling", &[]).assert_code(0);
    for h in &st.hosts {
        assert_eq!(st.current(h).as_deref(), Some("1.0.0"));
        assert_eq!(st.serving(h, st.port), "1.0.0");
    }

    st.build("1.1.0", false);
    let r = st.release("1.1.0", "canary", &[]);
    r.assert_code(1);
    assert!(r.all().contains("health check"), "{}", r.all());
    assert!(r.all().contains("rolled back"), "{}", r.all());
    let (canary, rest) = st.hosts.split_first().unwrap();
    // The canary got 1.1.0, failed its health check, and is back on 1.0.0.
    assert!(st.root(canary).join("releases/1.1.0").exists());
    assert_eq!(st.current(canary).as_deref(), Some("1.0.0"));
    assert_eq!(st.serving(canary, st.port), "1.0.0");
    // The others never saw 1.1.0.
    for h in rest {
        assert!(!st.root(h).join("releases/1.1.0").exists(), "{h} was touched");
        assert_eq!(st.current(h).as_deref(), Some("1.0.0"));
        assert_eq!(st.serving(h, st.port), "1.0.0");
    }

    // A healthy canary, then the rest.
    st.build("1.2.0", true);
    st.release("1.2.0", "canary", &[]).assert_code(0);
    for h in &st.hosts {
        assert_eq!(st.serving(h, st.port), "1.2.0");
        // The release before is remembered for a rollback.
        assert_eq!(std::fs::read_to_string(st.root(h).join("previous")).unwrap(), "1.0.0");
    }
}

#[test]
fn a_host_down_halts_a_rolling_deploy_within_max_failures() {
    let st = Staging::new(true);
    st.build("2.0.0", true);
    // The group is [h0, down, h1, h2]: with max_failures 0, the rollout halts at the down host,
    // h0 goes back to what it had (nothing: there was no release before), h1 and h2 untouched.
    let r = st.release("2.0.0", "rolling", &[]);
    r.assert_code(1);
    assert!(r.all().contains("ssh.rolling halted"), "{}", r.all());
    // h0 had no release before this one: there is nothing to go back to, and the log says so.
    assert!(r.all().contains("no release before this one to roll back to"), "{}", r.all());
    assert_eq!(st.current(&st.hosts[0]).as_deref(), Some("2.0.0"));
    for h in &st.hosts[1..] {
        assert!(!st.root(h).join("releases/2.0.0").exists(), "{h} was touched after the halt");
    }
    // With one failure allowed, it carries on past the down host.
    let r = st.release("2.0.0", "rolling", &["max_failures=1"]);
    r.assert_code(0);
    for h in &st.hosts {
        assert_eq!(st.serving(h, st.port), "2.0.0");
    }
    let show = st.env.show("last");
    let result = &Env::step(&show, "release 2.0.0")["result"];
    assert_eq!(result[servers::sshd().down.as_str()], "failed", "{result}");
}

#[test]
fn blue_green_switches_traffic_only_to_a_healthy_colour() {
    let st = Staging::new(false);
    let live = |h: &str| std::fs::read_link(st.root(h).join("live")).ok().map(|p| p.display().to_string());
    st.build("3.0.0", true);
    st.release("3.0.0", "blue_green", &[]).assert_code(0);
    for h in &st.hosts {
        assert_eq!(live(h).as_deref(), Some("colors/blue"));
        assert_eq!(st.serving(h, st.port), "3.0.0");
    }
    // The idle colour (green) fails its health check: traffic stays on blue.
    st.build("3.1.0", false);
    st.release("3.1.0", "blue_green", &[]).assert_code(1);
    for h in &st.hosts {
        assert_eq!(live(h).as_deref(), Some("colors/blue"), "{h}");
        assert_eq!(st.serving(h, st.port), "3.0.0");
    }
    // A healthy one goes to green; blue keeps 3.0.0 for a rollback.
    st.build("3.2.0", true);
    st.release("3.2.0", "blue_green", &[]).assert_code(0);
    for h in &st.hosts {
        assert_eq!(live(h).as_deref(), Some("colors/green"));
        assert_eq!(st.serving(h, st.port + 1), "3.2.0");
        assert_eq!(st.serving(h, st.port), "3.0.0");
        let blue = std::fs::read_link(st.root(h).join("colors/blue")).unwrap();
        assert!(blue.ends_with("3.0.0"), "{}", blue.display());
    }
}

/// The media tables of the Aligned AI guide (006_media_tables.sql), with indexes and RLS.
const MIGRATION_006: &str = "
create table media_assets (id bigserial primary key, brand_id uuid not null, name text not null,
                           ai_tags text[] not null default '{}', created_at timestamptz not null default now());
create index idx_media_assets_brand_id on media_assets (brand_id);
create index idx_media_assets_created_at on media_assets (created_at);
create index idx_media_assets_ai_tags on media_assets using gin (ai_tags);
create table media_usage_logs (id bigserial primary key, asset_id bigint references media_assets (id), used_at timestamptz default now());
create table storage_quotas (brand_id uuid primary key, used_bytes bigint not null default 0,
                             quota_bytes bigint not null default 5368709120, warning_threshold_percent int not null default 80);
alter table media_assets enable row level security;
create policy media_assets_by_brand on media_assets using (brand_id = nullif(current_setting('app.brand_id', true), '')::uuid);
alter table storage_quotas enable row level security;
create policy storage_quotas_by_brand on storage_quotas using (brand_id = nullif(current_setting('app.brand_id', true), '')::uuid);
";

const RESTART: &str = "pidf=run-main.pid; if [ -f $pidf ]; then kill $(cat $pidf) 2>/dev/null; sleep 0.3; fi; \
setsid nohup python3 current/server.py ${RELEASE_HOST%%:*} PORT > service.log 2>&1 < /dev/null & echo $! > $pidf";

#[test]
fn deploy_runbook_end_to_end_with_failures_rollbacks_and_a_resume() {
    let pg = servers::postgres();
    let url = pg.fresh_database("deploy");
    let hook = crate::fixtures::HttpServer::start();
    let st = Staging::new(false);
    let env = &st.env;
    env.write("migrations/006_media_tables.sql", MIGRATION_006);
    env.write(
        "migrations/007_broken.sql",
        "create table media_tags (id serial primary key, name text);\ncreate index idx_nope on no_such_table (x);\n",
    );
    env.write("migrations/008_tags.sql", "create table media_tags (id serial primary key, name text);\n");
    env.write("frontend.env", "VITE_SUPABASE_URL=https://x.supabase.co\n");
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks/deploy.lua").display().to_string();
    let root = format!("root={}/{{host}}", env.path("hosts").display());
    let restart = format!("restart={}", RESTART.replace("PORT", &st.port.to_string()));
    let health = format!("health_url=http://{{host}}:{}/api/health", st.port);
    let store = format!("store=file://{}", env.path("backups").display());
    let webhook = format!("webhook={}", hook.url("/ok"));
    let run = |version: &str, migration: &str, extra: &[String]| {
        let from = format!("from={}", env.path(&format!("build-{version}")).display());
        let mut args: Vec<String> = vec!["run".into(), deploy.clone()];
        for p in [
            format!("version={version}"),
            from,
            root.clone(),
            restart.clone(),
            health.clone(),
            store.clone(),
            webhook.clone(),
            "health_timeout=8s".into(),
            format!("migration={}", env.path(migration).display()),
            "expect_tables=media_assets,media_usage_logs,storage_quotas".into(),
            "expect_indexes=idx_media_assets_brand_id,idx_media_assets_created_at,idx_media_assets_ai_tags".into(),
            "expect_rls=media_assets,storage_quotas".into(),
            "required_env=DATABASE_URL".into(),
            format!("frontend_env={}", env.path("frontend.env").display()),
            "smoke=/api/health,/".into(),
        ] {
            // A param in `extra` replaces the default here (a param is given once).
            let name = p.split('=').next().unwrap_or_default().to_string();
            if extra.iter().any(|e| e.starts_with(&format!("{name}="))) {
                continue;
            }
            args.push("-p".into());
            args.push(p);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let tables = || {
        pg.query(&url, "select string_agg(table_name, ',' order by table_name) from information_schema.tables where table_schema = 'public'")
    };

    // 1. The happy path: migration, verification, canary then the rest, health, smoke.
    st.build("1.0.0", true);
    let args = run("1.0.0", "migrations/006_media_tables.sql", &[]);
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = env.run_env(&args_ref, &[("DATABASE_URL", &url)]);
    r.assert_code(0);
    assert_eq!(tables(), "media_assets,media_usage_logs,storage_quotas");
    for h in &st.hosts {
        assert_eq!(st.serving(h, st.port), "1.0.0");
    }
    assert!(hook.recorded().is_empty());

    // 2. A migration that fails halfway leaves the database as it was; hosts untouched.
    st.build("2.0.0", true);
    let args = run("2.0.0", "migrations/007_broken.sql", &[]);
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = env.run_env(&args_ref, &[("DATABASE_URL", &url)]);
    r.assert_code(1);
    assert!(r.stderr.contains("no_such_table"), "{}", r.stderr);
    assert_eq!(tables(), "media_assets,media_usage_logs,storage_quotas", "the failed migration left something");
    for h in &st.hosts {
        assert_eq!(st.serving(h, st.port), "1.0.0");
        assert!(!st.root(h).join("releases/2.0.0").exists());
    }
    let posts = hook.recorded();
    assert_eq!(posts.len(), 1, "one notification per failure");
    let body: serde_json::Value = serde_json::from_slice(&posts[0].body).unwrap();
    assert_eq!(body["failed_step"], "migrate");

    // 3. A release whose canary fails its health check: the canary goes back, the other hosts
    //    are never touched, and the migration is undone by restoring the pre-deploy backup.
    st.build("3.0.0", false);
    let args = run("3.0.0", "migrations/008_tags.sql", &[]);
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = env.run_env(&args_ref, &[("DATABASE_URL", &url)]);
    r.assert_code(1);
    let show = env.show("last");
    assert_eq!(show["status"], "rolled_back", "{show}");
    assert_eq!(Env::step(&show, "migrate")["undo_status"], "done");
    assert_eq!(tables(), "media_assets,media_usage_logs,storage_quotas", "media_tags should be gone");
    let (canary, rest) = st.hosts.split_first().unwrap();
    assert_eq!(st.current(canary).as_deref(), Some("1.0.0"));
    assert_eq!(st.serving(canary, st.port), "1.0.0");
    for h in rest {
        assert!(!st.root(h).join("releases/3.0.0").exists());
        assert_eq!(st.serving(h, st.port), "1.0.0");
    }
    let posts = hook.recorded();
    assert_eq!(posts.len(), 2);
    let body: serde_json::Value = serde_json::from_slice(&posts[1].body).unwrap();
    assert_eq!(body["failed_step"], "release");

    // 4. Killed during the release, resumed: the backup and the migration are not done again.
    st.build("4.0.0", true);
    let args = run("4.0.0", "migrations/008_tags.sql", &[]);
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = env.cmd(&args_ref).env("DATABASE_URL", &url).spawn().unwrap();
    let mut killed = false;
    for _ in 0..400 {
        let out = env.run(&["show", "last", "--output", "json"]);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&out.stdout) {
            if v["runbook"] == "deploy"
                && v["params"]["version"] == "4.0.0"
                && v["steps"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["name"] == "release" && s["status"] == "running"))
            {
                crate::harness::signal(child.id(), libc::SIGKILL);
                killed = true;
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let _ = child.wait();
    assert!(killed, "the run never reached its release step");
    let r = env.run_env(&["resume", "--last"], &[("DATABASE_URL", &url)]);
    r.assert_code(0);
    let show = env.show("last");
    assert_eq!(show["status"], "succeeded");
    assert_eq!(Env::step(&show, "backup")["attempts"], 1, "the backup ran again");
    assert_eq!(Env::step(&show, "migrate")["attempts"], 1, "the migration ran again");
    assert_eq!(tables(), "media_assets,media_tags,media_usage_logs,storage_quotas");
    for h in &st.hosts {
        assert_eq!(st.serving(h, st.port), "4.0.0");
    }
    assert_eq!(hook.recorded().len(), 2, "a successful resume posts nothing");

    // 5. A failure after a successful release (a smoke request answers 404): the release's undo
    //    puts every host back on 4.0.0, and the migration's undo restores the database.
    env.write("migrations/009_notes.sql", "create table release_notes (id serial primary key, body text);\n");
    st.build("5.0.0", true);
    let args = run("5.0.0", "migrations/009_notes.sql", &["-p".into(), "smoke=/api/health,/missing".into()]);
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = env.run_env(&args_ref, &[("DATABASE_URL", &url)]);
    r.assert_code(1);
    let show = env.show("last");
    assert_eq!(show["status"], "rolled_back", "{show}");
    assert_eq!(Env::step(&show, "release")["undo_status"], "done");
    assert_eq!(Env::step(&show, "migrate")["undo_status"], "done");
    for h in &st.hosts {
        assert_eq!(st.current(h).as_deref(), Some("4.0.0"), "{h}");
        assert_eq!(st.serving_eventually(h, st.port, "4.0.0"), "4.0.0", "{h}");
    }
    assert_eq!(tables(), "media_assets,media_tags,media_usage_logs,storage_quotas");
    let body: serde_json::Value = serde_json::from_slice(&hook.recorded()[2].body).unwrap();
    assert_eq!(body["failed_step"], "smoke");
}

#[test]
fn service_rollback_stops_restores_and_starts_in_the_named_order() {
    let st = Staging::new(false);
    let env = &st.env;
    let worker_port = st.port;
    let backend_port = servers::free_port();
    // Two services on every host, each deployed twice (1.0 then 2.0) with runbook.deploy.
    let start = |port: u16| {
        format!(
            "echo start $RELEASE_ROOT >> {log}; if [ -f run-main.pid ]; then kill $(cat run-main.pid) 2>/dev/null; sleep 0.3; fi; \
             setsid nohup python3 current/server.py ${{RELEASE_HOST%%:*}} {port} > service.log 2>&1 < /dev/null & echo $! > run-main.pid",
            log = env.path("order.log").display()
        )
    };
    env.write(
        "ship.lua",
        r#"runbook { name = "ship", params = { service = { type = "string" }, version = { type = "string" },
  base = { type = "string" }, start = { type = "string" } } }
local deploy = require "runbook.deploy"
local app = deploy.layout { root = function(host) return params.base .. "/" .. host:match("^[^:]+") .. "/" .. params.service end,
                            restart = params.start }
step("ship", function() deploy.rolling(app, "web", { id = params.version, from = "build-" .. params.version }) end)
"#,
    );
    let base = env.path("hosts").display().to_string();
    for version in ["1.0", "2.0"] {
        st.build(version, true);
        for (service, port) in [("worker", worker_port), ("backend", backend_port)] {
            env.run(&[
                "run",
                "ship.lua",
                "-p",
                &format!("service={service}"),
                "-p",
                &format!("version={version}"),
                "-p",
                &format!("base={base}"),
                "-p",
                &format!("start={}", start(port)),
            ])
            .assert_code(0);
        }
    }
    for h in &st.hosts {
        assert_eq!(st.serving_eventually(h, worker_port, "2.0"), "2.0");
        assert_eq!(st.serving_eventually(h, backend_port, "2.0"), "2.0");
    }
    std::fs::remove_file(env.path("order.log")).unwrap();
    let rollback = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks/service_rollback.lua");
    let log = env.path("order.log").display().to_string();
    // `start` differs per service only by its port: one command, the port chosen by $RELEASE_ROOT.
    let start_cmd = format!(
        "echo start {{service}} >> {log}; case {{service}} in worker) p={worker_port};; *) p={backend_port};; esac; \
         if [ -f run-main.pid ]; then kill $(cat run-main.pid) 2>/dev/null; sleep 0.3; fi; \
         setsid nohup python3 current/server.py {{host}} $p > service.log 2>&1 < /dev/null & echo $! > run-main.pid"
    );
    let r = env.run(&[
        "run",
        &rollback.display().to_string(),
        "-p",
        "services=worker,backend",
        "-p",
        &format!("root={base}/{{host}}/{{service}}"),
        "-p",
        &format!("stop=echo stop {{service}} >> {log}; kill $(cat run-main.pid)"),
        "-p",
        &format!("start={start_cmd}"),
        "-p",
        &format!(
            "health=worker=http://{{host}}:{worker_port}/api/health,backend=http://{{host}}:{backend_port}/api/health"
        ),
    ]);
    r.assert_code(0);
    for h in &st.hosts {
        assert_eq!(st.serving(h, worker_port), "1.0", "{h}");
        assert_eq!(st.serving(h, backend_port), "1.0", "{h}");
    }
    // Every stop before any start, each in the named order.
    let order: Vec<String> = env.read("order.log").lines().map(str::to_string).collect();
    let n = st.hosts.len();
    assert_eq!(order.len(), 4 * n, "{order:?}");
    assert!(order[..n].iter().all(|l| l == "stop worker"), "{order:?}");
    assert!(order[n..2 * n].iter().all(|l| l == "stop backend"), "{order:?}");
    assert!(order[2 * n..3 * n].iter().all(|l| l == "start worker"), "{order:?}");
    assert!(order[3 * n..].iter().all(|l| l == "start backend"), "{order:?}");
}

/// One system of shared/procedures, as examples/NAME has it: its deploy (with its migration and
/// the tables, indexes and RLS it must leave), a backup, its verification by restore, and one
/// maintenance runbook, each with the example's params file, on the staging environment.
fn system_end_to_end(name: &str, maintenance: &str, setup_sql: Option<&str>, deploy_extra: &[&str]) {
    let pg = servers::postgres();
    let url = pg.fresh_database(&name.replace('-', "_"));
    let st = Staging::new(false);
    let env = &st.env;
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    let runbooks = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks");
    st.build("1.0.0", true);
    let store = format!("store=file://{}", env.path("backups").display());
    let vars = [
        ("DATABASE_URL", url.as_str()),
        ("SUPABASE_URL", "https://x.supabase.co"),
        ("NEXT_PUBLIC_APP_URL", "https://app"),
        ("REDIS_URL", "redis://127.0.0.1"),
    ];
    let run = |runbook: &str, params: &str, extra: Vec<String>| {
        let mut args = vec!["run".to_string(), runbooks.join(runbook).display().to_string()];
        if !params.is_empty() {
            args.push("--params-file".into());
            args.push(example.join("params").join(params).display().to_string());
        }
        for p in extra {
            args.push("-p".into());
            args.push(p);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        env.run_env(&args, &vars)
    };

    let r = run(
        "deploy.lua",
        "deploy.toml",
        vec![
            "version=1.0.0".into(),
            format!("from={}", env.path("build-1.0.0").display()),
            format!("root={}/{{host}}", env.path("hosts").display()),
            format!("restart={}", RESTART.replace("PORT", &st.port.to_string())),
            format!("health_url=http://{{host}}:{}/api/health", st.port),
            // (the migration is the params file's own: a path from the runbook's folder)
            store.clone(),
        ]
        .into_iter()
        .chain(deploy_extra.iter().map(|e| e.to_string()))
        .collect(),
    );
    r.assert_code(0);
    let show = env.show("last");
    assert_eq!(Env::step(&show, "verify schema")["status"], "succeeded", "{name}");
    for h in &st.hosts {
        assert_eq!(st.serving(h, st.port), "1.0.0", "{name} on {h}");
    }
    if let Some(sql) = setup_sql {
        pg.query(&url, sql);
    }
    run("db_backup.lua", "backup.toml", vec![store.clone()]).assert_code(0);
    run("verify_backup.lua", "", vec![store.clone()]).assert_code(0);
    let verified = env.show("last");
    assert_eq!(verified["status"], "succeeded", "{name}: {verified}");
    run(maintenance, "maintenance.toml", vec![]).assert_code(0);
}

#[test]
fn system_aligned_ai() {
    system_end_to_end(
        "aligned-ai",
        "storage_quota.lua",
        Some("insert into storage_quotas (brand_id, used_bytes) values ('5f1d7a4e-1111-4f6e-9c2a-0123456789ab', 1073741824)"),
        &[],
    );
}

#[test]
fn system_ai_super_assistant() {
    system_end_to_end("ai-super-assistant", "maintenance_weekly.lua", None, &[]);
}

#[test]
fn system_steward() {
    // (a first release has nothing to canary against; the traffic canary has its own test below)
    system_end_to_end("steward", "maintenance_monthly.lua", None, &["strategy=rolling"]);
}

#[test]
fn system_media_asset_management() {
    system_end_to_end(
        "media-asset-management",
        "maintenance_weekly.lua",
        Some("insert into assets (title) values ('trailer.mov'), ('poster.png')"),
        &[],
    );
}

#[test]
fn system_generic_app() {
    system_end_to_end(
        "generic-app",
        "maintenance_weekly.lua",
        Some("insert into users (email) values ('a@example.com')"),
        &[],
    );
}

/// A traffic canary whose backend writes each weight to `weights` and whose error rate turns bad
/// from the stage `fail_at` on.
const TRAFFIC_CANARY: &str = r#"runbook { name = "traffic", params = { fail_at = { type = "number", default = 0 }, no_data = { type = "boolean", default = false }, hold = { default = "300ms" } } }
local deploy = require "runbook.deploy"
local lb = { name = "test lb", set = function(p) exec{ "sh", "-c", 'echo "$1" >> weights', "_", tostring(p) } end }
local function current()
  return tonumber(exec{ "sh", "-c", "tail -n 1 weights" }.stdout) or 0
end
local function error_rate()
  if params.no_data then return nil end
  if params.fail_at > 0 and current() >= params.fail_at then return 0.2 end
  return 0.01
end
local last = deploy.traffic_canary(lb, { hold = params.hold,
  analysis = { interval = "100ms", queries = { error_rate = error_rate }, checks = { "error_rate < 0.05" } } })
step("done", function() return last.percent end)
"#;

fn weights(env: &Env) -> Vec<String> {
    env.read("weights").lines().map(str::to_string).collect()
}

#[test]
fn a_traffic_canary_moves_through_its_stages_judged_by_numbers_and_goes_back_to_stable_when_they_fail() {
    let env = Env::new();
    env.write("rb.lua", TRAFFIC_CANARY);
    env.write("weights", "");
    let r = env.run(&["run", "rb.lua"]);
    r.assert_code(0);
    assert_eq!(weights(&env), ["5", "25", "50", "100"]);
    let show = env.show("last");
    for stage in ["traffic 5%", "traffic 25%", "traffic 50%", "traffic 100%"] {
        assert_eq!(Env::step(&show, stage)["status"], "succeeded", "{stage}");
    }
    assert_eq!(Env::step(&show, "traffic 25%")["result"]["checks"]["error_rate"]["last"], 0.01);
    assert_eq!(Env::step(&show, "done")["result"], 100);

    // Bad numbers at 25%: traffic goes back to the stable version at once, and the step says why.
    env.write("weights", "");
    let r = env.run(&["run", "rb.lua", "-p", "fail_at=25"]);
    r.assert_code(1);
    assert_eq!(weights(&env), ["5", "25", "0"]);
    assert!(
        r.stderr.contains("step 'traffic 25%'")
            && r.stderr.contains("the canary failed at 25% of traffic: metrics: analysis failed after ")
            && r.stderr.contains("error_rate = 0.2 broke `error_rate < 0.05` (worst 0.2)"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains("traffic back on the stable version"), "{}", r.stdout);

    // No data (on_no_data = "fail", the default) is not a pass: the first stage goes back too.
    env.write("weights", "");
    let r = env.run(&["run", "rb.lua", "-p", "no_data=true"]);
    r.assert_code(1);
    assert_eq!(weights(&env), ["5", "0"]);
    assert!(r.stderr.contains("the canary failed at 5% of traffic: metrics: analysis inconclusive"), "{}", r.stderr);

    // Killed while 50% is held: the resume sets 50% again and goes on; 5% and 25% stay done.
    env.write("weights", "");
    let mut child = env.cmd(&["run", "rb.lua", "-p", "hold=3s"]).spawn().unwrap();
    let mut killed = false;
    for _ in 0..3000 {
        if weights(&env).last().map(String::as_str) == Some("50") {
            crate::harness::signal(child.id(), libc::SIGKILL);
            killed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.wait();
    assert!(killed, "the canary never reached 50%: {:?}", weights(&env));
    let r = env.run(&["resume", "--last"]);
    r.assert_code(0);
    assert_eq!(weights(&env), ["5", "25", "50", "50", "100"]);
    let show = env.show("last");
    assert_eq!(Env::step(&show, "traffic 5%")["attempts"], 1, "{show}");
    assert_eq!(Env::step(&show, "done")["result"], 100);

    // Stages that do not rise are refused before any weight is set.
    env.write("weights", "");
    env.write("bad.lua", "runbook { name = \"bad\" }\nrequire(\"runbook.deploy\").traffic_canary({ set = function() end }, { stages = { 5, 50, 25 } })\n");
    let r = env.run(&["run", "bad.lua"]);
    r.assert_code(1);
    assert!(r.stderr.contains("stages must rise") && r.stderr.contains("bad.lua:2"), "{}", r.stderr);
}

#[test]
fn a_traffic_canary_through_haproxy_sets_the_weights_it_reports_and_requests_follow_them() {
    use crate::fixtures::HttpServer;
    let env = Env::new();
    let (stable, canary) = (HttpServer::start(), HttpServer::start());
    let lb = servers::haproxy(&stable.target(), &canary.target());
    env.write(
        "rb.lua",
        r#"runbook { name = "haproxy-canary" }
local deploy = require "runbook.deploy"
local hap = deploy.haproxy{ socket = env("HAPROXY_SOCKET"), backend = "app", stable = { "stable" }, canary = { "canary" } }
local lb = { name = hap.name, set = function(p)
  hap.set(p)
  local w = hap.weights()
  exec{ "sh", "-c", 'echo "$1 $2 $3" >> weights', "_", tostring(p), tostring(w.canary), tostring(w.stable) }
  for _ = 1, 20 do http.get(env("FRONTEND") .. "/ok") end
end }
deploy.traffic_canary(lb, { hold = "100ms" })
step("unknown server", function()
  local ok, e = pcall(deploy.haproxy{ socket = env("HAPROXY_SOCKET"), backend = "app", stable = { "stable" }, canary = { "nope" } }.set, 5)
  -- Refused before any weight changed: stable stays where the canary left it.
  return { error = tostring(e), stable = hap.weights().stable }
end)
"#,
    );
    env.write("weights", "");
    let r = env.run_env(
        &["run", "rb.lua"],
        &[("HAPROXY_SOCKET", lb.socket.to_str().unwrap()), ("FRONTEND", lb.frontend.as_str())],
    );
    r.assert_code(0);
    // The weights HAProxy reports after each stage: canary, stable.
    assert_eq!(env.read("weights").lines().collect::<Vec<_>>(), ["5 5 95", "25 25 75", "50 50 50", "100 100 0"]);
    // 20 requests a stage: 1 + 5 + 10 + 20 = 36 of 80 on the canary (round robin may shift one a stage).
    let on_canary = canary.recorded().iter().filter(|q| q.path == "/ok").count();
    let on_stable = stable.recorded().iter().filter(|q| q.path == "/ok").count();
    assert_eq!(on_canary + on_stable, 80);
    assert!((32..=40).contains(&on_canary), "{on_canary} of 80 on the canary");
    let show = env.show("last");
    let unknown = &Env::step(&show, "unknown server")["result"];
    assert!(unknown["error"].as_str().unwrap().contains("haproxy app: No such server."), "{unknown}");
    assert_eq!(unknown["stable"], 0, "a refused change moved the stable servers");
}

#[test]
fn a_traffic_canary_through_nginx_rewrites_its_upstream_checks_it_reloads_and_requests_follow() {
    use crate::fixtures::HttpServer;
    let env = Env::new();
    let (stable, canary) = (HttpServer::start(), HttpServer::start());
    let lb = servers::nginx(&stable.target(), &canary.target());
    env.write(
        "rb.lua",
        r#"runbook { name = "nginx-canary" }
local deploy = require "runbook.deploy"
local function backend(...)
  return deploy.nginx{ file = env("UPSTREAM"), upstream = "app", stable = { env("STABLE") }, canary = { ... },
                       test = env("NGINX_TEST"), reload = env("NGINX_RELOAD") }
end
local nginx = backend(env("CANARY"))
local lb = { name = nginx.name, set = function(p)
  nginx.set(p)
  sleep("400ms") -- the reloaded workers take over
  for _ = 1, 20 do http.get(env("FRONTEND") .. "/ok") end
end }
deploy.traffic_canary(lb, { hold = "100ms" })
step("refused", function()
  -- An address nginx cannot resolve: `nginx -t` refuses it and the file is put back.
  local ok, e = pcall(backend(env("CANARY"), "no-such-host.invalid:80").set, 50)
  return tostring(e)
end)
step("pool", function()
  -- The pool of the same upstream, read back after runbook wrote it (its comment is no server).
  backend(env("CANARY")).even()
  local pool = deploy.pool{ lb = "nginx", file = env("UPSTREAM"), upstream = "app", test = env("NGINX_TEST"),
                            reload = env("NGINX_RELOAD") }
  local names = {}
  for name, s in pairs(pool.servers()) do names[#names + 1] = name .. "=" .. s.weight end
  table.sort(names)
  pool.add("127.0.0.1:9", nil, 0)
  local added = pool.servers()["127.0.0.1:9"].weight
  pool.weight(env("CANARY"), 3)
  local weighed = pool.servers()[env("CANARY")].weight
  local removed, again = pool.remove("127.0.0.1:9"), pool.remove("127.0.0.1:9")
  local bad = tostring(select(2, pcall(pool.weight, env("CANARY"), 2.5)))
  backend(env("CANARY")).set(100)
  return { names = table.concat(names, " "), added = added, weighed = weighed, removed = removed, again = again, bad = bad }
end)
step("unnamed", function()
  -- A server taking requests that the backend does not name would be dropped: refused.
  local ok, e = pcall(backend("127.0.0.1:9").set, 50)
  return tostring(e)
end)
"#,
    );
    let r = env.run_env(
        &["run", "rb.lua"],
        &[
            ("UPSTREAM", lb.upstream.to_str().unwrap()),
            ("STABLE", stable.target().as_str()),
            ("CANARY", canary.target().as_str()),
            ("NGINX_TEST", lb.test.as_str()),
            ("NGINX_RELOAD", lb.reload.as_str()),
            ("FRONTEND", lb.frontend.as_str()),
        ],
    );
    r.assert_code(0);
    let on_canary = canary.recorded().iter().filter(|q| q.path == "/ok").count();
    let on_stable = stable.recorded().iter().filter(|q| q.path == "/ok").count();
    assert_eq!(on_canary + on_stable, 80);
    // 1 + 5 + 10 + 20 = 36 of 80 on the canary; a worker that had not yet taken the new config
    // may serve a few by the old one.
    assert!((28..=44).contains(&on_canary), "{on_canary} of 80 on the canary");
    // (read after the refused changes below: they left the last stage's upstream as it was)
    let upstream = std::fs::read_to_string(&lb.upstream).unwrap();
    assert!(
        upstream.contains(&format!("server {} down;", stable.target()))
            && upstream.contains(&format!("server {} weight=100;", canary.target())),
        "{upstream}"
    );
    let show = env.show("last");
    let refused = Env::step(&show, "refused")["result"].as_str().unwrap().to_string();
    assert!(
        refused.contains("refused the new upstream (put back as it was)") && refused.contains("no-such-host.invalid"),
        "{refused}"
    );
    let pool = &Env::step(&show, "pool")["result"];
    let mut names = [format!("{}=1", stable.target()), format!("{}=1", canary.target())];
    names.sort();
    assert_eq!(pool["names"], names.join(" ").as_str(), "{pool}");
    assert_eq!((pool["added"].as_u64(), pool["weighed"].as_u64()), (Some(0), Some(3)), "{pool}");
    assert_eq!((pool["removed"].as_bool(), pool["again"].as_bool()), (Some(true), Some(false)), "{pool}");
    assert!(pool["bad"].as_str().unwrap().contains("a weight is a whole number from 0 to 256, got 2.5"), "{pool}");
    let unnamed = Env::step(&show, "unnamed")["result"].as_str().unwrap().to_string();
    assert!(
        unnamed.contains(&format!("{} take(s) requests but are neither canary nor stable", canary.target())),
        "{unnamed}"
    );
}

/// The analysis params of the traffic runbooks for this staging: Prometheus at `prom` (scraping
/// every second), sampled every second after a warmup of the rate window (3 s; the runbooks' are
/// minutes) and two scrapes, with the guide's rules without their `for` (the holds here are
/// seconds).
fn judged_by(prom: &str) -> Vec<String> {
    let window = "3s";
    vec![
        format!("prometheus={prom}"),
        "warmup=5s".into(),
        "interval=1s".into(),
        "checks=error_rate < 5%,p95_latency < 5s".into(),
        format!(
            "error_rate_query=(sum(rate(http_requests_total{{instance=~\"({{canary}}):.*\",status=~\"5..\"}}[{window}])) or vector(0)) \
             / sum(rate(http_requests_total{{instance=~\"({{canary}}):.*\"}}[{window}]))"
        ),
        format!(
            "latency_query=histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{{instance=~\"({{canary}}):.*\"}}[{window}])))"
        ),
    ]
}

/// The weights HAProxy reports for `servers` of backend `app`.
fn haproxy_weights(socket: &std::path::Path, servers: &[String]) -> Vec<u32> {
    servers
        .iter()
        .map(|s| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("echo 'get weight app/{s}' | socat stdio unix-connect:{}", socket.display()))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.split(' ').next().and_then(|w| w.parse().ok()).unwrap_or_else(|| panic!("haproxy said {text}"))
        })
        .collect()
}

/// examples/steward's deploy is the guide's canary: 5%, 25%, 50%, 100% of the requests through
/// HAProxy, each stage judged by Prometheus scraping the staging services, under steady traffic.
/// A healthy release reaches every host with no failed request; one that fails a fifth of its
/// requests is stopped at its first stage, the pool and the database put back.
#[test]
fn steward_releases_by_traffic_canary_and_a_release_with_errors_goes_back_at_the_first_stage() {
    use crate::fixtures::SteadyLoad;
    let pg = servers::postgres();
    let url = pg.fresh_database("steward_canary");
    let st = Staging::new(false);
    let env = &st.env;
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for v in ["1.0.0", "1.1.0", "1.2.0"] {
        st.build(v, true);
    }
    env.write("build-1.2.0/ERRORS", "5"); // every fifth request a 500
    env.write("m-1.1.0.sql", "alter table agent_logs add column level text");
    env.write("down-1.1.0.sql", "alter table agent_logs drop column level");
    env.write("m-1.2.0.sql", "alter table agent_logs add column trace_id text");
    env.write("down-1.2.0.sql", "alter table agent_logs drop column trace_id");
    let servers: Vec<String> =
        st.hosts.iter().map(|h| format!("{}:{}", h.split(':').next().unwrap(), st.port)).collect();
    let pool: Vec<(&str, &str, u32)> = servers.iter().map(|s| (s.as_str(), s.as_str(), 100)).collect();
    let lb = servers::haproxy_pool(&pool);
    let prom = servers::prometheus(&servers);
    let deploy = |version: &str, extra: &[String]| {
        let mut args = vec![
            "run".to_string(),
            repo.join("runbooks/deploy.lua").display().to_string(),
            "--params-file".into(),
            repo.join("examples/steward/params/deploy.toml").display().to_string(),
        ];
        let mut p = vec![
            format!("version={version}"),
            format!("from={}", env.path(&format!("build-{version}")).display()),
            format!("root={}/{{host}}", env.path("hosts").display()),
            format!("restart={}", RESTART.replace("PORT", &st.port.to_string())),
            format!("health_url=http://{{host}}:{}/api/health", st.port),
            format!("store=file://{}", env.path("backups").display()),
            // The load balancer and Prometheus of this staging, and the guide's stages held for
            // seconds instead of minutes (the rules' `for` fit in the hold).
            "lb_host=".into(),
            format!("haproxy_socket={}", lb.socket.display()),
            "lb_backend=app".into(),
            format!("lb_server={{host}}:{}", st.port),
            "hold=4s".into(),
        ];
        p.extend(judged_by(&prom.url));
        p.extend(extra.iter().cloned());
        for v in p {
            args.push("-p".into());
            args.push(v);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        env.run_env(&args, &[("DATABASE_URL", url.as_str()), ("NEXT_PUBLIC_APP_URL", "https://app")])
    };
    // A first release has nothing to canary against: everywhere at once.
    deploy("1.0.0", &["strategy=rolling".into()]).assert_code(0);
    let load = SteadyLoad::start(&lb.frontend, "/", 50);

    let r = deploy(
        "1.1.0",
        &[
            format!("migration={}", env.path("m-1.1.0.sql").display()),
            format!("down_migration={}", env.path("down-1.1.0.sql").display()),
        ],
    );
    r.assert_code(0);
    let show = env.show("last");
    // The canary is the group's first host; the weights are HAProxy's own answers after each stage.
    let seen = |stage: &str| -> Vec<u64> {
        let w = &Env::step(&show, stage)["result"]["weights"]["seen"];
        servers.iter().map(|s| w[s].as_u64().unwrap_or_else(|| panic!("{stage}: {w}"))).collect()
    };
    assert_eq!(seen("traffic 5%"), [10, 95, 95]);
    assert_eq!(seen("traffic 25%"), [50, 75, 75]);
    assert_eq!(seen("traffic 50%"), [100, 50, 50]);
    // Promotion: the other hosts one at a time out of the pool and back, then every weight even.
    let promoted = &Env::step(&show, "promote")["result"]["seen"];
    assert_eq!(
        servers.iter().map(|s| promoted[s].as_u64().unwrap()).collect::<Vec<_>>(),
        [100, 100, 100],
        "{promoted}"
    );
    for stage in ["traffic 5%", "traffic 25%", "traffic 50%"] {
        let result = &Env::step(&show, stage)["result"];
        assert_eq!(result["outcome"], "passed", "{stage}: {result}");
        assert!(result["checks"]["error_rate"]["samples"].as_u64().unwrap() >= 2, "{stage}: {result}");
        assert_eq!(result["checks"]["error_rate"]["worst"], 0, "{stage}: {result}");
    }
    assert_eq!(Env::step(&show, "promote")["status"], "succeeded");
    assert_eq!(haproxy_weights(&lb.socket, &servers), [100, 100, 100]);
    for h in &st.hosts {
        assert_eq!(st.current(h).as_deref(), Some("1.1.0"), "{h}");
    }
    let during = load.statuses();
    assert!(during.len() > 500, "{} requests", during.len());
    assert!(during.iter().all(|s| *s == 200), "failed requests during a healthy canary: {:?}", {
        let mut bad: Vec<_> = during.iter().filter(|s| **s != 200).collect();
        bad.dedup();
        bad
    });

    // 1.2.0 fails a fifth of its requests: the first stage sees it, and everything goes back.
    let r = deploy(
        "1.2.0",
        &[
            format!("migration={}", env.path("m-1.2.0.sql").display()),
            format!("down_migration={}", env.path("down-1.2.0.sql").display()),
        ],
    );
    r.assert_code(1);
    assert!(
        r.stderr.contains("the canary failed at 5% of traffic")
            && r.stderr.contains("error_rate = ")
            && r.stderr.contains("broke `error_rate < 5%`"),
        "{}",
        r.stderr
    );
    let show = env.show("last");
    assert_eq!(Env::step(&show, "traffic 5%")["status"], "failed");
    assert!(show["steps"].as_array().unwrap().iter().all(|s| s["name"] != "traffic 25%"), "{show}");
    assert_eq!(show["status"], "rolled_back", "{show}");
    assert_eq!(Env::step(&show, "canary release")["undo_status"], "done", "{show}");
    assert_eq!(Env::step(&show, "migrate")["undo_status"], "done", "{show}");
    assert_eq!(haproxy_weights(&lb.socket, &servers), [100, 100, 100]);
    for h in &st.hosts {
        assert_eq!(st.current(h).as_deref(), Some("1.1.0"), "{h}");
    }
    let columns = pg.query(
        &url,
        "select string_agg(column_name, ',' order by column_name) from information_schema.columns where table_name = 'agent_logs'",
    );
    assert!(columns.contains("level") && !columns.contains("trace_id"), "{columns}");
    // Back on 1.1.0 everywhere: requests succeed again.
    let after = load.statuses().len();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let statuses = load.stop();
    assert!(statuses.len() > after + 20 && statuses[after..].iter().all(|s| *s == 200), "{:?}", &statuses[after..]);
}

/// What HAProxy's `show stat` says of backend `app`'s servers: (name, weight) each.
fn haproxy_servers(socket: &std::path::Path) -> Vec<(String, u32)> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("echo 'show stat' | socat stdio unix-connect:{}", socket.display()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let header: Vec<&str> = text.lines().next().unwrap().trim_start_matches("# ").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.len() > 2 && f[0] == "app" && f[1] != "BACKEND")
        .map(|f| (f[1].to_string(), f[col("weight")].parse().unwrap()))
        .collect()
}

/// Requests with a 200 a staging service has answered (its /metrics).
fn answered(ip: &str, port: u16) -> u64 {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect((ip, port)).unwrap();
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("http_requests_total{status=\"200\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// A host scaled out under steady traffic gets the pool's release, joins HAProxy at a small
/// weight, is judged by Prometheus, takes its full weight and serves; scaled in, it is drained,
/// removed and stopped; scaling_check hands a fired trigger to the same scale-out behind an
/// approval. Not one request fails along the way.
#[test]
fn a_host_scales_out_and_in_under_steady_traffic_with_no_failed_request() {
    use crate::fixtures::SteadyLoad;
    let st = Staging::new(false);
    let env = &st.env;
    let s = servers::sshd();
    let (pool_hosts, spare) = (&st.hosts[..2], &st.hosts[2]);
    // The pool is the first two hosts; the third, the spare, in a group of its own for its SSH settings.
    let settings = format!(
        "user = \"{}\"\nkey = \"{}\"\nknown_hosts = \"{}\"\ntimeout = \"3s\"\n",
        s.user,
        s.key.display(),
        s.known_hosts.display()
    );
    env.write(
        "runbook.toml",
        &format!(
            "[hosts.web]\nhosts = [\"{}\", \"{}\"]\n{settings}\n[hosts.spare]\nhosts = [\"{spare}\"]\n{settings}",
            pool_hosts[0], pool_hosts[1]
        ),
    );
    st.build("1.0.0", true);
    st.release("1.0.0", "rolling", &[]).assert_code(0);
    let ip = |h: &str| h.split(':').next().unwrap().to_string();
    let server = |h: &str| format!("{}:{}", ip(h), st.port);
    let lb = servers::haproxy_pool(&[
        (&server(&pool_hosts[0]), &server(&pool_hosts[0]), 100),
        (&server(&pool_hosts[1]), &server(&pool_hosts[1]), 100),
    ]);
    let prom = servers::prometheus(&st.hosts.iter().map(|h| server(h)).collect::<Vec<_>>());
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let common = {
        let mut p = vec![
            "lb=haproxy".to_string(),
            format!("haproxy_socket={}", lb.socket.display()),
            "lb_backend=app".into(),
            format!("lb_server={{host}}:{}", st.port),
            format!("lb_address={{host}}:{}", st.port),
            format!("root={}/{{host}}", env.path("hosts").display()),
            "stop=kill $(cat run-main.pid)".into(),
            "hold=3s".into(),
        ];
        p.extend(judged_by(&prom.url));
        p
    };
    let run = |runbook: &str, extra: &[String]| {
        let mut args = vec!["run".to_string(), repo.join("runbooks").join(runbook).display().to_string()];
        for v in common.iter().chain(extra) {
            args.push("-p".into());
            args.push(v.clone());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        env.run(&args)
    };
    let restart = format!("restart={}", RESTART.replace("PORT", &st.port.to_string()));
    let health = format!("health_url=http://{{host}}:{}/api/health", st.port);
    let load = SteadyLoad::start(&lb.frontend, "/", 50);
    std::thread::sleep(std::time::Duration::from_secs(1));

    // Out: the release the pool runs, copied from it; weight 10 while judged, then 100.
    run("scale_out.lua", &[format!("host={spare}"), restart.clone(), health.clone()]).assert_code(0);
    let show = env.show("last");
    assert_eq!(Env::step(&show, &format!("release on {spare}"))["result"]["id"], "1.0.0");
    // 10% of the requests beside two servers at 100: weight 22 (9.9%).
    assert_eq!(Env::step(&show, "join pool")["result"]["weight"], 22);
    let watched = &Env::step(&show, &format!("watch {spare}"))["result"];
    assert_eq!(watched["outcome"], "passed", "{watched}");
    assert!(watched["checks"]["error_rate"]["samples"].as_u64().unwrap() >= 2, "{watched}");
    assert_eq!(haproxy_servers(&lb.socket).last().unwrap(), &(server(spare), 100));
    assert_eq!(st.current(spare).as_deref(), Some("1.0.0"));
    std::thread::sleep(std::time::Duration::from_secs(1));
    let served = answered(&ip(spare), st.port);
    assert!(served >= 10, "the new host answered {served} requests");

    // In: drained, removed, stopped.
    let start = format!("start={}", RESTART.replace("PORT", &st.port.to_string()));
    run("scale_in.lua", &[format!("host={spare}"), "deadline=10s".into(), start]).assert_code(0);
    let names: Vec<String> = haproxy_servers(&lb.socket).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, [server(&pool_hosts[0]), server(&pool_hosts[1])]);
    assert_eq!(st.serving_eventually(spare, st.port, "down"), "down");

    // scaling_check: memory over 1% fires; with a spare, it asks, then scales out.
    let check = [
        "hosts=web".to_string(),
        "cpu_samples=1".into(),
        "memory_percent=1".into(),
        format!("spare={spare}"),
        restart,
        health,
    ];
    run("scaling_check.lua", &check).assert_code(3);
    assert_eq!(haproxy_servers(&lb.socket).len(), 2, "scaled out before the approval");
    env.run(&["approve", "last"]).assert_code(0);
    env.run(&["resume", "last"]).assert_code(0);
    assert_eq!(haproxy_servers(&lb.socket).last().unwrap(), &(server(spare), 100));

    let statuses = load.stop();
    assert!(statuses.len() > 300, "{} requests", statuses.len());
    let failed: Vec<_> = statuses.iter().enumerate().filter(|(_, s)| **s != 200).collect();
    assert!(failed.is_empty(), "failed requests (index, status): {failed:?}");
}
