//! PostgreSQL as DBAs write it: every type reads and binds (the catalogue views with `select *`),
//! statements that change things and return rows, SQL kept in files, pinned sessions, and
//! passwords that never reach the server in the clear.
use serde_json::json;

use crate::harness::{signal, Env};
use crate::servers::postgres;

fn result(env: &Env, step: &str) -> serde_json::Value {
    let show = env.show("last");
    let s = Env::step(&show, step);
    assert_eq!(s["status"], "succeeded", "step {step}: {s}");
    s["result"].clone()
}

#[test]
fn every_postgresql_type_reads_and_binds_and_the_catalogue_views_read_with_select_star() {
    let env = Env::new();
    let pg = postgres();
    let url = pg.fresh_database("types");
    env.write(
        "rb.lua",
        r#"runbook { name = "types", params = { url = { type = "secret", env = "PG_URL" } } }
local c = db.connect(params.url)
step("schema", function()
  c:execute("create extension if not exists citext")
  c:execute("create extension if not exists hstore")
  c:execute("create extension if not exists pg_stat_statements")
  c:execute("create type mood as enum ('calm', 'busy')")
  c:execute("create domain port as integer check (value between 1 and 65535)")
  c:execute("create type endpoint as (host text, port integer)")
end)
step("read", function()
  return c:query_one([==[select
    interval '1 day 02:03:04.5' as iv, interval '-5 minutes' as neg, interval '14 months' as mons,
    inet '10.1.2.3' as ip, inet '10.1.2.3/24' as ipnet, cidr '10.0.0.0/8' as net, inet '::1' as ip6,
    macaddr '08:00:2b:01:02:03' as mac, macaddr8 '08:00:2b:01:02:03:04:05' as mac8,
    '1234'::xid as x, '5678'::xid8 as x8, 'pg_class'::regclass as rel, 'int4'::regtype as typ,
    12.5::money as cash, B'1011' as bits, B'10'::varbit(5) as vbits,
    to_tsvector('simple', 'fat cats') as tsv, int4range(1, 10) as r, tstzrange('2026-01-01', null) as tr,
    'busy'::mood as m, 443::port as p, row('db1', 5432)::endpoint as ep, 'CamelCase'::citext as ci,
    'a=>1'::hstore as hs, '16/B374D848'::pg_lsn as lsn, '(3,7)'::tid as t, time '13:45:00.25' as tod,
    timetz '13:45:00+02' as todz, point(1,2) as pt, 'x'::"char" as ch,
    array[interval '1 hour', interval '2 hours'] as ivs, array[inet '10.0.0.1', null] as ips,
    array['calm', 'busy']::mood[] as moods, array[array[1,2],array[3,4]] as grid,
    array['pg_class'::regclass] as rels, '{"a": [1, 2]}'::jsonb as j]==])
end)
step("bind", function()
  return c:query_one([[select $1::interval as five, $2::interval as words, $3::inet as ip, $4::cidr as net,
    $5::macaddr as mac, $6::mood as m, $7::port as p, $8::xid8 as x8, $9::pg_lsn as lsn, $10::varbit as bits,
    $11::interval[] as ivs, $12::citext as ci, $13::numeric as n, $14::time as tod,
    now() - $1::interval < now() as past, $15::regclass as rel, pg_relation_size($15) >= 0 as sized,
    $16::int[] as grid]],
    "5m", "1 day 02:00:00", "192.168.0.7", "10.0.0.0/8", "08:00:2b:01:02:03", "calm", 8080, 42,
    "0/16B3748", "101", { "1s", "2 hours" }, "MiXeD", "12.50", "01:02:03", "pg_catalog.pg_class", { { 1, 2 }, { 3, 4 } })
end)
step("catalogue", function()
  local counts = {}
  for _, view in ipairs({ "pg_stat_activity", "pg_locks", "pg_stat_statements", "pg_settings",
                          "pg_stat_replication", "pg_stat_database", "pg_roles", "pg_index" }) do
    counts[view] = #c:query("select * from " .. view)
  end
  local joined = c:query([[select c.oid, c.relname, c.relkind, c.relacl, c.reloptions, n.nspname, c.oid::regclass as c
    from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relname = 'pg_class']])
  local me = c:query_one([[select pid, backend_start, xact_start, now() - backend_start as age, client_addr,
    backend_xid, backend_xmin, wait_event_type, state from pg_stat_activity where pid = pg_backend_pid()]])
  return { counts = counts, relkind = joined[1].relkind, relacl = type(joined[1].relacl),
           oid_is_number = math.type(joined[1].oid), regclass = joined[1].c, age = type(me.age),
           state = me.state }
end)
step("unsupported bind", function()
  local ok, e = pcall(function() return c:scalar("select $1::point", "(1,2)") end)
  return tostring(e)
end)
"#,
    );
    let r = env.run_env(&["run", "rb.lua"], &[("PG_URL", url.as_str())]);
    r.assert_code(0);
    let read = result(&env, "read");
    let expect = json!({
        "iv": "1 day 02:03:04.5", "neg": "-00:05:00", "mons": "1 year 2 mons",
        "ip": "10.1.2.3", "ipnet": "10.1.2.3/24", "net": "10.0.0.0/8", "ip6": "::1",
        "mac": "08:00:2b:01:02:03", "mac8": "08:00:2b:01:02:03:04:05",
        "x": 1234, "x8": 5678, "rel": "pg_class", "typ": "integer",
        "cash": "$12.50", "bits": "1011", "vbits": "10",
        "tsv": "'cats':2 'fat':1", "r": "[1,10)", "tr": "[\"2026-01-01 00:00:00+00\",)",
        "m": "busy", "p": 443, "ep": "(db1,5432)", "ci": "CamelCase",
        "hs": "\"a\"=>\"1\"", "lsn": "16/B374D848", "t": "(3,7)", "tod": "13:45:00.25",
        "todz": "13:45:00+02", "pt": "(1,2)", "ch": "x",
        "ivs": ["01:00:00", "02:00:00"], "ips": ["10.0.0.1", null], "moods": ["calm", "busy"],
        "grid": [[1, 2], [3, 4]], "rels": "{pg_class}", "j": {"a": [1, 2]}
    });
    for (k, v) in expect.as_object().unwrap() {
        assert_eq!(&read[k], v, "column {k}: {read}");
    }
    let bind = result(&env, "bind");
    assert_eq!(
        bind,
        json!({
            "five": "00:05:00", "words": "1 day 02:00:00", "ip": "192.168.0.7", "net": "10.0.0.0/8",
            "mac": "08:00:2b:01:02:03", "m": "calm", "p": 8080, "x8": 42, "lsn": "0/16B3748", "bits": "101",
            "ivs": ["00:00:01", "02:00:00"], "ci": "MiXeD", "n": "12.50", "tod": "01:02:03", "past": true,
            "rel": "pg_class", "sized": true, "grid": [[1, 2], [3, 4]]
        })
    );
    let cat = result(&env, "catalogue");
    for view in ["pg_stat_activity", "pg_locks", "pg_stat_statements", "pg_settings", "pg_roles", "pg_index"] {
        assert!(cat["counts"][view].as_i64().unwrap() > 0, "{view} read with select *: {cat}");
    }
    assert_eq!(cat["relkind"], "r");
    assert_eq!(cat["oid_is_number"], "integer");
    assert_eq!(cat["regclass"], "pg_class");
    assert_eq!(cat["age"], "string");
    assert_eq!(cat["state"], "active");
    let unsupported = result(&env, "unsupported bind");
    assert!(
        unsupported.as_str().unwrap().contains("$1 (point)") && unsupported.as_str().unwrap().contains("::text::point"),
        "{unsupported}"
    );
}

