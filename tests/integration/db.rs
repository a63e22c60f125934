//! The db primitive against SQLite files and a real PostgreSQL.
use crate::harness::Env;
use crate::servers::postgres;

fn result(env: &Env, step: &str) -> serde_json::Value {
    Env::step(&env.show("last"), step)["result"].clone()
}

#[test]
fn sqlite_round_trip_with_hostile_strings_null_and_a_rolled_back_transaction() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "sqlite" }
local c = db.connect("sqlite://" .. env("PWD") .. "/app.db")
step("schema", function()
  c:execute("create table t (id integer primary key, name text, score real, ok boolean, data blob, note text)")
  return c:execute("insert into t (name, score, ok, data, note) values (?, ?, ?, ?, ?), (?, ?, ?, ?, ?)",
    "o'brien'); drop table t; --", 1.5, true, "bin\0ary", null, "b", 2, false, "x", "n")
end)
step("read", function()
  local rows = c:query("select * from t order by id")
  return { n = #rows, first = rows[1], second_score = rows[2].score }
end)
step("rollback", { continue_on_error = true }, function()
  c:transaction(function(tx) tx:execute("delete from t"); error("abort") end)
end)
step("commit", function()
  return c:transaction(function(tx) tx:execute("update t set note = ? where id = ?", "set", 2); return tx:scalar("select note from t where id = 2") end)
end)
step("count", function() return c:scalar("select count(*) from t") end)
step("one row", { continue_on_error = true }, function() return c:query_one("select * from t") end)
step("bad sql", { continue_on_error = true }, function() return c:query("selec 1") end)
"#,
    );
    let mut cmd = env.cmd(&["run", "rb.lua"]);
    cmd.env("PWD", env.dir.path());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(result(&env, "schema"), 2);
    assert_eq!(
        result(&env, "read"),
        serde_json::json!({"n": 2, "second_score": 2.0, "first": {"id": 1, "name": "o'brien'); drop table t; --", "score": 1.5, "ok": true, "data": "bin\u{0}ary", "note": null}})
    );
    assert_eq!(result(&env, "commit"), "set");
    assert_eq!(result(&env, "count"), 2, "the failed transaction was rolled back");
    let show = env.show("last");
    assert!(Env::step(&show, "one row")["error"].as_str().unwrap().contains("expected exactly one row, got 2"));
    assert!(Env::step(&show, "bad sql")["error"].as_str().unwrap().contains("syntax error"));
}

#[test]
fn bad_connections_and_options_are_clear_errors() {
    let env = Env::new();
    let pg = postgres();
    let closed = crate::servers::free_port();
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "bad" }}
local function try(f) local ok, e = pcall(f) return tostring(e) end
step("errors", function()
  return {{
    scheme = try(function() return db.connect("oracle://scott:tiger@db/x") end),
    option = try(function() return db.connect("sqlite::memory:", {{ pool_sise = 2 }}) end),
    refused = try(function() return db.connect("postgres://app:sekrit-pw@127.0.0.1:{closed}/app", {{ connect_timeout = "2s" }}) end),
    password = try(function() return db.connect("postgres://runbook:wrong-pw-123@127.0.0.1:{port}/postgres") end),
  }}
end)
"#,
            port = pg.port
        ),
    );
    let r = env.run(&["run", "rb.lua"]);
    r.assert_code(0);
    let e = result(&env, "errors");
    assert!(e["scheme"].as_str().unwrap().contains("unsupported database URL 'oracle://…'"), "{e}");
    assert!(e["option"].as_str().unwrap().contains("unknown key `pool_sise`"), "{e}");
    assert!(
        e["refused"].as_str().unwrap().contains(&format!("cannot connect to postgres 127.0.0.1:{closed}/app")),
        "{e}"
    );
    assert!(e["password"].as_str().unwrap().contains("password authentication failed"), "{e}");
    assert!(e["password"].as_str().unwrap().contains("SQLSTATE 28P01"), "{e}");
    for secret in ["sekrit-pw", "wrong-pw-123", "tiger"] {
        assert!(!r.all().contains(secret) && !e.to_string().contains(secret), "{secret} leaked: {e}");
    }
}

