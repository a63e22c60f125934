--- runbook.pg: the PostgreSQL checks and maintenance of the deployment guides, on a connection
--- from db.connect. Every function takes the connection first.
---   local pg = require "runbook.pg"
---   local missing = pg.missing_tables(conn, { "media_assets", "storage_quotas" })
local M = {}

local function split_name(name)
  local schema, table = name:match("^([^.]+)%.(.+)$")
  if schema then return schema, table end
  return "public", name
end

--- Size of the current database: { database, bytes, pretty }.
function M.database_size(c)
  return c:query_one([[select current_database() as database, pg_database_size(current_database()) as bytes,
                              pg_size_pretty(pg_database_size(current_database())) as pretty]])
end

--- Tables with their total size (indexes and toast included), largest first.
--- opts: { limit = 20, schema = "public" }
function M.table_sizes(c, opts)
  opts = opts or {}
  return c:query([[select schemaname as schema, tablename as table,
                          pg_total_relation_size(format('%I.%I', schemaname, tablename)) as bytes,
                          pg_size_pretty(pg_total_relation_size(format('%I.%I', schemaname, tablename))) as pretty
                   from pg_tables
                   where schemaname not in ('pg_catalog', 'information_schema') and ($1::text is null or schemaname = $1::text)
                   order by bytes desc limit $2::int]], opts.schema or null, opts.limit or 20)
end

--- Indexes, optionally of the given tables: { schema, table, index, definition }.
function M.indexes(c, tables)
  return c:query([[select schemaname as schema, tablename as table, indexname as index, indexdef as definition
                   from pg_indexes
                   where schemaname not in ('pg_catalog', 'information_schema')
                     and ($1::text[] is null or tablename = any($1::text[]))
                   order by schemaname, tablename, indexname]], tables or null)
end

--- Row-level security of the given tables: name -> { enabled, forced, policies = { ... } }.
function M.rls(c, tables)
  local out = {}
  for _, name in ipairs(tables) do
    local schema, table = split_name(name)
    local rows = c:query([[select c.relrowsecurity as enabled, c.relforcerowsecurity as forced
                           from pg_class c join pg_namespace n on n.oid = c.relnamespace
                           where n.nspname = $1::text and c.relname = $2::text]], schema, table)
    local policies = c:query([[select policyname as name, cmd as command, roles::text[] as roles,
                                      qual as using, with_check as check
                               from pg_policies where schemaname = $1::text and tablename = $2::text
                               order by policyname]], schema, table)
    out[name] = { exists = #rows == 1, enabled = rows[1] and rows[1].enabled or false,
                  forced = rows[1] and rows[1].forced or false, policies = policies }
  end
  return out
end

