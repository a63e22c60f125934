//! backup: create, verify, restore and prune against real PostgreSQL, MariaDB and SQLite, to
//! local disk and to a real S3 server.
use serde_json::json;

use crate::harness::Env;
use crate::servers::{mariadb, postgres, postgres2, s3};

fn result(show: &serde_json::Value, step: &str) -> serde_json::Value {
    let s = Env::step(show, step);
    assert_eq!(s["status"], "succeeded", "step {step}: {s}");
    s["result"].clone()
}

/// A fresh database on the test PostgreSQL server; its URL.
fn pg_database(name: &str) -> String {
    pg_database_on(postgres(), name)
}

/// A fresh database on a given PostgreSQL server; its URL.
fn pg_database_on(pg: &crate::servers::Postgres, name: &str) -> String {
    let env = Env::new();
    env.write(
        "mk.lua",
        &format!(
            "runbook {{ name = \"mk\" }}\nlocal c = db.connect(\"{}\")\nc:execute(\"drop database if exists {name} with (force)\")\nc:execute(\"create database {name}\")\n",
            pg.url
        ),
    );
    env.run(&["run", "mk.lua"]).assert_code(0);
    pg.url.replace("/postgres", &format!("/{name}"))
}

fn s3_store_lua(prefix: &str) -> String {
    let s = s3();
    format!(
        r#"storage.open("s3://{}/{prefix}", {{ endpoint = "{}", allow_http = true, region = "us-east-1", access_key_id = "{}", secret_access_key = "{}" }})"#,
        s.bucket, s.endpoint, s.access_key, s.secret_key
    )
}