#[test]
fn postgres_types_round_trip_both_ways() {
    let env = Env::new();
    let pg = postgres();
    env.write(
        "rb.lua",
        r#"runbook { name = "pgtypes", params = { url = { type = "secret", env = "PG_URL", required = true } } }
local c = db.connect(params.url)
step("round trip", function()
  c:execute([[create table types_rt (i2 smallint, i4 integer, i8 bigint, f8 double precision, n numeric, t text,
    b boolean, ts timestamptz, tsl timestamp, d date, j jsonb, by bytea, u uuid, ai int4[], at text[], nothing text)]])
  c:execute("insert into types_rt values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    7, 70000, 9007199254740993, 1.25, "12345678901234567890.123456789", "it's; drop table x",
    true, "2026-11-22T03:15:00.5+02:00", "2026-11-22T03:15:00", "2026-11-22", { a = { 1, 2 }, k = null },
    "\0\255raw", "1b4e28ba-2fa1-11d2-883f-0016d3cca427", { 1, 2, 3 }, { "x", "y" }, null)
  return c:query_one("select * from types_rt")
end)
step("scalar and count", function()
  return { n = c:scalar("select count(*) from types_rt"), v = c:scalar("select version()"):match("^PostgreSQL") }
end)
step("errors", function()
  local function try(f) local ok, e = pcall(f) return tostring(e) end
  return {
    syntax = try(function() return c:query("selec 1") end),
    count = try(function() return c:query("select $1::int", 1, 2) end),
    type = try(function() return c:query("select $1::int", "ten") end),
  }
end)
step("transaction", function()
  pcall(function() c:transaction(function(tx) tx:execute("delete from types_rt"); error("no") end) end)
  return c:scalar("select count(*) from types_rt")
end)
"#,
    );
    let r = env.run_env(&["run", "rb.lua"], &[("PG_URL", pg.url.as_str())]);
    r.assert_code(0);
    assert!(!r.all().contains(pg.password));
    assert_eq!(
        result(&env, "round trip"),
        serde_json::json!({
            "i2": 7, "i4": 70000, "i8": 9007199254740993i64, "f8": 1.25, "n": "12345678901234567890.123456789",
            "t": "it's; drop table x", "b": true, "ts": "2026-11-22T01:15:00.500+00:00", "tsl": "2026-11-22T03:15:00",
            "d": "2026-11-22", "j": {"a": [1, 2], "k": null}, "by": "\u{0}\u{fffd}raw", "u": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "ai": [1, 2, 3], "at": ["x", "y"], "nothing": null
        })
    );
    assert_eq!(result(&env, "scalar and count"), serde_json::json!({"n": 1, "v": "PostgreSQL"}));
    let e = result(&env, "errors");
    assert!(e["syntax"].as_str().unwrap().contains("SQLSTATE 42601"), "{e}");
    assert!(e["count"].as_str().unwrap().contains("takes 1 parameter(s), 2 given"), "{e}");
    assert!(e["type"].as_str().unwrap().contains("parameter $1 (int4): 'ten' is not an integer"), "{e}");
    assert_eq!(result(&env, "transaction"), 1);
}

