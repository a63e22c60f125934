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

--- Seconds in an interval as PostgreSQL prints it ("1 day 02:03:04.5", "-00:05:00",
--- "3 mons" as 30 days, "1 year" as 365.25 days, as extract(epoch ...) counts them).
function M.seconds(interval)
  if type(interval) == "number" then return interval end
  local text = tostring(interval)
  if tonumber(text) then return tonumber(text) end
  -- A duration as runbooks write them: "90s", "5m", "-5m", "1h30m", "500ms", "2days".
  if not text:find("%s") and not text:find(":") then
    local sign, body = text:match("^([+-]?)(.+)$")
    local total, rest = 0, body
    local factors = { ms = 0.001, s = 1, sec = 1, secs = 1, m = 60, min = 60, mins = 60, h = 3600, hr = 3600,
                      hour = 3600, hours = 3600, d = 86400, day = 86400, days = 86400, w = 604800 }
    for n, unit in body:gmatch("(%d+%.?%d*)(%a+)") do
      local f = factors[unit]
      if not f then error("runbook.pg.seconds: unknown unit '" .. unit .. "' in '" .. text .. "'", 2) end
      total = total + tonumber(n) * f
      rest = rest:gsub("^" .. n:gsub("%.", "%%.") .. unit, "", 1)
    end
    if rest == "" and body ~= "" then return sign == "-" and -total or total end
  end
  local total = 0
  local units = { year = 365.25 * 86400, mon = 30 * 86400, day = 86400, week = 7 * 86400,
                  hour = 3600, min = 60, sec = 1, minute = 60, second = 1 }
  for n, unit in text:gmatch("([+-]?%d+%.?%d*)%s+(%a+)") do
    local u = unit:gsub("s$", "")
    local factor = units[u]
    if not factor then error("runbook.pg.seconds: unknown unit '" .. unit .. "' in '" .. text .. "'", 2) end
    total = total + tonumber(n) * factor
  end
  local sign, h, m, sec = text:match("([+-]?)(%d+):(%d+):(%d+%.?%d*)")
  if h then
    local clock = tonumber(h) * 3600 + tonumber(m) * 60 + tonumber(sec)
    total = total + (sign == "-" and -clock or clock)
  elseif not text:find("%d+%.?%d*%s+%a") then
    error("runbook.pg.seconds: '" .. text .. "' is not an interval or a duration", 2)
  end
  return total
end

local SESSIONS = [[
  select pid, usename as user, datname as database, application_name as application,
         client_addr::text as client, client_port, backend_start, xact_start, query_start, state,
         wait_event_type, wait_event, backend_xid, backend_xmin,
         extract(epoch from now() - xact_start)::float8 as xact_seconds,
         extract(epoch from now() - state_change)::float8 as state_seconds,
         left(query, 2000) as query
  from pg_stat_activity
  where backend_type = 'client backend' and pid <> pg_backend_pid()]]

--- Sessions whose transaction has been open longer than `older_than` (a duration: "5m",
--- "1 hour"), oldest first, with their client, age in seconds and what they run. Each row
--- carries pid, backend_start and xact_start: pass it to `cancel`/`terminate`.
--- opts: { older_than = "5m", state = "active" | "idle in transaction" | nil }
function M.long_running(c, opts)
  opts = opts or {}
  return c:query(SESSIONS .. [[
    and xact_start < now() - $1::interval and ($2::text is null or state = $2::text)
    order by xact_start]], opts.older_than or "5m", opts.state or null)
end

--- Sessions idle in a transaction (holding locks and snapshots, doing nothing) for longer
--- than `older_than`. opts: { older_than = "1m" }
function M.idle_in_transaction(c, opts)
  opts = opts or {}
  return c:query(SESSIONS .. [[
    and state in ('idle in transaction', 'idle in transaction (aborted)')
    and state_change < now() - $1::interval
    order by state_change]], opts.older_than or "1m")
end