#[test]
fn postgres_round_trip_to_s3_and_disk_with_the_password_out_of_sight() {
    let pg = postgres();
    let source = pg_database(&format!("bk_src_{}", std::process::id()));
    // The restore goes to another server: a second cluster.
    let target = pg_database_on(postgres2(), &format!("bk_dst_{}", std::process::id()));
    let env = Env::new();
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "pg-backup" }}
local src = db.connect(secret("SOURCE_URL"))
step("seed", function()
  src:execute("create table accounts (id bigserial primary key, owner text not null, balance numeric(12,2), tags text[], meta jsonb)")
  src:execute("insert into accounts (owner, balance, tags, meta) select 'owner ' || g, g * 1.5, array['a', 'b'], jsonb_build_object('n', g) from generate_series(1, 300000) g")
  src:execute("create table audit (id serial primary key, at timestamptz default now(), note text)")
  src:execute("insert into audit (note) values ('it''s; drop table audit'), (null)")
  src:execute("create index accounts_owner on accounts (owner)")
  return src:scalar("select count(*) from accounts")
end)
local s3 = {s3}
local disk = storage.open("file://./backups")
local m = step("backup to s3", function()
  return backup.create{{ source = secret("SOURCE_URL"), to = s3, prefix = "pg/nightly", label = "nightly" }}
end)
local plain = step("plain gzip to disk", function()
  return backup.create{{ source = secret("SOURCE_URL"), to = disk, format = "plain", compress = "gzip", tables = {{ "public.audit" }} }}
end)
step("verify", function()
  return backup.verify(m, {{ server = secret("SOURCE_URL"), checks = {{
    {{ sql = "select count(*) from accounts where balance > 1000", expect = 299334 }},
    {{ sql = "select note from audit where id = 1", expect = "it's; drop table audit" }} }} }})
end)
step("restore", function() return backup.restore(m, {{ into = secret("TARGET_URL") }}) end)
step("restore again refused", {{ continue_on_error = true }}, function() return backup.restore(m, {{ into = secret("TARGET_URL") }}) end)
step("restore clean", function() return backup.restore(m.key, {{ store = s3, into = secret("TARGET_URL"), clean = true }}).tables end)
step("plain cannot clean", {{ continue_on_error = true }}, function() return backup.restore(plain, {{ into = secret("TARGET_URL"), clean = true }}) end)
step("compare", function()
  local dst = db.connect(secret("TARGET_URL"))
  return {{ sum = dst:scalar("select sum(balance)::text from accounts"), want = src:scalar("select sum(balance)::text from accounts"),
           note = dst:scalar("select note from audit where id = 1"),
           idx = dst:scalar("select count(*) from pg_indexes where indexname = 'accounts_owner'") }}
end)
step("plain verify", function() return backup.verify(plain, {{ server = secret("SOURCE_URL") }}).tables end)
step("listed", function()
  local l = backup.list(s3, {{ label = "nightly" }})
  return {{ n = #l, verified = l[1].verified_at ~= nil, ok = l[1].verification.ok }}
end)
"#,
            s3 = s3_store_lua(&format!("pg-{}", std::process::id())),
        ),
    );
    // Watch the process list while the run goes: no pg_dump may show the password.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = std::thread::spawn({
        let password = pg.password.to_string();
        let stop = stop.clone();
        move || {
            let mut seen = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for e in std::fs::read_dir("/proc").unwrap().flatten() {
                    let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
                    let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                    if cmd.contains("pg_dump") || cmd.contains("pg_restore") {
                        seen += 1;
                        assert!(!cmd.contains(&password), "password in the process list: {cmd}");
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            seen
        }
    });
    let out = env.run_env(&["run", "rb.lua"], &[("SOURCE_URL", &source), ("TARGET_URL", &target)]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = watcher.join().unwrap();
    out.assert_code(0);
    assert!(seen > 0, "the process list was watched while pg_dump/pg_restore ran");
    let show = env.show("last");
    let m = result(&show, "backup to s3");
    assert_eq!(m["engine"], "postgres");
    assert_eq!(m["tool"], "pg_dump");
    assert_eq!(m["format"], "custom");
    assert_eq!(m["label"], "nightly");
    assert_eq!(m["tables"], json!({"accounts": 300000, "audit": 2}));
    assert!(m["key"].as_str().unwrap().starts_with("pg/nightly/postgres-bk_src_"), "{m}");
    assert!(m["key"].as_str().unwrap().ends_with(".dump.zst"), "{m}");
    assert!(m["bytes_stored"].as_u64().unwrap() < m["bytes_raw"].as_u64().unwrap() / 2, "compressed: {m}");
    assert!(!m["source"].as_str().unwrap().contains(pg.password), "{m}");
    assert_eq!(m["sha256"].as_str().unwrap().len(), 64);
    let plain = result(&show, "plain gzip to disk");
    assert_eq!(plain["tables"], json!({"audit": 2}));
    assert!(plain["key"].as_str().unwrap().ends_with(".sql.gz"));
    let v = result(&show, "verify");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["tables"], json!({"accounts": 300000, "audit": 2}));
    assert!(v["scratch"].as_str().unwrap().starts_with("runbook_verify_"));
    assert_eq!(result(&show, "restore")["tables"], json!({"accounts": 300000, "audit": 2}));
    let again = Env::step(&show, "restore again refused")["error"].as_str().unwrap().to_string();
    assert!(again.contains("already has 2 table(s)") && again.contains("clean = true"), "{again}");
    assert_eq!(result(&show, "restore clean"), json!({"accounts": 300000, "audit": 2}));
    let plain_clean = Env::step(&show, "plain cannot clean")["error"].as_str().unwrap().to_string();
    assert!(plain_clean.contains("a plain-format backup cannot replace them"), "{plain_clean}");
    let c = result(&show, "compare");
    assert_eq!(c["sum"], c["want"]);
    assert_eq!(c["note"], "it's; drop table audit");
    assert_eq!(c["idx"], 1);
    assert_eq!(result(&show, "plain verify"), json!({"audit": 2}));
    assert_eq!(result(&show, "listed"), json!({"n": 1, "verified": true, "ok": true}));
    // The scratch database is gone.
    let scratch = v["scratch"].as_str().unwrap().to_string();
    env.write(
        "check.lua",
        &format!("runbook {{ name = \"c\" }}\nstep(\"n\", function() return db.connect(secret(\"PG_URL\")):scalar(\"select count(*) from pg_database where datname = $1\", \"{scratch}\") end)\n"),
    );
    env.run_env(&["run", "check.lua"], &[("PG_URL", &pg.url)]).assert_code(0);
    assert_eq!(result(&env.show("last"), "n"), 0);
    for text in [out.all(), env.run(&["show", "last", "--events"]).all()] {
        assert!(!text.contains(pg.password), "{text}");
    }
    assert!(!crate::harness::contains_bytes(
        &crate::harness::journal_bytes(&env.journal_path()),
        pg.password.as_bytes()
    ));
}