#[test]
fn each_streams_rows_and_execute_file_applies_a_migration_whole_or_not_at_all() {
    let env = Env::new();
    let pg = postgres();
    env.write(
        "migrations/001_ok.sql",
        "-- media tables\ncreate table media_ok (id serial primary key, name text not null default 'a;b');\ncreate index media_ok_name on media_ok (name);\ncreate function media_ok_f() returns int as $$ select 1; $$ language sql;\n",
    );
    env.write(
        "migrations/002_broken.sql",
        "create table media_broken (id int);\n\ninsert into media_broken values (1);\ninsert into nowhere values (2);\n",
    );
    env.write(
        "rb.lua",
        r#"runbook { name = "pgeach", params = { url = { type = "secret", env = "PG_URL", required = true } } }
local c = db.connect(params.url)
step("migrate", function() return c:execute_file("migrations/001_ok.sql") end)
step("broken migration", { continue_on_error = true }, function() return c:execute_file("migrations/002_broken.sql") end)
step("after", function()
  return {
    ok = c:scalar("select count(*) from pg_indexes where indexname = 'media_ok_name'"),
    broken = c:scalar("select count(*) from information_schema.tables where table_name = 'media_broken'"),
  }
end)
step("each", function()
  local n, sum = 0, 0
  local seen = c:each("select g as v from generate_series(1, $1) g", 10000, function(row) n = n + 1; sum = sum + row.v end)
  local stopped = c:each("select g from generate_series(1, 100) g", function(row) return row.g < 5 end)
  return { n = n, sum = sum, seen = seen, stopped = stopped }
end)
step("busy", function()
  local ok, err = pcall(function()
    c:transaction(function(tx) tx:each("select 1 as x", function() tx:query("select 2") end) end)
  end)
  return tostring(err)
end)
"#,
    );
    let r = env.run_env(&["run", "rb.lua"], &[("PG_URL", pg.url.as_str())]);
    r.assert_code(0);
    assert_eq!(result(&env, "migrate"), 3);
    let show = env.show("last");
    let broken = Env::step(&show, "broken migration")["error"].as_str().unwrap().to_string();
    assert!(
        broken.contains("migrations/002_broken.sql:4:")
            && broken.contains("SQLSTATE 42P01")
            && broken.contains("rolled back"),
        "{broken}"
    );
    assert_eq!(result(&env, "after"), serde_json::json!({"ok": 1, "broken": 0}));
    assert_eq!(result(&env, "each"), serde_json::json!({"n": 10000, "sum": 50005000, "seen": 10000, "stopped": 5}));
    assert!(result(&env, "busy").as_str().unwrap().contains("cannot be used inside each() over itself"));
}

#[test]
fn runbook_pg_checks_and_maintenance_of_the_guides() {
    let env = Env::new();
    let pg = postgres();
    env.write(
        "rb.lua",
        r#"runbook { name = "pgstd", params = { url = { type = "secret", env = "PG_URL", required = true } } }
local pg = require "runbook.pg"
local c = db.connect(params.url)
step("migrate", function()
  c:execute("create table storage_quotas (id serial primary key, brand text, used bigint)")
  c:execute("create index idx_storage_quotas_brand on storage_quotas (brand)")
  c:execute("alter table storage_quotas enable row level security")
  c:execute("create policy brand_isolation on storage_quotas using (brand = current_user)")
  c:execute("insert into storage_quotas (brand, used) select 'b' || g, g from generate_series(1, 1000) g")
end)
step("checks", function()
  local rls = pg.rls(c, { "storage_quotas", "media_assets" })
  local sizes = pg.table_sizes(c, { limit = 5 })
  local idx = pg.indexes(c, { "storage_quotas" })
  local conns = pg.connections(c)
  local slow, why = pg.slow_queries(c)
  return {
    missing = pg.missing_tables(c, { "storage_quotas", "media_assets", "media_usage_logs" }),
    rls_enabled = rls.storage_quotas.enabled, policy = rls.storage_quotas.policies[1].name,
    media_exists = rls.media_assets.exists,
    largest = sizes[1].table, largest_bytes_positive = sizes[1].bytes > 0,
    indexes = #idx, db = pg.database_size(c).database,
    conns_ok = conns.total >= 1 and conns.max > 0,
    lag = #pg.replication_lag(c), slow = slow == nil and why:match("not installed") ~= nil,
  }
end)
step("maintenance", function()
  return { vacuumed = pg.vacuum_analyze(c, { "storage_quotas", "public.storage_quotas" }),
           reindexed = pg.reindex(c, { "idx_storage_quotas_brand" }) }
end)
step("kill idle", function()
  -- Only this test's own connection, tagged: other tests share the cluster.
  local other = db.connect(params.url .. "?application_name=kill-idle-victim", { pool_size = 1 })
  other:scalar("select 1")
  sleep("1100ms")
  local killed = pg.kill_idle(c, { older_than = "1 second", application = "kill-idle-victim" })
  return #killed == 1 and killed[1].application == "kill-idle-victim"
end)
"#,
    );
    let r = env.run_env(&["run", "rb.lua"], &[("PG_URL", pg.url.as_str())]);
    r.assert_code(0);
    assert_eq!(
        result(&env, "checks"),
        serde_json::json!({
            "missing": ["media_assets", "media_usage_logs"], "rls_enabled": true, "policy": "brand_isolation",
            "media_exists": false, "largest": "storage_quotas", "largest_bytes_positive": true, "indexes": 2,
            "db": "postgres", "conns_ok": true, "lag": 0, "slow": true
        })
    );
    assert_eq!(
        result(&env, "maintenance"),
        serde_json::json!({"vacuumed": ["storage_quotas", "public.storage_quotas"], "reindexed": ["idx_storage_quotas_brand"]})
    );
    assert_eq!(result(&env, "kill idle"), true);
}

