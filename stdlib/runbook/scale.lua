--- runbook.scale: a host added to a load balancer's pool, or drained from it, one checkpointed step
--- per move, each with an undo, so a failure or a declined gate leaves the pool as it was.
---
---   local scale = require "runbook.scale"
---   local pool = deploy.pool{ lb = "haproxy", socket = "/run/haproxy/admin.sock", backend = "app" }
---   scale.out{ host = "10.0.0.14", server = "web4", address = "10.0.0.14:3000", pool = pool,
---              layout = app, source = "10.0.0.11", health = check, hold = "5m", analysis = a }
---   scale.drain{ host = "10.0.0.14", server = "web4", pool = pool, deadline = "5m", stop = "systemctl stop app" }
local deploy = require "runbook.deploy"
local M = {}

local q = deploy.quote
local seconds = require("runbook.pg").seconds

-- Runs `command` on `host` (in the layout's root when given).
local function on_host(host, command, root, connect)
  local s = ssh.connect(host, connect)
  local ok, r = pcall(s.exec, s, (root and ("cd " .. q(root) .. " && ") or "") .. command)
  s:close()
  if not ok then error(r, 0) end
  return r
end

-- Requests still in flight on `server`: HAProxy's count, else the established connections to
-- `port` on the host itself (nginx does not say).
local function in_flight(opts)
  local n = opts.pool.sessions(opts.server)
  if n ~= nil then return n end
  if not opts.port then return 0 end
  local r = on_host(opts.host, "ss -Htn state established '( sport = :" .. math.tointeger(opts.port) .. " )' | wc -l",
    nil, opts.connect)
  return tonumber(type(r) == "table" and r.stdout or "0") or 0
end

-- Waits until nothing is in flight on the server, at most `deadline` (a duration); returns what
-- was left.
local function wait_drained(opts, deadline)
  local left = in_flight(opts)
  for _ = 1, math.ceil(seconds(deadline) / 0.5) do
    if left == 0 then break end
    log.info("draining", { server = opts.server, in_flight = left })
    sleep("500ms")
    left = in_flight(opts)
  end
  return left
end

--- Scale out: the new host gets the release the pool runs (`from` and `id`, else copied from the
--- `source` host's current release), is health-checked, joins the pool at `weight` (default
--- 10), is watched for `hold` (the analysis, else its health), then takes `full_weight` (default
--- 100). Steps: "release on HOST", "join pool", "watch HOST", "full weight". A failed step's
--- undo chain takes the host out of the pool and stops its service (`stop`, run in its root).
---   opts: { host, server, address, pool, layout, id, from, source, health = fun(host), weight,
---           full_weight, hold, warmup, analysis, stop, connect }
function M.out(opts)
  assert(type(opts) == "table" and opts.host and opts.server and opts.pool and opts.layout and opts.health,
    "scale.out: host, server, pool, layout and health are required")
  assert(opts.from or opts.source, "scale.out: from (with id) or source (a host of the pool) is required")
  local layout, host, pool = opts.layout, opts.host, opts.pool
  local weight, full = opts.weight or 10, opts.full_weight or 100
  local released = step("release on " .. host, {
    description = "The release the pool runs, installed, started and health-checked on the new host",
    undo = function()
      if opts.stop then on_host(host, opts.stop, layout:root(host), opts.connect) end
    end,
  }, function()
    local id, archive = opts.id, nil
    if opts.from then
      assert(id, "scale.out: from needs the release's id")
      archive = deploy.archive(opts.from, id)
    else
      -- The release as the source host has it, tarred there and brought here.
      local src = ssh.connect(opts.source, opts.connect)
      id = id or layout:current(src, opts.source) or error("scale.out: " .. opts.source .. " runs no release", 0)
      local remote = "/tmp/runbook-scale-" .. id .. "-" .. math.random(1, 1e9) .. ".tar.gz"
      src:exec("tar -czf " .. q(remote) .. " -C " .. q(layout:root(opts.source) .. "/releases/" .. id) .. " .", { echo = false })
      archive = (os.getenv("TMPDIR") or "/tmp") .. "/runbook-scale-" .. id .. "-" .. math.random(1, 1e9) .. ".tar.gz"
      src:download(remote, archive)
      src:exec("rm -f " .. q(remote), { echo = false })
      src:close()
    end
    local s = ssh.connect(host, opts.connect)
    layout:install(s, host, id, archive)
    s:close()
    if opts.health(host) == false then error("scale.out: " .. host .. " is not healthy", 0) end
    return { id = id }
  end)
  step("join pool", {
    description = "The new host joins the pool at a small weight",
    undo = function()
      pool.weight(opts.server, 0)
      local left = wait_drained(opts, "30s")
      if left > 0 then log.warn("removing a server with requests in flight", { server = opts.server, in_flight = left }) end
      pool.remove(opts.server)
    end,
  }, function()
    pool.add(opts.server, opts.address or opts.server, weight)
    return pool.servers()[opts.server] or { weight = weight }
  end)
  step("watch " .. host, {
    description = "The new host's numbers (or its health) while it takes a small share",
    when = function() return opts.hold ~= nil end,
  }, function()
    if opts.warmup then sleep(opts.warmup) end
    if opts.analysis then
      local a = {}
      for k, v in pairs(opts.analysis) do a[k] = v end
      a.duration = opts.hold
      local r = metrics.analyze(a)
      return { outcome = r.outcome, checks = r.checks }
    end
    sleep(opts.hold)
    if opts.health(host) == false then error("scale.out: " .. host .. " is not healthy", 0) end
    return { outcome = "healthy" }
  end)
  return step("full weight", {
    description = "The new host takes its full share",
    undo = function() pool.weight(opts.server, weight) end,
  }, function()
    pool.weight(opts.server, full)
    local seen = pool.servers()[opts.server]
    return { id = released and released.id, weight = seen and seen.weight or full }
  end)
end

--- Scale in: the host stops taking new requests (weight 0), the requests in flight finish (at
--- most `deadline`, default 5m; past it the step fails and the weight is put back), it leaves
--- the pool, and its service is stopped (`stop`, run in the layout's root when given). Steps:
--- "drain HOST", "remove HOST", "stop HOST"; each undo puts back what its step changed (`start`
--- restarts the service).
---   opts: { host, server, pool, deadline, port (nginx: where the host serves), stop, start,
---           layout, connect }
function M.drain(opts)
  assert(type(opts) == "table" and opts.host and opts.server and opts.pool, "scale.drain: host, server and pool are required")
  local pool, host = opts.pool, opts.host
  local deadline = opts.deadline or "5m"
  local root = opts.layout and opts.layout:root(host) or nil
  local before = step("drain " .. host, {
    description = "No new requests to the host; the ones in flight finish",
    undo = function(r) pool.weight(opts.server, r and r.weight or 100) end,
  }, function()
    local s = pool.servers()[opts.server] or error("scale.drain: " .. pool.name .. " has no server " .. opts.server, 0)
    -- A retried drain finds weight 0: the weight to put back is the one before the first try.
    local was = s.weight ~= 0 and s.weight or nil
    pool.weight(opts.server, 0)
    local left = wait_drained(opts, deadline)
    if left > 0 then
      pool.weight(opts.server, was or 100)
      error("scale.drain: " .. left .. " request(s) still in flight on " .. opts.server .. " after " .. deadline
        .. "; its weight is back", 0)
    end
    return { weight = was, address = s.address }
  end)
  step("remove " .. host, {
    description = "The host leaves the pool",
    undo = function()
      pool.add(opts.server, before and before.address or opts.server, 0)
    end,
  }, function()
    return pool.remove(opts.server)
  end)
  return step("stop " .. host, {
    description = "The host's service is stopped",
    when = function() return opts.stop ~= nil end,
    undo = function()
      if opts.start then on_host(host, opts.start, root, opts.connect) end
    end,
  }, function()
    on_host(host, opts.stop, root, opts.connect)
    return true
  end)
end

return M