#[test]
fn a_session_keeps_its_settings_and_never_leaks_them_and_options_apply_to_every_connection() {
    let env = Env::new();
    let pg = postgres();
    let url = pg.fresh_database("sessions");
    env.write("sql/by_state.sql", "-- sessions of this database by state\nselect count(*) as n\nfrom pg_stat_activity\nwhere datname = current_database() and state = $1\n");
    env.write(
        "rb.lua",
        r#"runbook { name = "sessions", params = { url = { type = "secret", env = "PG_URL" } } }
local c = db.connect(params.url, { pool_size = 3, lock_timeout = "3s", idle_in_transaction_session_timeout = "1m",
                                   search_path = "app, public", application_name = "nightly-report" })
step("session", function()
  c:execute("create schema if not exists app")
  c:execute("create table app.jobs (id serial primary key, state text)")
  local inside = c:session(function(s)
    s:execute("set lock_timeout = '250ms'")
    s:execute("create temp table scratch (x int)")
    s:execute("insert into scratch values (1), (2)")
    s:execute("begin")
    s:execute("insert into app.jobs (state) values ('kept')")
    s:execute("commit")
    return { lock_timeout = s:scalar("show lock_timeout"), scratch = s:scalar("select count(*) from scratch"),
             pid = s:scalar("select pg_backend_pid()") }
  end)
  -- Every pooled connection, several at once, has the options and none has the session's SET.
  local seen = {}
  for _ = 1, 6 do
    local r = c:query_one([[select current_setting('lock_timeout') as lt, current_setting('search_path') as sp,
      current_setting('idle_in_transaction_session_timeout') as it, current_setting('application_name') as app,
      to_regclass('pg_temp.scratch') is not null as has_scratch, pg_backend_pid() as pid]])
    seen[#seen + 1] = r
  end
  return { inside = inside, seen = seen, jobs = c:scalar("select count(*) from jobs") }
end)
step("cut off", { timeout = "1s", continue_on_error = true }, function()
  c:session(function(s) s:execute("set lock_timeout = '9s'"); s:execute("select pg_sleep(5)") end)
end)
step("usable after", function()
  return { one = c:scalar("select 1"), lt = c:scalar("show lock_timeout") }
end)
step("returning", function()
  local rows = c:execute_returning("insert into app.jobs (state) values ($1), ($2) returning id, state", "new", "old")
  return { n = #rows, first = rows[1].state, from_file = c:query_file("sql/by_state.sql", "active")[1].n }
end)
step("secret in sql", function()
  local pw = secret{ value = "Concat-Secret-77x", name = "pw" }
  local ok, e = pcall(function() return c:query("select 1 where 'x' = '" .. pw .. "'") end)
  return tostring(e)
end)
"#,
    );
    let r = env.run_env(&["run", "rb.lua"], &[("PG_URL", url.as_str())]);
    r.assert_code(0);
    assert!(!r.all().contains("Concat-Secret-77x"), "{}", r.all());
    let s = result(&env, "session");
    assert_eq!(s["inside"]["lock_timeout"], "250ms");
    assert_eq!(s["inside"]["scratch"], 2);
    assert_eq!(s["jobs"], 1, "the session's BEGIN/COMMIT committed; jobs is found through search_path");
    for row in s["seen"].as_array().unwrap() {
        assert_eq!(row["lt"], "3s", "{row}");
        assert_eq!(row["sp"], "app, public", "{row}");
        assert_eq!(row["it"], "1min", "{row}");
        assert_eq!(row["app"], "nightly-report", "{row}");
        assert_eq!(row["has_scratch"], false, "{row}");
        assert_ne!(row["pid"], s["inside"]["pid"], "the session's connection was closed, not returned: {row}");
    }
    let after = result(&env, "usable after");
    assert_eq!(after, json!({"one": 1, "lt": "3s"}), "a session cut off by a timeout leaves the connection clean");
    let ret = result(&env, "returning");
    assert_eq!(ret["n"], 2);
    assert_eq!(ret["first"], "new");
    assert!(ret["from_file"].as_i64().unwrap() >= 1);
    let e = result(&env, "secret in sql");
    let e = e.as_str().unwrap();
    assert!(e.contains("the SQL text holds the secret 'pw'") && e.contains("Bind it as a parameter"), "{e}");

    // A dry run of a RETURNING statement changes nothing.
    env.write(
        "dry.lua",
        r#"runbook { name = "dry", params = { url = { type = "secret", env = "PG_URL" } } }
local c = db.connect(params.url)
step("delete", function()
  return #c:execute_returning("delete from app.jobs returning id")
end)
"#,
    );
    let r = env.run_env(&["run", "dry.lua", "--dry-run"], &[("PG_URL", url.as_str())]);
    r.assert_code(0);
    assert!(r.all().contains("delete from app.jobs returning id"), "{}", r.all());
    assert_eq!(pg.query(&url, "select count(*) from app.jobs").trim(), "3");
}

#[test]
fn a_password_set_from_a_secret_reaches_neither_the_server_log_nor_the_journal_and_logs_in() {
    let env = Env::new();
    let pg = postgres();
    let url = pg.fresh_database("rotate");
    let role = format!("app_{}", std::process::id());
    let new_pw = "Rotated-Pw-8812-zebra";
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "pw", params = {{ url = {{ type = "secret", env = "PG_URL" }} }} }}
local pg = require "runbook.pg"
local util = require "runbook.util"
local c = db.connect(params.url)
local function login(pw)
  -- The URL holding the password is a secret too (a string joined to a secret).
  local conn = db.connect("postgres://{role}:" .. pw .. "@127.0.0.1:{port}/postgres")
  local who = conn:scalar("select current_user")
  conn:close()
  return who
end
step("rotate", function()
  if not pg.role_exists(c, "{role}") then c:execute("create role {role} login") end
  local pw = secret("NEW_PW")
  pg.set_password(c, "{role}", pw)
  return login(pw)
end)
step("generated", function()
  local pw = secret{{ value = util.random_password(40), name = "generated_pw" }}
  pg.set_password(c, "{role}", pw)
  return {{ who = login(pw), shown = tostring(pw) }}
end)
"#,
            port = pg.port
        ),
    );
    let r = env.run_env(&["run", "rb.lua"], &[("PG_URL", url.as_str()), ("NEW_PW", new_pw)]);
    r.assert_code(0);
    assert_eq!(result(&env, "rotate"), role.as_str(), "the new password logs in");
    let generated = result(&env, "generated");
    assert_eq!(generated["who"], role.as_str());
    assert_eq!(generated["shown"], "<secret:generated_pw>");
    // Nowhere: the run's output, the journal and its WAL, the server log, pg_stat_activity.
    assert!(!r.all().contains(new_pw));
    let journal = crate::harness::journal_bytes(&env.journal_path());
    assert!(!crate::harness::contains_bytes(&journal, new_pw.as_bytes()), "the journal holds the password");
    let log = std::fs::read_to_string(&pg.log).unwrap_or_default();
    assert!(
        log.contains(&format!("ALTER ROLE \"{role}\" PASSWORD 'SCRAM-SHA-256$4096:")),
        "the verifier is what was sent"
    );
    assert!(!log.contains(new_pw), "the server log holds the password");
    let activity = pg.query(&url, "select string_agg(query, ' ') from pg_stat_activity");
    assert!(!activity.contains(new_pw));
}