#[test]
fn mysql_round_trip_errors_and_transactions_against_mariadb() {
    let env = Env::new();
    let my = crate::servers::mariadb();
    env.write(
        "rb.lua",
        r#"runbook { name = "mysql", params = { url = { type = "secret", env = "MY_URL", required = true } } }
local c = db.connect(params.url)
step("round trip", function()
  c:execute([[create table my_types (id int auto_increment primary key, b boolean, i bigint, f double, d decimal(30,9),
    t varchar(200), dt datetime, dd date, bin varbinary(20), nothing text)]])
  c:execute("insert into my_types (b, i, f, d, t, dt, dd, bin, nothing) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    true, 9007199254740993, 1.25, "123456789012345678901.123456789", "it's'); drop table my_types; --",
    "2026-11-22 03:15:00", "2026-11-22", "\0\1raw", null)
  return c:query_one("select * from my_types")
end)
step("errors", function()
  local function try(f) local ok, e = pcall(f) return tostring(e) end
  return { syntax = try(function() return c:query("selec 1") end) }
end)
step("transaction", function()
  pcall(function() c:transaction(function(tx) tx:execute("delete from my_types"); error("no") end) end)
  local n = 0
  c:each("select id from my_types", function() n = n + 1 end)
  return { count = c:scalar("select count(*) from my_types"), streamed = n }
end)
"#,
    );
    let r = env.run_env(&["run", "rb.lua"], &[("MY_URL", my.url.as_str())]);
    r.assert_code(0);
    assert!(!r.all().contains(my.password));
    assert_eq!(
        result(&env, "round trip"),
        serde_json::json!({
            "id": 1, "b": true, "i": 9007199254740993i64, "f": 1.25, "d": "123456789012345678901.123456789",
            "t": "it's'); drop table my_types; --", "dt": "2026-11-22T03:15:00", "dd": "2026-11-22", "bin": "\u{0}\u{1}raw",
            "nothing": null
        })
    );
    assert!(
        result(&env, "errors")["syntax"].as_str().unwrap().contains("SQLSTATE 42000"),
        "{}",
        result(&env, "errors")
    );
    assert_eq!(result(&env, "transaction"), serde_json::json!({"count": 1, "streamed": 1}));
    let bad = env.write("bad.lua", &format!("runbook {{ name = \"b\" }}\nstep(\"x\", function() db.connect(\"mysql://runbook:nope-pw-1@127.0.0.1:{}/app\") end)\n", my.port));
    let r = env.run(&["run", bad.to_str().unwrap()]);
    r.assert_code(1);
    assert!(
        r.stderr.contains(&format!("cannot connect to mysql 127.0.0.1:{}/app", my.port))
            && r.stderr.contains("Access denied"),
        "{}",
        r.stderr
    );
    assert!(!r.all().contains("nope-pw-1"));
}

