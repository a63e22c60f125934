-- The guides' vertical-scaling triggers ("Scale up when: CPU > 80% sustained, memory > 90%,
-- connection pool exhausted, query response time > 1s"): measured on the hosts (over SSH) and the
-- database, reported, and posted to the webhook when one triggers:
--   runbook run runbooks/scaling_check.lua -p hosts=app -p webhook=https://hooks.example.com/...
-- Given a spare host, a trigger that fired hands over to scale out (runbooks/scale_out.lua's
-- steps) behind an approval; given a host to retire and an idle threshold, hosts all under it
-- hand over to scale in (scale_in.lua's steps), behind an approval too.
local deploy = require "runbook.deploy"

runbook {
  name = "scaling_check",
  description = "Measure the scale-up triggers (CPU, memory, connections, query time) and report which fired",
  params = deploy.with_traffic_params {
    hosts = { type = "list", description = "host specs, or one inventory group of runbook.toml" },
    database_url = { type = "secret", env = "DATABASE_URL", description = "the PostgreSQL database (checked when given)" },
    cpu_percent = { type = "number", default = 80, min = 1, max = 100, description = "CPU busy over this in every sample" },
    cpu_samples = { type = "integer", default = 3, min = 1, max = 60, description = "samples, a second apart (sustained)" },
    memory_percent = { type = "number", default = 90, min = 1, max = 100 },
    connections_percent = { type = "number", default = 90, min = 1, max = 100,
                            description = "connections in use, of max_connections" },
    slow_query = { type = "number", default = 1, description = "seconds: an active query running longer triggers" },
    webhook = { type = "string", env = "RUNBOOK_NOTIFY_URL", description = "posted when a trigger fires" },
    -- Acting on the findings (each behind an approval), with the load balancer of lb*:
    spare = { type = "string", description = "a host to add to the pool when a trigger fires (as scale_out.lua does)" },
    retire = { type = "string", description = "a host to drain from the pool when every host is idle (as scale_in.lua does)" },
    idle_percent = { type = "number", min = 0, max = 100, description = "CPU under this in every sample of every host: idle" },
    root = { type = "string", default = "/srv/app", description = "release root on each host ({host} is its address)" },
    restart = { type = "string", description = "spare: run in the root after the release is installed" },
    stop = { type = "string", description = "stops a host's service (run in the root)" },
    start = { type = "string", description = "retire: starts it again when a rollback puts the host back (stop needs it)" },
    health_url = { type = "string", description = "spare: each host's health URL, {host} its address" },
    deadline = { type = "duration", default = "5m", description = "retire: how long requests in flight may take" },
    port = { type = "integer", default = 3000, description = "retire with nginx: the port the host serves on" },
  },
  lock = "deploy",
  rollback = "auto",
}

local notify = require "runbook.notify"
local scale = require "runbook.scale"

-- CPU busy percent between two readings of /proc/stat's first line.
local function cpu_busy(a, b)
  local function parse(line)
    local n = {}
    for v in line:gmatch("%d+") do n[#n + 1] = tonumber(v) end
    local idle = (n[4] or 0) + (n[5] or 0)
    local total = 0
    for _, v in ipairs(n) do total = total + v end
    return idle, total
  end
  local i1, t1 = parse(a)
  local i2, t2 = parse(b)
  if t2 <= t1 then return 0 end
  return 100 * (1 - (i2 - i1) / (t2 - t1))
end

local hosts = params.hosts or {}
if #hosts == 1 and not hosts[1]:find("[.:@]") then hosts = hosts[1] end -- an inventory group

local host_load = step("hosts", { description = "CPU (sampled a second apart) and memory of each host",
                                  when = function() return type(hosts) == "string" or #hosts > 0 end }, function()
  local out = ssh.each(hosts, function(s)
    local samples = {}
    local prev = s:exec("head -1 /proc/stat", { readonly = true, echo = false }).stdout
    for _ = 1, params.cpu_samples do
      sleep("1s")
      local cur = s:exec("head -1 /proc/stat", { readonly = true, echo = false }).stdout
      samples[#samples + 1] = math.floor(cpu_busy(prev, cur) * 10 + 0.5) / 10
      prev = cur
    end
    local mem = s:exec("cat /proc/meminfo", { readonly = true, echo = false }).stdout
    local total = tonumber(mem:match("MemTotal:%s+(%d+)"))
    local available = tonumber(mem:match("MemAvailable:%s+(%d+)"))
    return { cpu = samples, memory = math.floor((1 - available / total) * 1000 + 0.5) / 10 }
  end)
  local result = {}
  for host, o in pairs(out) do
    if not o.ok then fail("host " .. host .. ": " .. tostring(o.error)) end
    result[host] = o.result
  end
  return result
end)

local db_load = step("database", { description = "Connections against max_connections, the longest active query",
                                   when = function() return params.database_url ~= nil end }, function()
  local conn = db.connect(params.database_url)
  local c = require("runbook.pg").connections(conn)
  local longest = conn:scalar([[select coalesce(max(extract(epoch from now() - query_start)), 0)::float8
                                from pg_stat_activity where state = 'active' and pid <> pg_backend_pid()]])
  return { connections = c.total, max_connections = c.max, connections_percent = c.used * 100, longest_query = longest }
end)

local findings = step("triggers", { description = "Which scale-up triggers fired; posted to the webhook" }, function()
  local fired = {}
  local idle = params.idle_percent ~= nil and host_load ~= nil and next(host_load) ~= nil
  for host, h in pairs(host_load or {}) do
    for _, v in ipairs(h.cpu) do if v >= (params.idle_percent or 0) then idle = false end end
    local sustained = #h.cpu > 0
    for _, v in ipairs(h.cpu) do if v <= params.cpu_percent then sustained = false end end
    if sustained then fired[#fired + 1] = string.format("%s: CPU over %g%% in %d samples", host, params.cpu_percent, #h.cpu) end
    if h.memory > params.memory_percent then
      fired[#fired + 1] = string.format("%s: memory %.1f%% used", host, h.memory)
    end
  end
  if db_load then
    if db_load.connections_percent >= params.connections_percent then
      fired[#fired + 1] = string.format("database: %d of %d connections in use", db_load.connections, db_load.max_connections)
    end
    if db_load.longest_query > params.slow_query then
      fired[#fired + 1] = string.format("database: a query has been running %.1fs", db_load.longest_query)
    end
  end
  table.sort(fired)
  if #fired > 0 then
    log.warn("scale-up triggers fired", { triggers = table.concat(fired, "; ") })
    if params.webhook then
      notify.post(params.webhook, "scale-up triggers fired: " .. table.concat(fired, "; "),
        { status = "triggered", triggers = fired })
    end
  end
  return { fired = fired, idle = idle or nil }
end)

-- Acting on the findings, each behind an approval (the steps are scale_out.lua's and scale_in.lua's).
local function root(host) return deploy.at_host(params.root, host) end
if params.spare and findings and #findings.fired > 0 then
  if not params.health_url then fail("spare needs health_url: the new host is health-checked before it takes traffic") end
  local function url_for(host) return deploy.at_host(params.health_url, host) end
  local source = (type(hosts) == "string" and ssh.group(hosts) or hosts)[1]
  approve("Scale-up triggers fired: " .. table.concat(findings.fired, "; ") .. ". Add " .. params.spare .. " to the pool?")
  scale.out {
    host = params.spare,
    server = deploy.lb_server(params, params.spare),
    address = deploy.at_host(params.lb_address, params.spare),
    pool = deploy.traffic_pool(params),
    layout = deploy.layout { root = root, restart = params.restart },
    source = source,
    health = function(host) http.wait_healthy(url_for(host), { timeout = "1m", interval = "500ms", attempt_timeout = "5s" }) end,
    hold = params.hold,
    warmup = params.warmup,
    analysis = deploy.traffic_analysis(params, { params.spare }, function(host)
      return pcall(http.get, url_for(host), { timeout = "5s", readonly = true })
    end),
    stop = params.stop,
  }
elseif params.retire and findings and findings.idle then
  if params.stop and not params.start then fail("stop needs start: a rollback must be able to bring the host back") end
  approve("Every host stayed under " .. params.idle_percent .. "% CPU. Drain " .. params.retire .. " from the pool?")
  scale.drain {
    host = params.retire,
    server = deploy.lb_server(params, params.retire),
    pool = deploy.traffic_pool(params),
    deadline = params.deadline,
    port = params.port,
    layout = deploy.layout { root = root },
    health = params.health_url and function(host)
      http.wait_healthy(deploy.at_host(params.health_url, host),
        { timeout = "1m", interval = "500ms", attempt_timeout = "5s" })
    end,
    stop = params.stop,
    start = params.start,
  }
end