#[test]
fn a_flipped_byte_or_a_truncated_object_is_caught_before_anything_is_restored() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "corrupt" }
local app = db.connect("sqlite://app.db?mode=rwc")
app:execute("create table if not exists t (id integer primary key, v text)")
app:execute("insert into t (v) values ('a'), ('b'), ('c')")
local store = storage.open("file://./bk")
local m = step("backup", function() return backup.create{ source = "sqlite://app.db", to = store, compress = "none" } end)
step("corrupt", function()
  local bytes = store:get(m.key)
  local i = #bytes // 2
  store:put(m.key, bytes:sub(1, i - 1) .. string.char((bytes:byte(i) + 1) % 256) .. bytes:sub(i + 1))
  return #bytes
end)
step("verify flipped", { continue_on_error = true }, function() return backup.verify(m) end)
step("restore flipped", { continue_on_error = true }, function() return backup.restore(m, { into = "sqlite://restored.db" }) end)
step("truncate", function()
  local bytes = store:get(m.key)
  store:put(m.key, bytes:sub(1, 1000))
  return true
end)
step("restore truncated", { continue_on_error = true }, function() return backup.restore(m, { into = "sqlite://restored.db" }) end)
"#,
    );
    env.run(&["run", "rb.lua"]).assert_code(0);
    let show = env.show("last");
    for step in ["verify flipped", "restore flipped", "restore truncated"] {
        let e = Env::step(&show, step)["error"].as_str().unwrap().to_string();
        assert!(
            e.contains("checksum mismatch, the object is corrupted or truncated") && e.contains("nothing was restored"),
            "{step}: {e}"
        );
    }
    assert!(Env::step(&show, "restore truncated")["error"].as_str().unwrap().contains("1000 bytes read"));
    assert!(!env.path("restored.db").exists(), "nothing restored");
}