// ---- The procedures DBAs publish, as runbooks (runbooks/long_transactions.lua,
// reindex_bloated.lua, rotate_credentials.lua), on the real server, killed and resumed.

fn shipped(name: &str) -> String {
    format!("{}/runbooks/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A psql session fed line by line, as a person at another terminal.
struct Psql {
    child: std::process::Child,
}

impl Psql {
    fn open(url: &str, application: &str) -> Psql {
        let psql = crate::servers::pg_bindir().expect("PostgreSQL binaries").join("psql");
        let child = std::process::Command::new(psql)
            .args([url, "-X", "-q", "-v", "ON_ERROR_STOP=0"])
            .env("PGAPPNAME", application)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("psql");
        Psql { child }
    }
    fn send(&mut self, sql: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("psql stdin");
        writeln!(stdin, "{sql}").expect("write to psql");
        stdin.flush().ok();
    }
}

impl Drop for Psql {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn long_transaction_triage_terminates_only_the_sessions_still_in_the_transaction_it_listed() {
    let pg = postgres();
    let url = pg.fresh_database("longtx");
    pg.query(
        &url,
        "create table orders (id int primary key, state text); insert into orders values (1, 'new'), (2, 'new')",
    );
    let state = |app: &str| {
        pg.query(&url, &format!("select coalesce(string_agg(state, ','), 'gone') from pg_stat_activity where application_name = '{app}'"))
    };
    // One holds a lock and does nothing; one is blocked behind it; one will move on.
    let mut holder = Psql::open(&url, "holder");
    holder.send("begin; update orders set state = 'held' where id = 1;");
    wait_for("the holder's lock", || state("holder") == "idle in transaction");
    let mut waiter = Psql::open(&url, "waiter");
    waiter.send("update orders set state = 'waited' where id = 1;");
    let mut mover = Psql::open(&url, "mover");
    mover.send("begin; select 1;");
    wait_for("the three sessions", || {
        let states = (state("holder"), state("waiter"), state("mover"));
        states.0 == "idle in transaction" && states.1 == "active" && states.2 == "idle in transaction"
    });
    std::thread::sleep(std::time::Duration::from_millis(1200));

    let env = Env::new();
    // Only this database: other tests' sessions share the server.
    let database = format!("database={}", url.rsplit('/').next().unwrap());
    let args = [
        "run",
        &shipped("long_transactions.lua"),
        "-p",
        "idle_for=1s",
        "-p",
        "older_than=1h",
        "-p",
        "action=terminate",
        "-p",
        &database,
    ];
    let r = env.cmd(&args).env("DATABASE_URL", &url).output().unwrap();
    // The gate stops the run: nobody approved yet.
    assert_eq!(r.status.code(), Some(3), "{}", String::from_utf8_lossy(&r.stderr));
    let show = env.show("last");
    let listed: Vec<String> = Env::step(&show, "list")["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["application"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, ["holder", "mover"], "the holder, then the mover (oldest first): {}", Env::step(&show, "list"));
    let tree = &Env::step(&show, "blocking tree")["result"];
    assert_eq!(tree["waiting"], 1);
    assert_eq!(tree["roots"][0]["application"], "holder", "{tree}");

    // Meanwhile the mover commits and starts another transaction: it is no longer what was listed.
    mover.send("commit; begin; select 2;");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let id = show["run_id"].as_str().unwrap().to_string();
    env.run(&["approve", &id]).assert_code(0);
    let r = env.cmd(&["resume", &id]).env("DATABASE_URL", &url).output().unwrap();
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
    let done = Env::step(&env.show("last"), "terminate")["result"].clone();
    assert_eq!(done["done"].as_array().unwrap().len(), 1, "{done}");
    assert_eq!(done["spared"].as_array().unwrap().len(), 1, "the mover was spared: {done}");
    wait_for("the holder gone and the waiter through", || state("holder") == "gone" && state("waiter") == "idle");
    assert_eq!(state("mover"), "idle in transaction");
    assert_eq!(pg.query(&url, "select state from orders where id = 1"), "waited");
}

#[test]
fn reindex_of_bloated_indexes_killed_midway_drops_its_leftovers_and_retries_a_lock_timeout() {
    let pg = postgres();
    let url = pg.fresh_database("bloat");
    pg.query(
        &url,
        "create table events (id bigserial primary key, kind text); \
         insert into events (kind) select 'kind-' || g from generate_series(1, 300000) g; \
         create index events_kind on events (kind); \
         delete from events where id % 10 <> 0; \
         create table small (id int primary key); insert into small values (1)",
    );
    pg.query(&url, "vacuum events");
    // A writer holds a lock REINDEX CONCURRENTLY must wait for.
    let mut writer = Psql::open(&url, "writer");
    writer.send("begin; update events set kind = kind where id = 10;");
    let env = Env::new();
    let args = ["run", &shipped("reindex_bloated.lua"), "-p", "min_bloat_bytes=1048576", "-p", "lock_timeout=1s"];
    let child = env.cmd(&args).env("DATABASE_URL", &url).stdout(std::process::Stdio::null()).spawn().unwrap();
    wait_for("REINDEX waiting on the writer", || {
        pg.query(
            &url,
            "select count(*) from pg_stat_activity where query ilike 'reindex%' and application_name like 'runbook/%' and datname = current_database()",
        ) == "1"
    });
    signal(child.id(), 9);
    let _ = crate::harness::finish(child, 30);
    let estimate = Env::step(&env.show("last"), "estimate")["result"].clone();
    let names: Vec<&str> = estimate.as_array().unwrap().iter().map(|i| i["index"].as_str().unwrap()).collect();
    assert!(names.contains(&"public.events_kind"), "{estimate}");
    assert!(!names.iter().any(|n| n.contains("small")), "a table without waste is left alone: {estimate}");

    // The writer finishes a little after the resume starts: the first try times out on its
    // lock and is retried.
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        writer.send("rollback;");
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(writer);
    });
    let out = env.cmd(&["resume", "last"]).env("DATABASE_URL", &url).output().unwrap();
    release.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("stopped work left running by an earlier attempt"), "{stdout}");
    let r = Env::step(&env.show("last"), "reindex public.events_kind")["result"].clone();
    assert!(r["dropped"].as_array().unwrap().iter().any(|d| d.as_str().unwrap().contains("events_kind_ccnew")), "{r}");
    assert!(r["after"].as_i64().unwrap() < r["before"].as_i64().unwrap(), "the index shrank: {r}");
    assert_eq!(
        pg.query(&url, "select count(*) from pg_index where indrelid = 'events'::regclass and not indisvalid"),
        "0"
    );
    assert_eq!(
        pg.query(
            &url,
            "select string_agg(indexname, ',' order by indexname) from pg_indexes where tablename = 'events'"
        ),
        "events_kind,events_pkey"
    );
}

#[test]
fn credential_rotation_cut_off_midway_is_redone_whole_and_the_password_is_found_nowhere() {
    let pg = postgres();
    let url = pg.fresh_database("rot");
    let role = format!("svc_{}", std::process::id());
    pg.query(&url, &format!("create role {role} login password 'Old-Password-1234'"));
    let env = Env::new();
    // The first run cannot write the file (its folder is missing): the step fails after the
    // password was set, and nothing of it is kept.
    let target = env.path("conf/database.pw");
    let args = [
        "run",
        &shipped("rotate_credentials.lua"),
        "-p",
        &format!("role={role}"),
        "-p",
        &format!("port={}", pg.port),
        "-p",
        &format!("write_to={}", target.display()),
    ];
    let r = env.cmd(&args).env("DATABASE_URL", &url).output().unwrap();
    assert_eq!(r.status.code(), Some(1), "{}", String::from_utf8_lossy(&r.stderr));
    std::fs::create_dir_all(env.path("conf")).unwrap();
    let mut old = Psql::open(&format!("postgres://{role}:Old-Password-1234@127.0.0.1:{}/postgres", pg.port), "old-app");
    old.send("select 1;");
    let r = env.cmd(&["resume", "last"]).env("DATABASE_URL", &url).output().unwrap();
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
    let show = env.show("last");
    assert_eq!(Env::step(&show, "rotate")["attempts"], 2);
    assert_eq!(Env::step(&show, "rotate")["result"]["logged_in_as"], role.as_str());
    let password = std::fs::read_to_string(&target).unwrap();
    assert_eq!(password.len(), 40);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);
    // The written password logs in; the old one does not.
    let check = |pw: &str| {
        std::process::Command::new(crate::servers::pg_bindir().unwrap().join("psql"))
            .args([&format!("postgres://{role}:{pw}@127.0.0.1:{}/postgres", pg.port), "-X", "-c", "select 1"])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(check(&password));
    assert!(!check("Old-Password-1234"));
    assert_eq!(
        pg.query(
            &url,
            &format!("select count(*) from pg_stat_activity where usename = '{role}' and application_name = 'old-app'")
        ),
        "0",
        "the session opened with the old password was ended"
    );
    let mut everything = String::from_utf8_lossy(&r.stdout).into_owned();
    everything.push_str(&String::from_utf8_lossy(&r.stderr));
    everything.push_str(&env.run(&["show", "last", "--events", "--output", "json"]).all());
    everything.push_str(&std::fs::read_to_string(&pg.log).unwrap_or_default());
    everything.push_str(&pg.query(&url, "select string_agg(coalesce(query, ''), ' ') from pg_stat_activity"));
    assert!(!everything.contains(&password), "the new password leaked");
    let journal = crate::harness::journal_bytes(&env.journal_path());
    assert!(!crate::harness::contains_bytes(&journal, password.as_bytes()), "the journal holds the new password");
}

#[test]
fn postgres_checks_report_connections_long_transactions_lag_bloat_and_wraparound() {
    let pg = postgres();
    let url = pg.fresh_database("pgchecks");
    pg.query(&url, "create table t (id int primary key, pad text); insert into t select g, repeat('x', 200) from generate_series(1, 50000) g");
    pg.query(&url, "delete from t where id % 20 <> 0");
    pg.query(&url, "vacuum analyze t");
    let mut open = Psql::open(&url, "open-tx");
    open.send("begin; select 1;");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "pgchecks", params = { url = { type = "secret", env = "PG_URL" } } }
local checks = require "runbook.checks"
local c = db.connect(params.url)
step("checks", function()
  local down = db.connect(params.url)
  down:close()
  return {
    connections = checks.pg_connections(c),
    long = checks.pg_long_transactions(c, { warn = "1s", critical = "1h" }),
    lag = checks.pg_replication_lag(c),
    bloat = checks.pg_bloat(c, { min_bytes = 65536 }),
    wraparound = checks.pg_wraparound(c),
    unreachable = checks.pg_connections(down),
    seconds = { require("runbook.pg").seconds("1 day 02:03:04.5"), require("runbook.pg").seconds("1h30m"),
                require("runbook.pg").seconds("-00:05:00"), require("runbook.pg").seconds("3 mons"),
                require("runbook.pg").seconds("90"), require("runbook.pg").seconds("-5m"),
                require("runbook.pg").seconds("2days") },
  }
end)
"#,
    );
    env.run_env(&["run", "rb.lua"], &[("PG_URL", url.as_str())]).assert_code(0);
    let r = result(&env, "checks");
    assert_eq!(r["connections"]["level"], "ok", "{r}");
    assert!(r["connections"]["used"].as_i64().unwrap() >= 2);
    assert_eq!(r["long"]["level"], "warning", "the open transaction is past 1s: {r}");
    assert_eq!(r["lag"]["summary"], "no replication");
    assert_ne!(r["bloat"]["level"], "ok", "the table lost 95% of its rows: {r}");
    assert!(r["bloat"]["objects"].as_array().unwrap().iter().any(|o| o["name"] == "public.t"), "{r}");
    assert_eq!(r["wraparound"]["level"], "ok");
    assert!(r["wraparound"]["age"].as_i64().unwrap() > 0);
    assert_eq!(r["unreachable"]["level"], "critical", "{r}");
    assert_eq!(r["seconds"], json!([93784.5, 5400, -300, 7776000, 90, -300, 172800]));
    drop(open);
}

