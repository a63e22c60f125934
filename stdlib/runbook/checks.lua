--- runbook.checks: the pre-flight and health checks of the deployment guides. Every check
--- returns a result, `{ ok = boolean, level = "ok"|"warning"|"critical", summary = "...", ... }`,
--- and never raises for what it finds; `checks.assert(result, ...)` fails the step with the
--- summaries of the checks that are not ok.
---   local checks = require "runbook.checks"
---   checks.assert(checks.env{ "DATABASE_URL", "SUPABASE_URL" }, checks.database(conn))
local M = {}

-- The first line of an error, without the "runtime error: " Lua puts before it.
local function reason(err)
  return (tostring(err):match("[^\n]*"):gsub("^runtime error: ", ""))
end

local function result(ok, level, summary, fields)
  local r = fields or {}
  r.ok, r.level, r.summary = ok, level, summary
  return r
end

--- "ok", "warning" or "critical" for a value against two thresholds (value >= threshold).
function M.level(value, warn, critical)
  if critical and value >= critical then return "critical" end
  if warn and value >= warn then return "warning" end
  return "ok"
end

--- Required environment variables: which are set (non-empty) and which are missing. Only the
--- names are reported, never a value.
function M.env(names)
  local missing, present = {}, {}
  for _, name in ipairs(names) do
    local v = os.getenv(name)
    if v == nil or v == "" then missing[#missing + 1] = name else present[#present + 1] = name end
  end
  if #missing == 0 then
    return result(true, "ok", #present .. " required variables set", { missing = missing, present = present })
  end
  return result(false, "critical", "missing environment variables: " .. table.concat(missing, ", "),
    { missing = missing, present = present })
end

--- A file that must not mention any of `names` (the "no service-role key in the frontend env
--- file" check): the lines that do are reported by number, never their text. A missing file is
--- ok (nothing leaks from it).
function M.file_without(path, names)
  local found = {}
  for _, name in ipairs(names) do
    -- -o prints only the matched name, so no value ever reaches the output or the log.
    local r = exec{ "grep", "-n", "-o", "-i", "-F", "-e", name, "--", path,
                    check = false, readonly = true, echo = false }
    if r.code == 2 and not r.stderr:find("No such file", 1, true) then
      return result(false, "critical", "cannot read " .. path .. ": " .. r.stderr:gsub("%s+$", ""), { found = found })
    end
    for line in r.stdout:gmatch("(%d+):") do
      found[#found + 1] = { name = name, line = tonumber(line) }
    end
  end
  if #found == 0 then
    return result(true, "ok", path .. " mentions none of " .. table.concat(names, ", "), { found = found })
  end
  local where = {}
  for _, f in ipairs(found) do where[#where + 1] = f.name .. " at line " .. f.line end
  return result(false, "critical", path .. " must not contain " .. table.concat(where, ", "), { found = found })
end

--- HTTP health of services: `{ api = "http://10.0.0.5:3000/api/health", edge = { url = ...,
--- expect = 200, json_path = "status", equals = "ok" } }`. Each is asked once (opts.timeout,
--- default 10s); a service is healthy with an expected status (default 2xx) and, with json_path,
--- the value there (equal to `equals` when given).
function M.http(services, opts)
  opts = opts or {}
  local out, bad = {}, {}
  local names = {}
  for name in pairs(services) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local spec = services[name]
    if type(spec) ~= "table" then spec = { url = spec } end
    local ok, resp = pcall(http.get, spec.url, { timeout = spec.timeout or opts.timeout or "10s", expect = "any",
                                                 readonly = true })
    local s = { url = spec.url }
    if not ok then
      s.ok, s.error = false, reason(resp)
    else
      s.status, s.ms = resp.status, resp.ms
      local expect = spec.expect
      if expect == nil then s.ok = resp.status >= 200 and resp.status < 300 else s.ok = resp.status == expect end
      if not s.ok then s.error = "status " .. resp.status end
      if s.ok and spec.json_path then
        local jok, body = pcall(resp.json, resp)
        local v = jok and body or nil
        for part in spec.json_path:gmatch("[^.]+") do
          if type(v) ~= "table" then v = nil break end
          v = v[tonumber(part) or part]
        end
        if v == nil or v == null or (spec.equals ~= nil and v ~= spec.equals) then
          s.ok = false
          s.error = spec.json_path .. " is " .. tostring(v) .. (spec.equals ~= nil and (", expected " .. tostring(spec.equals)) or "")
        end
      end
    end
    out[name] = s
    if not s.ok then bad[#bad + 1] = name .. " (" .. s.error .. ")" end
  end
  if #bad == 0 then
    return result(true, "ok", #names .. " services healthy", { services = out })
  end
  return result(false, "critical", "unhealthy: " .. table.concat(bad, ", "), { services = out })
end

--- Database connectivity: `select current_user, current_database(), version()` on a
--- PostgreSQL connection (SQLite and MySQL: `select 1`).
function M.database(conn)
  local ok, row = pcall(function()
    local kind = tostring(conn)
    if kind:find("postgres", 1, true) then
      return conn:query_one("select current_user as user, current_database() as database, version() as version")
    end
    conn:scalar("select 1")
    return {}
  end)
  if not ok then
    return result(false, "critical", "database unreachable: " .. reason(row))
  end
  return result(true, "ok", "database answers" .. (row.database and (": " .. row.database .. " as " .. row.user) or ""), row)
end

-- A PostgreSQL check that reports an unreachable server as critical, never raises.
local function pg_check(name, fn)
  local ok, r = pcall(fn)
  if not ok then return result(false, "critical", name .. ": " .. reason(r)) end
  return r
end

--- PostgreSQL: client connections against max_connections (warn at 80%, critical at 95%).
--- opts: { warn = 0.8, critical = 0.95 }
function M.pg_connections(conn, opts)
  opts = opts or {}
  return pg_check("connections", function()
    local r = conn:query_one([[select count(*) filter (where backend_type = 'client backend') as used,
      current_setting('max_connections')::int as max from pg_stat_activity]])
    local share = r.used / r.max
    local level = M.level(share, opts.warn or 0.8, opts.critical or 0.95)
    return result(level == "ok", level, string.format("%d of %d connections in use (%.0f%%)", r.used, r.max, share * 100),
      { used = r.used, max = r.max, share = share })
  end)
end

--- PostgreSQL: the oldest open transaction (warn past `warn`, critical past `critical`).
--- opts: { warn = "5m", critical = "1h" }
function M.pg_long_transactions(conn, opts)
  opts = opts or {}
  local pg = require "runbook.pg"
  return pg_check("long transactions", function()
    local r = conn:query_one([[select count(*) filter (where now() - xact_start > $1::interval) as over,
      coalesce(max(extract(epoch from now() - xact_start)), 0)::float8 as oldest_seconds
      from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()]], opts.warn or "5m")
    local level = M.level(r.oldest_seconds, pg.seconds(opts.warn or "5m"), pg.seconds(opts.critical or "1h"))
    return result(level == "ok", level, string.format("oldest transaction open %.0fs (%d past %s)", r.oldest_seconds,
      r.over, opts.warn or "5m"), r)
  end)
end

--- PostgreSQL: replication lag of every replica, or of this replica, in seconds (warn 30 s,
--- critical 300 s); ok with no replication. opts: { warn = 30, critical = 300 }
function M.pg_replication_lag(conn, opts)
  opts = opts or {}
  local pg = require "runbook.pg"
  return pg_check("replication lag", function()
    local worst = 0
    local lags = pg.replication_lag(conn)
    for _, l in ipairs(lags) do
      worst = math.max(worst, l.replay_lag_seconds or l.replay_delay_seconds or 0)
    end
    local level = M.level(worst, opts.warn or 30, opts.critical or 300)
    return result(level == "ok", level, #lags == 0 and "no replication" or string.format("worst replica lag %.1fs", worst),
      { replicas = lags, worst_seconds = worst })
  end)
end

--- PostgreSQL: estimated table and btree bloat past a share of their size (warn 30%, critical
--- 60%), counting only objects wasting at least `min_bytes` (default 10 MiB).
--- opts: { warn = 30, critical = 60, min_bytes = 10485760 }
function M.pg_bloat(conn, opts)
  opts = opts or {}
  local pg = require "runbook.pg"
  return pg_check("bloat", function()
    local worst, objects = 0, {}
    for _, kind in ipairs({ "table_bloat", "btree_bloat" }) do
      for _, o in ipairs(pg[kind](conn, { min_bytes = opts.min_bytes or 10485760 })) do
        if o.bloat_pct >= (opts.warn or 30) then
          objects[#objects + 1] = { name = o.schema .. "." .. (o.index or o.table), bloat_pct = o.bloat_pct,
                                    bloat_bytes = o.bloat_bytes }
        end
        worst = math.max(worst, o.bloat_pct)
      end
    end
    local level = M.level(worst, opts.warn or 30, opts.critical or 60)
    return result(level == "ok", level, #objects == 0 and "no bloat past the limits"
      or string.format("%d object(s) bloated, worst %.0f%%", #objects, worst), { objects = objects })
  end)
end

--- PostgreSQL: transaction ID wraparound: the oldest database's age(datfrozenxid) against the
--- 2^31 limit (warn at 50%, critical at 75%: autovacuum is not keeping up).
--- opts: { warn = 0.5, critical = 0.75 }
function M.pg_wraparound(conn, opts)
  opts = opts or {}
  return pg_check("wraparound", function()
    local r = conn:query_one([[select datname as database, age(datfrozenxid)::bigint as age
      from pg_database order by age(datfrozenxid) desc limit 1]])
    local share = r.age / 2147483648
    local level = M.level(share, opts.warn or 0.5, opts.critical or 0.75)
    return result(level == "ok", level, string.format("oldest unfrozen transaction ID: %d (%.1f%% of the limit) in %s",
      r.age, share * 100, r.database), { database = r.database, age = r.age, share = share })
  end)
end

--- A bucket (or folder) reachable with the store's credentials.
function M.bucket(store)
  -- A listing under a prefix nothing uses: empty when the bucket is there, an error when it is
  -- not (a missing object and a missing bucket look alike to `exists`).
  local ok, err = pcall(store.list, store, ".runbook-probe/")
  if not ok then
    return result(false, "critical", tostring(store) .. " unreachable: " .. reason(err))
  end
  return result(true, "ok", tostring(store) .. " reachable")
end

--- Disk usage of `path` (default "/") over an ssh session: `df -P -k`. opts: { warn = 80,
--- critical = 90 } (percent used).
function M.disk(session, opts)
  opts = opts or {}
  local path = opts.path or "/"
  local r = session:exec("df -P -k '" .. path:gsub("'", "'\\''") .. "'", { check = false, readonly = true, echo = false })
  local used = tonumber((r.stdout or ""):match("\n[^\n]-%s(%d+)%%"))
  if r.code ~= 0 or not used then
    return result(false, "critical", "df " .. path .. " failed: " .. (r.stderr or ""):gsub("%s+$", ""))
  end
  local level = M.level(used, opts.warn or 80, opts.critical or 90)
  return result(level ~= "critical", level, string.format("%s %d%% used", path, used), { used_percent = used, path = path })
end

--- TLS certificates of `hosts` ("host" or "host:port"): warn under `warn_days` (default 30),
--- critical under `critical_days` (default 7) or when the chain does not verify. opts also
--- takes tls options (ca, server_name).
function M.tls(hosts, opts)
  opts = opts or {}
  local warn, critical = opts.warn_days or 30, opts.critical_days or 7
  local out, notes, worst = {}, {}, "ok"
  local rank = { ok = 0, warning = 1, critical = 2 }
  for _, host in ipairs(hosts) do
    local ok, cert = pcall(tls.certificate, host, { ca = opts.ca, server_name = opts.server_name })
    local h
    if not ok then
      h = { ok = false, level = "critical", error = reason(cert) }
    else
      local level = "ok"
      if cert.days_left < critical or not cert.valid then level = "critical"
      elseif cert.days_left < warn then level = "warning" end
      h = { ok = level ~= "critical", level = level, days_left = cert.days_left, not_after = cert.not_after,
            valid = cert.valid, error = cert.error }
    end
    out[host] = h
    if h.level ~= "ok" then
      notes[#notes + 1] = host .. (h.days_left and (" expires in " .. h.days_left .. " days") or "") ..
        (h.error and (" (" .. h.error .. ")") or "")
    end
    if rank[h.level] > rank[worst] then worst = h.level end
  end
  local summary = #notes == 0 and (#hosts .. " certificates valid for more than " .. warn .. " days")
    or table.concat(notes, "; ")
  return result(worst ~= "critical", worst, summary, { hosts = out })
end

--- Storage quota: `used` of `limit` bytes; warning at 80%, critical at 95% (opts.warn,
--- opts.critical, in percent).
function M.quota(used, limit, opts)
  opts = opts or {}
  local percent = limit > 0 and (used * 100 / limit) or 100
  local level = M.level(percent, opts.warn or 80, opts.critical or 95)
  return result(level ~= "critical", level, string.format("%.1f%% of quota used", percent),
    { percent = percent, used = used, limit = limit })
end

--- Fails (raises) with the summaries of the results that are not ok; returns them all otherwise.
function M.assert(...)
  local bad = {}
  for i = 1, select("#", ...) do
    local r = select(i, ...)
    if not r.ok then bad[#bad + 1] = r.summary end
  end
  if #bad > 0 then fail(table.concat(bad, "; ")) end
  return ...
end

return M