#[test]
fn sqlite_and_mysql_round_trips_and_a_pruned_history() {
    let maria = mariadb();
    let env = Env::new();
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "sqlite-mysql" }}
local store = {s3}
local app = db.connect("sqlite://app.db?mode=rwc")
step("seed sqlite", function()
  app:execute("create table items (id integer primary key, name text, price real, data blob)")
  for i = 1, 500 do app:execute("insert into items (name, price, data) values (?, ?, ?)", "item " .. i, i / 4, "b\0" .. i) end
  return true
end)
local sm = step("sqlite backup", function() return backup.create{{ source = "sqlite://app.db", to = store, prefix = "sqlite" }} end)
step("sqlite verify", function() return backup.verify(sm, {{ checks = {{ {{ sql = "select sum(price) from items", expect = 31312.5 }} }} }}) end)
step("sqlite restore", function() return backup.restore(sm, {{ into = "sqlite://restored/app.db" }}).tables end)
local my = db.connect(secret("MYSQL_URL"))
step("seed mysql", function()
  my:execute("drop table if exists orders")
  my:execute("create table orders (id int auto_increment primary key, customer varchar(100), total decimal(10,2), note text)")
  for i = 1, 200 do my:execute("insert into orders (customer, total, note) values (?, ?, ?)", "c" .. i, i * 2.5, "it's; --" .. i) end
  return true
end)
local mm = step("mysql backup", function() return backup.create{{ source = secret("MYSQL_URL"), to = store, prefix = "mysql" }} end)
step("mysql verify", function() return backup.verify(mm, {{ server = secret("MYSQL_URL"), checks = {{ {{ sql = "select count(*) from orders where note like 'it''s%'", expect = 200 }} }} }}) end)
step("mysql to disk and back", function()
  local disk = storage.open("file://./mybk")
  local m = backup.create{{ source = secret("MYSQL_URL"), to = disk, compress = "gzip" }}
  my:execute("drop database if exists app_restored")
  my:execute("create database app_restored")
  return backup.restore(m, {{ into = secret("RESTORED_URL") }}).tables
end)
step("prune dry", function() return backup.prune(store, {{ keep_last = 1, dry_run = true }}) end)
step("prune none", {{ continue_on_error = true }}, function() return backup.prune(store, {{}}) end)
"#,
            s3 = s3_store_lua(&format!("mixed-{}", std::process::id())),
        ),
    );
    let restored = maria.url.replace("/app", "/app_restored");
    let out = env.run_env(&["run", "rb.lua"], &[("MYSQL_URL", &maria.url), ("RESTORED_URL", &restored)]);
    out.assert_code(0);
    let show = env.show("last");
    let sm = result(&show, "sqlite backup");
    assert_eq!(sm["tables"], json!({"items": 500}));
    assert_eq!(result(&show, "sqlite verify")["ok"], true);
    assert_eq!(result(&show, "sqlite restore"), json!({"items": 500}));
    let mm = result(&show, "mysql backup");
    assert_eq!(mm["engine"], "mysql");
    assert_eq!(mm["tables"]["orders"], 200);
    let mv = result(&show, "mysql verify");
    assert_eq!(mv["ok"], true, "{mv}");
    assert_eq!(result(&show, "mysql to disk and back"), json!({"orders": 200}));
    let prune = result(&show, "prune dry");
    assert_eq!(prune["dry_run"], true);
    let kept: Vec<&str> = prune["kept"].as_array().unwrap().iter().map(|k| k["key"].as_str().unwrap()).collect();
    assert_eq!(kept, [mm["key"].as_str().unwrap()], "{prune}");
    assert_eq!(prune["kept"][0]["reasons"], json!(["last 1", "newest verified"]));
    assert_eq!(prune["removed"][0]["key"], sm["key"]);
    let none = Env::step(&show, "prune none")["error"].as_str().unwrap().to_string();
    assert!(none.contains("give at least one rule"), "{none}");
    assert!(!out.all().contains(maria.password));
}