--- Who blocks whom: every session waiting on a lock, with the pids blocking it (from
--- pg_blocking_pids), and `roots`: the blockers that wait on nobody, the ones to look at first.
--- opts: { database = nil } (only sessions of this database)
function M.blocking(c, opts)
  opts = opts or {}
  local waiting = c:query([[
    select a.pid, a.usename as user, a.application_name as application, a.state,
           pg_blocking_pids(a.pid) as blocked_by, a.wait_event_type, a.wait_event,
           extract(epoch from now() - a.query_start)::float8 as waiting_seconds, left(a.query, 2000) as query
    from pg_stat_activity a
    where cardinality(pg_blocking_pids(a.pid)) > 0 and ($1::text is null or a.datname = $1::text)
    order by a.query_start]], opts.database or null)
  local is_waiting, roots, seen = {}, {}, {}
  for _, w in ipairs(waiting) do is_waiting[w.pid] = true end
  for _, w in ipairs(waiting) do
    for _, b in ipairs(w.blocked_by) do
      if not is_waiting[b] and not seen[b] then
        seen[b] = true
        if b == 0 then
          -- pg_blocking_pids gives 0 for a prepared (two-phase) transaction.
          roots[#roots + 1] = { pid = 0, state = "prepared transaction",
            prepared = c:query("select gid, prepared, owner, database from pg_prepared_xacts order by prepared") }
        else
          -- (A blocker may have ended between the two queries: then it is not listed.)
          local row = c:query([[select pid, usename as user, application_name as application, state,
            backend_start, xact_start, extract(epoch from now() - xact_start)::float8 as xact_seconds,
            left(query, 2000) as query from pg_stat_activity where pid = $1]], b)[1]
          if row then roots[#roots + 1] = row end
        end
      end
    end
  end
  return { waiting = waiting, roots = roots }
end

-- Signals a session only if it is still the one that was looked at: same pid, same
-- backend_start, and (when given) the same transaction.
local function signal(c, fn, s)
  if type(s) ~= "table" or not s.pid or not s.backend_start then
    error("runbook.pg." .. fn .. ": pass a row of long_running/idle_in_transaction/blocking (pid, backend_start, xact_start)", 3)
  end
  local rows = c:execute_returning(string.format([[
    select pg_%s_backend(pid) as done from pg_stat_activity
    where pid = $1 and backend_start = $2::timestamptz
      and ($3::timestamptz is null or xact_start = $3::timestamptz)]], fn),
    s.pid, s.backend_start, s.xact_start or null)
  return rows[1] ~= nil and rows[1].done == true
end

--- Cancels the session's current statement, if it is still the session that was looked at
--- (pid, backend_start, xact_start): a pid reused by a new connection, or a session that
--- started a new transaction since, is spared. Returns whether the cancel was sent.
function M.cancel(c, session) return signal(c, "cancel", session) end

--- Terminates the session (as `cancel`, the same guard). Returns whether it was terminated.
function M.terminate(c, session) return signal(c, "terminate", session) end

--- Terminates every session of `role` but this one (before a password rotation, a role drop).
--- Returns the pids terminated.
function M.terminate_sessions(c, role)
  -- pg_terminate_backend in the select list: it runs for the rows the filter kept, never
  -- for a row the planner had not ruled out yet.
  local rows = c:execute_returning([[select pid, pg_terminate_backend(pid) as done from pg_stat_activity
    where usename = $1 and pid <> pg_backend_pid()]], role)
  local pids = {}
  for _, r in ipairs(rows) do
    if r.done then pids[#pids + 1] = r.pid end
  end
  return pids
end

--- Whether a role exists.
function M.role_exists(c, role)
  return c:scalar("select exists (select 1 from pg_roles where rolname = $1)", role)
end

--- Sets a role's password from a secret, sending only its SCRAM-SHA-256 verifier.
function M.set_password(c, role, password)
  return c:set_password(role, password)
end

--- Whether this server is a primary (not in recovery).
function M.is_primary(c)
  return not c:scalar("select pg_is_in_recovery()")
end

--- Waits until every replica (on a primary) or this replica has replayed `lsn` (default: the
--- primary's current WAL position). Fails after `timeout` ("30s"). Returns the seconds waited.
function M.wait_for_replication(c, lsn, timeout)
  local started = os.time()
  local primary = M.is_primary(c)
  lsn = lsn or (primary and c:scalar("select pg_current_wal_lsn()") or nil)
  if not lsn then error("runbook.pg.wait_for_replication: give the LSN to wait for on a replica", 2) end
  local limit = M.seconds(timeout or "30s")
  while true do
    local behind
    if primary then
      -- No replica streaming is not "every replica caught up".
      local streaming = c:scalar("select count(*) from pg_stat_replication where state = 'streaming'")
      if streaming == 0 then
        error("runbook.pg.wait_for_replication: no replica is streaming from this primary", 2)
      end
      behind = c:scalar([[select count(*) from pg_stat_replication
                          where state = 'streaming' and (replay_lsn is null or replay_lsn < $1::pg_lsn)]], lsn)
    else
      behind = c:scalar("select case when pg_last_wal_replay_lsn() >= $1::pg_lsn then 0 else 1 end", lsn)
    end
    local waited = os.time() - started
    if behind == 0 then return waited end
    if waited >= limit then
      error(string.format("runbook.pg.wait_for_replication: %d replica(s) had not replayed %s after %s",
        behind, lsn, tostring(timeout or "30s")), 2)
    end
    sleep("500ms")
  end
end

--- Estimated bloat of tables, from the planner's statistics (run ANALYZE first): the pages
--- a table has against the pages its live rows need at its fillfactor. Largest waste first.
--- opts: { min_bytes = 1048576, schema = nil }
function M.table_bloat(c, opts)
  opts = opts or {}
  return c:query([[
    with bs as (select current_setting('block_size')::numeric as bs),
    cols as (
      select s.schemaname, s.tablename,
             sum((1 - coalesce(s.null_frac, 0)) * coalesce(s.avg_width, 0))::numeric as data_width,
             bool_or(s.null_frac > 0) as has_nulls, count(*) as ncols
      from pg_stats s group by 1, 2),
    est as (
      select n.nspname as schema, c.relname as table, c.reltuples::numeric as reltuples, c.relpages::numeric as pages,
             coalesce((select substring(o from 'fillfactor=(\d+)')::int from unnest(c.reloptions) o
                       where o like 'fillfactor=%'), 100) as fillfactor,
             -- tuple header 23 bytes (+ null bitmap), MAXALIGN 8, data, 4-byte line pointer
             (ceil((23 + case when cols.has_nulls then ceil(cols.ncols / 8.0) else 0 end) / 8.0) * 8
               + ceil(cols.data_width / 8.0) * 8 + 4) as tuple_bytes
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      join cols on cols.schemaname = n.nspname and cols.tablename = c.relname
      where c.relkind = 'r' and n.nspname not in ('pg_catalog', 'information_schema')
        and ($1::text is null or n.nspname = $1::text))
    select schema, "table", pages::bigint as pages,
           greatest(ceil(reltuples / greatest(floor((bs - 24) * fillfactor / 100 / tuple_bytes), 1)), 1)::bigint as expected_pages,
           ((pages - greatest(ceil(reltuples / greatest(floor((bs - 24) * fillfactor / 100 / tuple_bytes), 1)), 1)) * bs)::bigint as bloat_bytes,
           round(100 * (1 - greatest(ceil(reltuples / greatest(floor((bs - 24) * fillfactor / 100 / tuple_bytes), 1)), 1) / greatest(pages, 1)), 1)::float8 as bloat_pct
    from est, bs
    where (pages - greatest(ceil(reltuples / greatest(floor((bs - 24) * fillfactor / 100 / tuple_bytes), 1)), 1)) * bs >= $2::bigint
    order by bloat_bytes desc]], opts.schema or null, opts.min_bytes or 1048576)
end

--- Estimated bloat of btree indexes, from the planner's statistics (run ANALYZE first): the
--- pages an index has against the pages its entries need at its fillfactor (90 for btree).
--- Largest waste first. opts: { min_bytes = 1048576, schema = nil }
function M.btree_bloat(c, opts)
  opts = opts or {}
  return c:query([[
    with bs as (select current_setting('block_size')::numeric as bs),
    idx as (
      select n.nspname as schema, ic.relname as index, tc.relname as table, ic.reltuples::numeric as reltuples,
             ic.relpages::numeric as pages,
             coalesce((select substring(o from 'fillfactor=(\d+)')::int from unnest(ic.reloptions) o
                       where o like 'fillfactor=%'), 90) as fillfactor,
             -- index tuple header 8 bytes, key data MAXALIGNed, 4-byte line pointer
             8 + ceil(coalesce((select sum(coalesce(s.avg_width, 8)) from pg_attribute a
                   left join pg_stats s on s.schemaname = n.nspname and s.tablename = tc.relname and s.attname = a.attname
                   where a.attrelid = tc.oid and a.attnum = any(i.indkey::int2[])), 8) / 8.0) * 8 + 4 as tuple_bytes
      from pg_index i
      join pg_class ic on ic.oid = i.indexrelid
      join pg_class tc on tc.oid = i.indrelid
      join pg_namespace n on n.oid = ic.relnamespace
      join pg_am am on am.oid = ic.relam and am.amname = 'btree'
      where n.nspname not in ('pg_catalog', 'information_schema') and i.indisvalid and ic.reltuples >= 0
        and ($1::text is null or n.nspname = $1::text))
    select schema, index, "table", pages::bigint as pages,
           (1 + ceil(reltuples * tuple_bytes / ((bs - 24 - 16) * fillfactor / 100)))::bigint as expected_pages,
           ((pages - 1 - ceil(reltuples * tuple_bytes / ((bs - 24 - 16) * fillfactor / 100))) * bs)::bigint as bloat_bytes,
           round(100 * (1 - (1 + ceil(reltuples * tuple_bytes / ((bs - 24 - 16) * fillfactor / 100))) / greatest(pages, 1)), 1)::float8 as bloat_pct
    from idx, bs
    where (pages - 1 - ceil(reltuples * tuple_bytes / ((bs - 24 - 16) * fillfactor / 100))) * bs >= $2::bigint
    order by bloat_bytes desc]], opts.schema or null, opts.min_bytes or 1048576)
end

--- REINDEX INDEX CONCURRENTLY, made safe to rerun: first drops what an interrupted run left
--- (the invalid `<index>_ccnew` / `_ccold`), then reindexes in a session with `lock_timeout`,
--- retrying a lock timeout (SQLSTATE 55P03) up to `retries` times with a growing pause.
--- opts: { lock_timeout = "5s", retries = 3 }. Returns { index, attempts, dropped }.
function M.reindex_concurrently(c, index, opts)
  opts = opts or {}
  local schema, name = split_name(index)
  local info = c:query([[select format('%I.%I', n.nspname, t.relname) as table_name
    from pg_class ic join pg_namespace n on n.oid = ic.relnamespace
    join pg_index i on i.indexrelid = ic.oid join pg_class t on t.oid = i.indrelid
    where n.nspname = $1 and ic.relname = $2]], schema, name)
  if #info == 0 then error("runbook.pg.reindex_concurrently: no index " .. index, 2) end
  local dropped = M.drop_reindex_leftovers(c, info[1].table_name)
  local target = c:scalar("select format('%I.%I', $1::text, $2::text)", schema, name)
  local retries = opts.retries or 3
  for attempt = 1, retries + 1 do
    local ok, err = pcall(function()
      c:session(function(s)
        -- In milliseconds: PostgreSQL does not read "1m" or "1h30m".
        s:execute("select set_config('lock_timeout', $1, false)",
          tostring(math.floor(M.seconds(opts.lock_timeout or "5s") * 1000)))
        s:execute("reindex index concurrently " .. target)
      end)
    end)
    if ok then return { index = target, attempts = attempt, dropped = dropped } end
    -- A timed-out attempt leaves its own _ccnew behind.
    for _, d in ipairs(M.drop_reindex_leftovers(c, info[1].table_name)) do dropped[#dropped + 1] = d end
    if not tostring(err):find("55P03", 1, true) or attempt > retries then error(err, 0) end
    log.warn("reindex waited too long for a lock; trying again", { index = target, attempt = attempt })
    sleep(tostring(attempt * 2) .. "s")
  end
end

return M
