//! The shipped runbooks resume after a kill inside their long steps and reach the same end as an
//! uninterrupted run: every step is safe to run again after being cut anywhere.
use serde_json::json;

use crate::harness::{signal, Env};
use crate::servers::postgres;

fn runbook(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks").join(name).display().to_string()
}

/// Waits until `tool` runs as a child of `parent` (the step's command), at most 30 s.
fn wait_for_child(parent: u32, tool: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let running = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let fields: Vec<&str> = stat.split_whitespace().collect();
            stat.contains(&format!("({tool})")) && fields.get(3) == Some(&parent.to_string().as_str())
        });
        if running {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn dr_restore_killed_while_restoring_resumes_to_the_same_restored_database() {
    let pg = postgres();
    let source = pg.fresh_database("dr_src");
    let target = pg.fresh_database("dr_dst");
    let env = Env::new();
    env.write(
        "seed.lua",
        r#"runbook { name = "seed" }
local c = db.connect(secret("SOURCE_URL"))
step("seed", function()
  c:execute("create table orders (id bigserial primary key, customer text not null, total numeric(12,2))")
  c:execute("insert into orders (customer, total) select 'c' || g, g * 0.5 from generate_series(1, 400000) g")
  c:execute("create table refunds (id serial primary key, order_id bigint references orders (id))")
  c:execute("insert into refunds (order_id) select g from generate_series(1, 1000) g")
  c:execute("create index orders_customer on orders (customer)")
end)
step("backup", function() return backup.create{ source = secret("SOURCE_URL"), to = storage.open("file://./backups") } end)
"#,
    );
    env.run_env(&["run", "seed.lua"], &[("SOURCE_URL", &source)]).assert_code(0);

    let store = format!("store=file://{}", env.path("backups").display());
    let args = ["run", &runbook("dr_restore.lua"), "-p", &store, "--yes"];
    let child = env
        .cmd(&args)
        .env("TARGET_DATABASE_URL", &target)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if !wait_for_child(child.id(), "pg_restore") {
        let out = crate::harness::finish(child, 30);
        panic!(
            "pg_restore was not seen running:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // pg_restore's session names the run, the step and the attempt, as the db primitive's do.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pg.query(&target, "select count(*) from pg_stat_activity where application_name like 'runbook/%/restore#1' and datname = current_database()") == "0" {
        assert!(std::time::Instant::now() < deadline, "pg_restore's session is labelled with its attempt");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Let it restore part of the data, then kill the runner (pg_restore dies with it).
    std::thread::sleep(std::time::Duration::from_millis(300));
    signal(child.id(), 9);
    let _ = crate::harness::finish(child, 30);
    let tables = pg.query(&target, "select count(*) from information_schema.tables where table_schema = 'public'");
    assert_ne!(tables, "0", "the cut-off restore left tables behind");

    let resumed = env.cmd(&["resume", "last"]).env("TARGET_DATABASE_URL", &target).output().unwrap();
    assert_eq!(resumed.status.code(), Some(0), "{}", String::from_utf8_lossy(&resumed.stderr));
    let show = env.show("last");
    let restore = Env::step(&show, "restore");
    assert_eq!(restore["status"], "succeeded");
    assert_eq!(restore["result"]["cleaned_earlier_attempt"], true);
    assert_eq!(Env::step(&show, "compare counts")["result"], json!({"orders": 400000, "refunds": 1000}));
    assert_eq!(
        pg.query(&target, "select sum(total)::text from orders"),
        pg.query(&source, "select sum(total)::text from orders")
    );
    assert_eq!(pg.query(&target, "select count(*) from pg_indexes where indexname = 'orders_customer'"), "1");

    // The mark is gone with the restore complete: nothing of ours stays in the database.
    assert_eq!(
        pg.query(&target, "select count(*) from information_schema.tables where table_name = '_runbook_restore'"),
        "0"
    );
    // Another run does not clean what this one restored: it is refused, as any filled database.
    let other = env.cmd(&args).env("TARGET_DATABASE_URL", &target).output().unwrap();
    assert_eq!(other.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(stderr.contains("already has 2 table(s)"), "{stderr}");
}

#[test]
fn maintenance_monthly_killed_during_reindex_resumes_without_a_second_reindex_or_leftover_indexes() {
    let pg = postgres();
    let url = pg.fresh_database("maint");
    pg.query(
        &url,
        "create table events (id bigserial primary key, kind text, at timestamptz default now()); \
         insert into events (kind) select 'k' || (g % 1000) from generate_series(1, 600000) g; \
         create index events_kind on events (kind); create index events_at on events (at)",
    );
    let env = Env::new();
    let args = ["run", &runbook("maintenance_monthly.lua"), "-p", "tables=events"];
    let child = env.cmd(&args).env("DATABASE_URL", &url).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let reindexing = || {
        pg.query(&url, "select count(*) from pg_stat_activity where query ilike 'REINDEX%' and state = 'active' and application_name like 'runbook/%' and datname = current_database()")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while reindexing() != "1" {
        assert!(std::time::Instant::now() < deadline, "REINDEX was seen running");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    signal(child.id(), 9);
    let _ = crate::harness::finish(child, 30);

    let out = env.cmd(&["resume", "last"]).env("DATABASE_URL", &url).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The killed runner's REINDEX was stopped before the step ran again, and what it left dropped.
    assert!(stdout.contains("stopped work left running by an earlier attempt"), "{stdout}");
    assert_eq!(reindexing(), "0");
    assert_eq!(
        pg.query(&url, "select count(*) from pg_index i where i.indrelid = 'events'::regclass and not i.indisvalid"),
        "0"
    );
    assert_eq!(
        pg.query(
            &url,
            "select string_agg(indexname, ',' order by indexname) from pg_indexes where tablename = 'events'"
        ),
        "events_at,events_kind,events_pkey",
        "the same indexes as before, and no _ccnew leftovers"
    );
    assert_eq!(Env::step(&env.show("last"), "maintain events")["status"], "succeeded");
}
