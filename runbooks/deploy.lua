-- A release as the deployment guides do it by hand: pre-flight checks, a backup, the migration in
-- one transaction, the schema verified (tables, indexes, row-level security), the release to the
-- hosts with a strategy, health checks and smoke requests. A failure after the migration rolls
-- the release and the database back (the backup is restored); one notification names the step.
-- With strategy=traffic_canary the release is judged by live traffic, as the guides' canary is: the
-- canary hosts take 5%, 25%, 50%, then 100% of the requests through HAProxy or nginx, each stage
-- held and judged by Prometheus' numbers (the alert rules in `checks`), then the rest follow.
--   runbook run runbooks/deploy.lua -p version=1.4.2 -p from=build/ -p migration=migrations/006_media_tables.sql \
--     -p health_url=http://{host}:3000/api/health -p expect_tables=media_assets,media_usage_logs
local deploy = require "runbook.deploy"

runbook {
  name = "deploy",
  description = "Pre-flight checks, backup, migration, schema verification, release with a strategy, health checks "
    .. "and smoke requests; the release and the database are rolled back when a step fails",
  params = deploy.with_traffic_params {
    version = { type = "string", required = true, pattern = "^[A-Za-z0-9._-]+$", description = "the release id" },
    from = { type = "string", required = true, description = "the release: a local folder or .tar.gz" },
    hosts = { type = "string", default = "web", description = "the inventory group of runbook.toml" },
    strategy = { type = "enum", choices = { "canary", "rolling", "blue_green", "traffic_canary" }, default = "canary",
                 description = "canary: one host first; traffic_canary: a share of the requests, stage by stage (needs lb)" },
    root = { type = "string", default = "/srv/app", description = "release root on each host ({host} is its address)" },
    restart = { type = "string", description = "run in the root after a switch ($RELEASE_HOST, $RELEASE_COLOR set)" },
    health_url = { type = "string", required = true, description = "each host's health URL, {host} its address" },
    green_health_url = { type = "string", description = "blue/green: the green colour's health URL ({host})" },
    health_timeout = { type = "string", default = "1m", description = "how long a host may take to become healthy" },
    smoke = { type = "list", description = "paths requested on each host after the release (2xx expected)" },
    -- traffic_canary: the hosts that take the canary's share and its stages (the load balancer
    -- and the numbers that judge a stage are runbook.deploy's traffic params, added below).
    canary_hosts = { type = "integer", default = 1, min = 1, description = "traffic_canary: hosts that take the canary's share" },
    stages = { type = "list", default = { "5", "25", "50", "100" }, description = "traffic_canary: percentages, the last 100" },
    database_url = { type = "secret", env = "DATABASE_URL", required = true, description = "the PostgreSQL database" },
    migration = { type = "string", description = "a SQL file applied in one transaction" },
    down_migration = { type = "string",
                       description = "a SQL file that reverts the migration (preferred; else a rollback restores the backup, "
                         .. "losing what was written since it)" },
    expect_tables = { type = "list", description = "tables the migration must leave" },
    expect_indexes = { type = "list", description = "indexes the migration must leave" },
    expect_rls = { type = "list", description = "tables that must have row-level security on, with policies" },
    required_env = { type = "list", description = "environment variables that must be set (names only are shown)" },
    frontend_env = { type = "string", description = "a frontend env file that must not name a server-side key" },
    forbidden_keys = { type = "list", default = { "SUPABASE_SERVICE_ROLE_KEY" }, description = "keys frontend_env must not name" },
    store = { type = "string", default = "file://./backups", description = "where the pre-deploy backup goes" },
    s3_endpoint = { type = "string", env = "S3_ENDPOINT" },
    s3_region = { type = "string", default = "us-east-1", env = "AWS_REGION" },
    webhook = { type = "string", env = "RUNBOOK_NOTIFY_URL", description = "posted once when the deploy fails" },
  },
  lock = "deploy",
  rollback = "auto",
}

local checks = require "runbook.checks"
local notify = require "runbook.notify"
local pg = require "runbook.pg"

local address = deploy.address
local function url_for(host, color)
  local template = (color == "green" and params.green_health_url) or params.health_url
  return (template:gsub("{host}", address(host)))
end

if params.strategy == "blue_green" and not params.green_health_url then
  fail("strategy blue_green needs green_health_url: the idle colour is checked before traffic moves to it")
end
if params.strategy == "traffic_canary" and not params.lb then
  fail("strategy traffic_canary needs lb (haproxy or nginx): the load balancer that moves the requests")
end

local conn = db.connect(params.database_url)
local app = deploy.layout {
  root = function(host) return (params.root:gsub("{host}", address(host))) end,
  restart = params.restart,
}
local function health(host, color)
  http.wait_healthy(url_for(host, color), { timeout = params.health_timeout, interval = "500ms", attempt_timeout = "5s" })
end