#[test]
fn a_large_result_arrives_whole_over_many_batches_and_an_error_midway_leaves_the_connection_usable() {
    let env = Env::new();
    let pg = postgres();
    let url = pg.fresh_database("batches");
    env.write(
        "rb.lua",
        r#"runbook { name = "batches", params = { url = { type = "secret", env = "PG_URL" } } }
local c = db.connect(params.url)
step("large", function()
  -- Over a thousand rows and over a megabyte: several batches.
  local rows = c:query([[select g as n, repeat('x', 3000) as pad, jsonb_build_object('n', g, 'tags', array['a', g::text]) as j,
      array[g, null] as arr, g * interval '1 second' as iv from generate_series(1, 2500) g]])
  local sum, ok = 0, true
  for i, r in ipairs(rows) do
    sum = sum + r.n
    ok = ok and r.n == i and #r.pad == 3000 and r.j.n == i and r.j.tags[2] == tostring(i)
      and r.arr[1] == i and r.arr[2] == db.null and #r.arr == 2
  end
  return { count = #rows, sum = sum, ok = ok, last_iv = rows[#rows].iv,
           columns = table.concat(getmetatable(rows).__columns, ",") }
end)
step("midway", function()
  -- The server fails after sending 1,500 rows.
  local ok, e = pcall(function() return c:query("select 1 / (1500 - g) as q from generate_series(1, 3000) g") end)
  local again = c:scalar("select count(*) from generate_series(1, 10)")
  local tx_ok, tx_e = pcall(function()
    return c:transaction(function(tx) return tx:query("select 1 / (1200 - g) from generate_series(1, 3000) g") end)
  end)
  return { failed = not ok, error = tostring(e), again = again, in_tx = not tx_ok and tostring(tx_e):find("division by zero") ~= nil,
           after_tx = c:scalar("select 7") }
end)
step("memory", function()
  -- A large result made again and again is collected, not kept.
  collectgarbage()
  local before = collectgarbage("count")
  for _ = 1, 30 do
    local rows = c:query("select g, repeat('y', 200) as pad from generate_series(1, 5000) g")
    assert(#rows == 5000)
  end
  collectgarbage()
  return math.floor((collectgarbage("count") - before) / 1024)
end)
"#,
    );
    let r = env.run_env(&["run", "rb.lua"], &[("PG_URL", url.as_str())]);
    r.assert_code(0);
    let large = result(&env, "large");
    assert_eq!(
        large,
        json!({"count": 2500, "sum": 2500 * 2501 / 2, "ok": true, "last_iv": "00:41:40", "columns": "n,pad,j,arr,iv"})
    );
    let midway = result(&env, "midway");
    assert_eq!(midway["failed"], true, "{midway}");
    assert!(midway["error"].as_str().unwrap().contains("division by zero"), "{midway}");
    assert_eq!(midway["again"], 10);
    assert_eq!(midway["in_tx"], true, "{midway}");
    assert_eq!(midway["after_tx"], 7);
    let grown_mib = result(&env, "memory").as_i64().unwrap();
    assert!(grown_mib < 5, "Lua memory grew by {grown_mib} MiB over 30 large results");
}