#[test]
fn each_over_a_million_rows_keeps_memory_flat() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "million" }
local c = db.connect("sqlite::memory:")
step("each", function()
  local n = 0
  c:each([[with recursive g(x) as (select 1 union all select x + 1 from g where x < 1000000)
           select x, printf('%100s', x) as pad from g]], function(row) n = n + 1 end)
  return n
end)
"#,
    );
    // The binary reports its own peak (VmHWM) at debug level: rusage of a child would include
    // the high-water mark of the (large, multi-threaded) test process it was forked from.
    let r = env.run_env(&["run", "rb.lua"], &[("RUST_LOG", "runbook::cli=debug")]);
    r.assert_code(0);
    let peak_kib: i64 = r
        .stderr
        .lines()
        .find_map(|l| {
            l.split("peak RSS ").nth(1).and_then(|x| x.split_whitespace().next()).and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no peak RSS line in {}", r.stderr));
    assert_eq!(result(&env, "each"), 1_000_000);
    // 1,000,000 rows of over 100 bytes went through: holding them takes about 700 MB.
    let peak_mib = peak_kib / 1024;
    assert!(peak_mib <= 60, "peak RSS {peak_mib} MiB while streaming a million rows");
}

#[test]
fn statement_timeout_cancels_a_slow_statement() {
    let env = Env::new();
    let pg = postgres();
    env.write(
        "rb.lua",
        r#"runbook { name = "slow", params = { url = { type = "secret", env = "PG_URL", required = true } } }
local c = db.connect(params.url, { statement_timeout = "200ms" })
step("slow", { continue_on_error = true }, function() return c:scalar("select pg_sleep(5)") end)
step("fast", function() return c:scalar("select 41 + 1") end)
"#,
    );
    let started = std::time::Instant::now();
    env.run_env(&["run", "rb.lua"], &[("PG_URL", pg.url.as_str())]).assert_code(0);
    let show = env.show("last");
    let err = Env::step(&show, "slow")["error"].as_str().unwrap().to_string();
    assert!(err.contains("statement timeout") && err.contains("SQLSTATE 57014"), "{err}");
    assert_eq!(result(&env, "fast"), 42);
    // A guard that the statement was cancelled, not waited out (pg_sleep(5)).
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}

#[test]
fn db_review_regressions_on_postgres() {
    let env = Env::new();
    let pg = postgres();
    env.write("with_begin.sql", "begin;\ncreate table rv_m1 (x int);\ncommit;\n");
    env.write(
        "rb.lua",
        r#"runbook { name = "dbrv", params = { url = { type = "secret", env = "PG_URL", required = true } } }
local pg = require "runbook.pg"
local c = db.connect(params.url)
local function try(f) local ok, e = pcall(f) return ok and "ok" or tostring(e) end
step("values", function()
  c:execute("create table rv_j (j jsonb)")
  c:execute("insert into rv_j values ($1)", { 1, 2, null })
  return {
    inf = c:scalar("select 'infinity'::date"), ninf = c:scalar("select '-infinity'::timestamptz"),
    nan = c:scalar("select 'NaN'::numeric"), arr = c:scalar("select array[1, null, 3]::int[]"),
    arr_in = c:scalar("select $1::int[]", { 4, null }), json_array = c:scalar("select j from rv_j"),
    f4 = c:scalar("select 1.1::float4"),
  }
end)
step("refusals", function()
  local s = secret("PG_URL")
  return {
    nested_secret = try(function() c:query("select $1::jsonb", { t = s }) end),
    duplicate = try(function() c:query("select 1 as a, 2 as a") end),
    begin_in_file = try(function() c:execute_file("with_begin.sql") end),
    parent_inside = try(function() c:transaction(function(tx) c:query("select 1") end) end),
    close_inside = try(function() c:transaction(function(tx) tx:close() end) end),
    close_in_each = try(function() c:each("select 1", function() c:close() end) end),
  }
end)
step("caught error rolls back", function()
  c:execute("create table rv_t (x int)")
  local r = try(function()
    c:transaction(function(tx)
      tx:execute("insert into rv_t values (1)")
      pcall(function() tx:execute("select * from rv_nowhere") end)
    end)
  end)
  return { error = r, count = c:scalar("select count(*) from rv_t") }
end)

step("schema-qualified", function()
  c:execute("create schema rv_audit")
  c:execute("create table rv_audit.log (x int)")
  return pg.missing_tables(c, { "rv_audit.log", "rv_audit.nope", "rv_t" })
end)
"#,
    );
    env.run_env(&["run", "rb.lua"], &[("PG_URL", pg.url.as_str())]).assert_code(0);
    assert_eq!(
        result(&env, "values"),
        serde_json::json!({"inf": "infinity", "ninf": "-infinity", "nan": "NaN", "arr": [1, null, 3], "arr_in": [4, null],
                           "json_array": [1, 2, null], "f4": 1.1})
    );
    let r = result(&env, "refusals");
    assert!(r["nested_secret"].as_str().unwrap().contains("a table parameter holds a secret"), "{r}");
    assert!(r["duplicate"].as_str().unwrap().contains("'a' appears twice"), "{r}");
    assert!(r["begin_in_file"].as_str().unwrap().contains("with_begin.sql:1: `begin` in a SQL file"), "{r}");
    assert!(
        r["parent_inside"].as_str().unwrap().contains("a transaction or session is open on this connection"),
        "{r}"
    );
    assert!(r["close_inside"].as_str().unwrap().contains("not the transaction handle"), "{r}");
    assert!(r["close_in_each"].as_str().unwrap().contains("cannot close the connection while"), "{r}");
    let rolled = result(&env, "caught error rolls back");
    assert!(rolled["error"].as_str().unwrap().contains("transaction was rolled back"), "{rolled}");
    assert_eq!(rolled["count"], 0);

    assert_eq!(result(&env, "schema-qualified"), serde_json::json!(["rv_audit.nope"]));
}

#[test]
fn mysql_year_time_float_bit_set_enum_and_spatial_read_back() {
    let env = Env::new();
    let my = crate::servers::mariadb();
    env.write(
        "rb.lua",
        r#"runbook { name = "myt", params = { url = { type = "secret", env = "MY_URL", required = true } } }
local c = db.connect(params.url)
step("types", function()
  c:execute("create table my_more (y year, t time, f float)")
  c:execute("insert into my_more values (?, ?, ?)", 2026, "03:15:07", 1.1)
  return c:query_one("select * from my_more")
end)
step("more types", function()
  c:execute([[create table my_kinds (long_t time(1), neg_t time, b bit(10), s set('a','b','c'), e enum('calm','busy'),
    none_set set('x'), p point, poly polygon)]])
  c:execute("insert into my_kinds values ('100:00:01.5', '-01:02:03', b'1000000001', 'a,c', 'busy', '', ST_GeomFromText('POINT(1 2)'), ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))'))")
  return c:query_one("select * from my_kinds")
end)
"#,
    );
    env.run_env(&["run", "rb.lua"], &[("MY_URL", my.url.as_str())]).assert_code(0);
    assert_eq!(result(&env, "types"), serde_json::json!({"y": 2026, "t": "03:15:07", "f": 1.1}));
    assert_eq!(
        result(&env, "more types"),
        serde_json::json!({"long_t": "100:00:01.5", "neg_t": "-01:02:03", "b": 513, "s": "a,c", "e": "busy",
                           "none_set": "", "p": "POINT(1 2)", "poly": "POLYGON((0 0,1 0,1 1,0 0))"})
    );
}