--- The tables of `expected` ("table" in `schema`, default public, or "schema.table") that do
--- not exist.
function M.missing_tables(c, expected, schema)
  local missing = {}
  for _, name in ipairs(expected) do
    local s, t = split_name(name)
    if not name:find(".", 1, true) then s = schema or "public" end
    local n = c:scalar([[select count(*) from information_schema.tables
                         where table_schema = $1::text and table_name = $2::text]], s, t)
    if n == 0 then missing[#missing + 1] = name end
  end
  return missing
end

--- Connections by state, and how close they are to max_connections.
function M.connections(c)
  local rows = c:query([[select coalesce(state, 'unknown') as state, count(*)::int as n
                         from pg_stat_activity where backend_type = 'client backend' group by 1]])
  local by_state, total = {}, 0
  for _, r in ipairs(rows) do
    by_state[r.state] = r.n
    total = total + r.n
  end
  local max = tonumber(c:scalar("select setting from pg_settings where name = 'max_connections'"))
  return { total = total, by_state = by_state, max = max, used = total / max }
end

--- Connections idle for longer than `older_than` (a PostgreSQL interval such as "1 hour" or
--- "30 minutes"), never this one, longest idle first. opts: { older_than = "1h", database, user,
--- application }.
function M.idle_connections(c, opts)
  opts = opts or {}
  return c:query([[select pid, usename as user, datname as database, application_name as application,
                          extract(epoch from now() - state_change)::int as idle_seconds
                   from pg_stat_activity
                   where state = 'idle' and pid <> pg_backend_pid()
                     and state_change < now() - ($1::text)::interval
                     and ($2::text is null or datname = $2::text)
                     and ($3::text is null or usename = $3::text)
                     and ($4::text is null or application_name = $4::text)
                   order by state_change]], opts.older_than or "1h", opts.database or null, opts.user or null,
                  opts.application or null)
end

--- Terminates connections idle for longer than `older_than` (as `idle_connections`), never this
--- one. Returns the connections terminated (under --dry-run: the ones that would be).
function M.kill_idle(c, opts)
  local candidates = M.idle_connections(c, opts)
  for _, conn in ipairs(candidates) do
    c:execute("select pg_terminate_backend($1::int)", conn.pid)
  end
  return candidates
end

local function each_statement(c, names, build)
  local done = {}
  for _, name in ipairs(names) do
    local schema, object = split_name(name)
    local sql = c:scalar(build, schema, object)
    c:execute(sql)
    done[#done + 1] = name
  end
  return done
end

--- VACUUM ANALYZE each table ("schema.table" or "table"); returns the tables done.
function M.vacuum_analyze(c, tables)
  return each_statement(c, tables, "select format('VACUUM ANALYZE %I.%I', $1::text, $2::text)")
end

--- REINDEX each index ("schema.index" or "index"); returns the indexes done.
function M.reindex(c, indexes)
  return each_statement(c, indexes, "select format('REINDEX INDEX %I.%I', $1::text, $2::text)")
end

--- Drops what an interrupted `REINDEX ... CONCURRENTLY` left on a table: the invalid indexes
--- named `<index>_ccnew` / `_ccold` (PostgreSQL's own names for them), which a new REINDEX
--- CONCURRENTLY skips and nothing else removes. Returns the indexes dropped.
function M.drop_reindex_leftovers(c, table_name)
  local leftovers = c:query([[
    select format('%I.%I', n.nspname, ic.relname) as name
    from pg_index i
    join pg_class ic on ic.oid = i.indexrelid
    join pg_namespace n on n.oid = ic.relnamespace
    where i.indrelid = $1::text::regclass and not i.indisvalid
      and ic.relname ~ '_cc(new|old)[0-9]*$'
    order by 1]], table_name)
  local dropped = {}
  for _, row in ipairs(leftovers) do
    c:execute("drop index concurrently if exists " .. row.name)
    dropped[#dropped + 1] = row.name
  end
  return dropped
end

--- Replication lag: on a primary, one entry per replica; on a replica, its own replay delay;
--- empty when there is no replication.
function M.replication_lag(c)
  if c:scalar("select pg_is_in_recovery()") then
    return { { role = "replica",
               replay_delay_seconds = c:scalar("select coalesce(extract(epoch from now() - pg_last_xact_replay_timestamp()), 0)::float8") } }
  end
  return c:query([[select application_name as application, client_addr::text as client, state,
                          pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint as lag_bytes,
                          extract(epoch from replay_lag)::float8 as replay_lag_seconds
                   from pg_stat_replication order by application_name]])
end

--- The slowest statements by mean time, from pg_stat_statements; nil and a reason when the
--- extension is not installed. opts: { limit = 10 }
function M.slow_queries(c, opts)
  opts = opts or {}
  if c:scalar("select count(*) from pg_extension where extname = 'pg_stat_statements'") == 0 then
    return nil, "pg_stat_statements is not installed (create extension pg_stat_statements)"
  end
  return c:query([[select query, calls, mean_exec_time as mean_ms, total_exec_time as total_ms
                   from pg_stat_statements order by mean_exec_time desc limit $1::int]], opts.limit or 10)
end

return M