-- The traffic canary's plan: which hosts take the canary's share, the load balancer's backend,
-- and the analysis of each stage (Prometheus' numbers, else the canaries' health endpoint).
local function traffic_plan()
  local all = ssh.group(params.hosts)
  if #all <= params.canary_hosts then
    fail("traffic_canary: " .. #all .. " host(s) in " .. params.hosts .. ", " .. params.canary_hosts
      .. " of them canaries: the others must carry the rest of the traffic")
  end
  local canary, stable, servers = {}, {}, {}
  for i, host in ipairs(all) do
    if i <= params.canary_hosts then canary[#canary + 1] = host; servers[#servers + 1] = deploy.lb_server(params, host)
    else stable[#stable + 1] = deploy.lb_server(params, host) end
  end
  local backend = deploy.traffic_backend(params, servers, stable)
  local stages = {}
  for i, v in ipairs(params.stages) do
    stages[i] = tonumber(v) or fail("stages: '" .. v .. "' is not a percentage")
  end
  local analysis = deploy.traffic_analysis(params, canary, function(host)
    return pcall(http.get, url_for(host), { timeout = "5s", readonly = true })
  end)
  return { id = params.version, from = params.from, health = health, canary = canary, backend = backend,
           pool = deploy.traffic_pool(params), server = function(host) return deploy.lb_server(params, host) end,
           stages = stages, hold = params.hold, warmup = params.warmup, analysis = analysis }
end

notify.on_failure(params.webhook, function()
  step("pre-flight", { description = "Required variables set, no server key in the frontend env, database reachable" },
    function()
      local results = { checks.database(conn) }
      if params.required_env then results[#results + 1] = checks.env(params.required_env) end
      if params.frontend_env then results[#results + 1] = checks.file_without(params.frontend_env, params.forbidden_keys) end
      checks.assert(table.unpack(results))
      return #results
    end)

  local store_opts = nil
  if params.store:match("^s3://") then
    store_opts = { endpoint = params.s3_endpoint, region = params.s3_region,
                   allow_http = params.s3_endpoint ~= nil and params.s3_endpoint:match("^http://") ~= nil }
  end
  local store = storage.open(params.store, store_opts)
  local backup_of = step("backup", { description = "Dump the database before anything changes", retries = 1 },
    function()
      local m = backup.create { source = params.database_url, to = store, label = "pre-deploy-" .. params.version }
      return { key = m.key, sha256 = m.sha256 }
    end)

  step("migrate", {
    description = "Apply the migration in one transaction (nothing is applied when a statement fails)",
    when = function() return params.migration ~= nil end,
    undo = function()
      if params.down_migration then
        log.warn("reverting the migration", { file = params.down_migration })
        conn:execute_file(params.down_migration)
        return
      end
      -- The database as the backup has it. A restore only replaces what the dump contains, so
      -- the migrated public schema is set aside first (renamed, not dropped: if the restore
      -- fails, it is put back), then dropped once the restore succeeded.
      local aside = "public_before_rollback_" .. params.version:gsub("[^%w]", "_")
      log.warn("restoring the pre-deploy backup", { key = backup_of.key, set_aside = aside })
      conn:execute("drop schema if exists " .. aside .. " cascade")
      conn:execute("alter schema public rename to " .. aside)
      conn:execute("create schema public")
      local ok, err = pcall(backup.restore, backup_of.key, { store = store, into = params.database_url, clean = true })
      if not ok then
        conn:execute("drop schema public cascade")
        conn:execute("alter schema " .. aside .. " rename to public")
        error(err, 0)
      end
      conn:execute("drop schema " .. aside .. " cascade")
    end,
  }, function()
    return conn:execute_file(params.migration)
  end)

  step("verify schema", { description = "The expected tables, indexes and row-level security exist" }, function()
    local problems = {}
    local missing = pg.missing_tables(conn, params.expect_tables or {})
    if #missing > 0 then problems[#problems + 1] = "missing tables: " .. table.concat(missing, ", ") end
    if params.expect_indexes then
      local have = {}
      for _, i in ipairs(pg.indexes(conn)) do have[i.index] = true end
      local absent = {}
      for _, name in ipairs(params.expect_indexes) do if not have[name] then absent[#absent + 1] = name end end
      if #absent > 0 then problems[#problems + 1] = "missing indexes: " .. table.concat(absent, ", ") end
    end
    if params.expect_rls then
      local bad = {}
      for name, r in pairs(pg.rls(conn, params.expect_rls)) do
        if not r.enabled or #r.policies == 0 then bad[#bad + 1] = name end
      end
      table.sort(bad)
      if #bad > 0 then problems[#problems + 1] = "row-level security off or without policies: " .. table.concat(bad, ", ") end
    end
    if #problems > 0 then fail(table.concat(problems, "; ")) end
    return "ok"
  end)

  local released = nil
  if params.strategy == "traffic_canary" then
    deploy.traffic_rollout(app, params.hosts, traffic_plan())
  else
    released = step("release", {
      description = "Upload, switch and restart on each host with the chosen strategy, health-gated",
      undo = function()
        if params.strategy == "blue_green" then
          deploy.blue_green_rollback(app, params.hosts)
        else
          -- Only hosts that run this release (a host left on the old one is not moved further back).
          ssh.each(params.hosts, function(s, host)
            if app:current(s, host) == params.version then return app:rollback(s, host) end
          end)
        end
      end,
    }, function()
      local r = deploy[params.strategy](app, params.hosts, { id = params.version, from = params.from, health = health })
      -- Per host: the live colour (blue/green), else the outcome.
      local out = {}
      for host, o in pairs(r) do out[host] = type(o.result) == "table" and o.result.live or o.status end
      return out
    end)
  end

  step("health", { description = "Every host's health endpoint answers 2xx" }, function()
    local services = {}
    for _, host in ipairs(ssh.group(params.hosts)) do
      services[host] = url_for(host, released and released[host])
    end
    checks.assert(checks.http(services))
    return "healthy"
  end)

  step("smoke", { description = "The smoke requests answer 2xx on every host",
                  when = function() return params.smoke ~= nil end }, function()
    local count = 0
    for _, host in ipairs(ssh.group(params.hosts)) do
      local base = url_for(host, released and released[host]):match("^(https?://[^/]+)")
      for _, path in ipairs(params.smoke) do
        http.get(base .. path, { timeout = "10s", readonly = true })
        count = count + 1
      end
    end
    return count
  end)
end)