#[test]
fn a_backup_killed_midway_is_never_listed_and_resume_makes_one() {
    let source = pg_database(&format!("bk_kill_{}", std::process::id()));
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "pg-kill" }
local src = db.connect(secret("SOURCE_URL"))
step("seed", function()
  src:execute("create table big (id bigserial primary key, pad text)")
  src:execute("insert into big (pad) select repeat(md5(g::text), 8) from generate_series(1, 600000) g")
  return true
end)
local store = storage.open("file://./backups")
step("backup", function() return backup.create{ source = secret("SOURCE_URL"), to = store, compress = "none" } end)
step("listed", function() return #backup.list(store) end)
"#,
    );
    let mut child = env
        .cmd(&["run", "rb.lua"])
        .env("SOURCE_URL", &source)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill the runner as soon as its pg_dump runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let found = loop {
        let dumping = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let fields: Vec<&str> = stat.split_whitespace().collect();
            stat.contains("(pg_dump)") && fields.get(3) == Some(&child.id().to_string().as_str())
        });
        if dumping {
            break true;
        }
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert!(found, "pg_dump was seen running");
    crate::harness::signal(child.id(), 9);
    let _ = child.wait();
    let objects: Vec<_> = walk(&env.path("backups"));
    assert!(objects.iter().all(|p| !p.ends_with(".manifest.json")), "no manifest, so no listed backup: {objects:?}");
    let out = env.run_env(&["resume", "--last"], &[("SOURCE_URL", &source)]);
    out.assert_code(0);
    assert_eq!(result(&env.show("last"), "listed"), 1);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn the_backup_runbooks_back_up_drill_and_recover_a_database() {
    let env = Env::new();
    let runbooks = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks");
    let rb = |name: &str| runbooks.join(name).display().to_string();
    let app = env.path("app.db");
    env.write(
        "seed.lua",
        "runbook { name = \"seed\" }\nlocal c = db.connect(\"sqlite://app.db?mode=rwc\")\nc:execute(\"create table users (id integer primary key, email text)\")\nfor i = 1, 250 do c:execute(\"insert into users (email) values (?)\", \"u\" .. i .. \"@example.com\") end\n",
    );
    env.run(&["run", "seed.lua"]).assert_code(0);
    let url = format!("sqlite://{}", app.display());
    let store = format!("store=file://{}", env.path("backups").display());
    let envs = [("DATABASE_URL", url.as_str())];

    env.run_env(&["run", &rb("db_backup.lua"), "-p", &store], &envs).assert_code(0);
    let show = env.show("last");
    assert_eq!(result(&show, "verify by restore")["tables"], json!({"users": 250}));
    assert_eq!(result(&show, "prune")["kept"], 1);

    env.run_env(&["run", &rb("verify_backup.lua"), "-p", &store], &envs).assert_code(0);
    let drill = result(&env.show("last"), "restore drill");
    assert_eq!(drill["ok"], true);
    assert_eq!(drill["tables"], json!({"users": 250}));

    env.write(
        "policies.sql",
        "create index users_email on users (email);\ncreate unique index users_id on users (id);\n",
    );
    let target = format!("sqlite://{}", env.path("recovered/app.db").display());
    let policies = format!("policies={}", env.path("policies.sql").display());
    let out = env.run_env(
        &["run", &rb("dr_restore.lua"), "-p", &store, "-p", &policies, "--yes"],
        &[("TARGET_DATABASE_URL", target.as_str())],
    );
    out.assert_code(0);
    let show = env.show("last");
    assert_eq!(result(&show, "re-apply policies"), json!({"statements": 2}));
    assert_eq!(result(&show, "compare counts"), json!({"users": 250}));
    assert!(out.stdout.contains("point the application at the new database"), "{}", out.stdout);
}

#[test]
fn prune_removes_only_what_it_should_and_failures_are_recorded() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "prune" }
local app = db.connect("sqlite://app.db?mode=rwc")
app:execute([[create table if not exists "odd.name" (id integer primary key)]])
app:execute([[insert into "odd.name" default values]])
local store = storage.open("file://./bk")
local function err(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error")
  return tostring(e):match("[^\n]*")
end
step("three backups", function()
  local keys = {}
  for i = 1, 3 do keys[i] = backup.create{ source = "sqlite://app.db", to = store, prefix = "daily" }.key end
  return keys
end)
step("strangers", function()
  store:put("daily/README.txt", "not a backup")
  local newest = backup.latest(store)
  store:put("archive/copied.manifest.json", store:get(newest.key .. ".manifest.json"))
  return #backup.list(store)
end)
step("verify then break", function()
  local oldest = backup.list(store)[3]
  local ok = backup.verify(oldest).ok
  store:put(oldest.key, "truncated")
  local again = err(backup.verify, oldest)
  local recorded = backup.list(store)[3].verification
  local newest = backup.latest(store)
  local good = backup.verify(newest).ok
  local typo = err(backup.verify, newest, { checks = { { sql = "selec 1", expect = 1 } } })
  return { first = ok, again = again, recorded_ok = recorded.ok, recorded_problem = recorded.problems[1] ~= nil,
           good = good, typo = typo, still_good = backup.latest(store).verification.ok }
end)
step("errors", function()
  return {
    zero = err(backup.prune, store, { keep_last = 0 }),
    into_busy = err(backup.verify, backup.latest(store), { into = "sqlite://app.db" }),
    leak = err(backup.create, { source = "postgres://u:hunter2secret@host:99999/db", to = store }),
    level = err(backup.create, { source = "sqlite://app.db", to = store, level = 99 }),
  }
end)
step("prune", function() return backup.prune(store, { keep_last = 1 }) end)
step("after", function()
  local keys = {}
  for _, o in ipairs(store:list()) do keys[#keys + 1] = o.key end
  return { listed = #backup.list(store), keys = keys }
end)
"#,
    );
    // Old uploads that never got their manifest (one with a dot in its database name), written
    // three days ago.
    for name in ["sqlite-app-20200101T000000Z-abcd.sqlite.zst", "sqlite-app.v2-20200101T000000Z-abce.sqlite.zst"] {
        let path = env.write(&format!("bk/daily/{name}"), "an upload that never got its manifest");
        let touched = std::process::Command::new("touch").args(["-d", "3 days ago"]).arg(&path).status().unwrap();
        assert!(touched.success());
    }
    env.run(&["run", "rb.lua"]).assert_code(0);
    let show = env.show("last");
    let keys = result(&show, "three backups");
    assert_eq!(result(&show, "strangers"), 3, "the copied manifest is not a backup");
    let v = result(&show, "verify then break");
    assert_eq!(v["first"], true);
    assert!(v["again"].as_str().unwrap().contains("checksum mismatch"), "{v}");
    assert_eq!(v["recorded_ok"], false, "the failed verification is in the manifest: {v}");
    assert_eq!(v["recorded_problem"], true);
    assert_eq!(
        (v["good"].clone(), v["still_good"].clone()),
        (json!(true), json!(true)),
        "a typo in a check does not erase a good verification: {v}"
    );
    assert!(v["typo"].as_str().unwrap().contains("selec"), "{v}");
    let e = result(&show, "errors");
    assert!(e["zero"].as_str().unwrap().contains("keep_last = 0 keeps nothing"), "{e}");
    assert!(e["into_busy"].as_str().unwrap().contains("already has 1 table(s)"), "{e}");
    assert!(
        !e["leak"].as_str().unwrap().contains("hunter2secret")
            && e["leak"].as_str().unwrap().contains("invalid database URL"),
        "{e}"
    );
    assert!(e["level"].as_str().unwrap().contains("level 99"), "{e}");
    let p = result(&show, "prune");
    assert_eq!(p["kept"].as_array().unwrap().len(), 1, "{p}");
    assert_eq!(p["kept"][0]["key"], keys[2]);
    assert_eq!(p["removed"].as_array().unwrap().len(), 2, "{p}");
    assert_eq!(
        p["incomplete_removed"].as_array().unwrap().iter().map(|i| i["key"].clone()).collect::<Vec<_>>(),
        [
            json!("daily/sqlite-app-20200101T000000Z-abcd.sqlite.zst"),
            json!("daily/sqlite-app.v2-20200101T000000Z-abce.sqlite.zst")
        ]
    );
    let after = result(&show, "after");
    assert_eq!(after["listed"], 1);
    let mut want = vec![
        json!("archive/copied.manifest.json"),
        json!("daily/README.txt"),
        keys[2].clone(),
        json!(format!("{}.manifest.json", keys[2].as_str().unwrap())),
    ];
    want.sort_by_key(|k| k.as_str().unwrap().to_string());
    assert_eq!(after["keys"], json!(want), "the stranger files stay");
}

#[test]
fn a_backup_whose_upload_fails_reports_the_upload_error_first() {
    let pg = postgres();
    let source = pg.fresh_database("bk_upload");
    let env = Env::new();
    // The store opens, then its folder is replaced by a file: the upload fails midway.
    env.write(
        "rb.lua",
        r#"runbook { name = "upload" }
local c = db.connect(secret("SOURCE_URL"))
step("seed", function() c:execute("create table t as select g as id from generate_series(1, 100000) g") end)
local store = storage.open("file://./bk")
step("break the store", function() exec{shell = "rm -r bk && echo file > bk"} end)
step("backup", function() return backup.create{ source = secret("SOURCE_URL"), to = store } end)
"#,
    );
    let r = env.run_env(&["run", "rb.lua"], &[("SOURCE_URL", &source)]);
    r.assert_code(1);
    let err = Env::step(&env.show("last"), "backup")["error"].as_str().unwrap().to_string();
    assert!(err.contains("uploading pg_dump's output") && err.contains("failed:"), "{err}");
    assert!(!err.contains("exit -1"), "{err}");
}
