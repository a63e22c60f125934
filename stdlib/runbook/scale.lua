--- runbook.scale: a host added to a load balancer's pool, or drained from it, one checkpointed step
--- per move, each with an undo, so a failure or a declined gate leaves the pool as it was.
---
---   local scale = require "runbook.scale"
---   local pool = deploy.pool{ lb = "haproxy", socket = "/run/haproxy/admin.sock", backend = "app" }
---   scale.out{ host = "10.0.0.14", server = "web4", address = "10.0.0.14:3000", pool = pool,
---              layout = app, source = "10.0.0.11", health = check, hold = "10m", analysis = a }
---   scale.drain{ host = "10.0.0.14", server = "web4", pool = pool, deadline = "5m",
---                stop = "systemctl stop app", start = "systemctl start app", health = check }
local deploy = require "runbook.deploy"
local M = {}

local q = deploy.quote

-- Runs `command` on `host` (in `root` when given).
local function on_host(host, command, root, connect)
  local s = ssh.connect(host, connect)
  local ok, r = pcall(s.exec, s, (root and ("cd " .. q(root) .. " && ") or "") .. command)
  s:close()
  if not ok then error(r, 0) end
  return r
end

-- The pool's servers other than `server` that take requests: count, total weight, the largest.
local function peers(pool, server)
  local n, total, top = 0, 0, 0
  for name, s in pairs(pool.servers()) do
    local up = s.status == nil or not (s.status:match("^DOWN") or s.status:match("^MAINT"))
    if name ~= server and (s.weight or 0) > 0 and up then
      n, total, top = n + 1, total + s.weight, math.max(top, s.weight)
    end
  end
  return { servers = n, total = total, weight = top }
end

-- Waits until nothing is in flight on the server, at most `deadline`: the pool's count, else
-- (nginx does not say) the established connections to `port` on the host itself, else the
-- pool's settle time.
local function wait_drained(opts, deadline)
  if opts.pool.sessions(opts.server) ~= nil or not opts.port then
    return deploy.wait_drained(opts.pool, opts.server, deadline)
  end
  local port = math.tointeger(opts.port) or error("scale: port must be a whole number, got " .. tostring(opts.port), 0)
  local function count()
    local r = on_host(opts.host, "ss -Htn state established '( sport = :" .. port .. " )' | wc -l", nil, opts.connect)
    return tonumber(type(r) == "table" and r.stdout or "0") or 0
  end
  local left = count()
  for _ = 1, math.ceil(require("runbook.pg").seconds(deadline) / 0.5) do
    if left == 0 then break end
    log.info("draining", { server = opts.server, connections = left })
    sleep("500ms")
    left = count()
  end
  return left
end

--- Scale out: the new host gets the release the pool runs (`from` and `id`, else copied from the
--- `source` host's current release), is health-checked, joins the pool with `share` percent of
--- the requests (default 10; the nearest whole weight beside the others'), is watched for `hold`
--- (the analysis, else its health), then takes the weight of its peers. Steps: "release on
--- HOST" (refused when the server is already in the pool), "join pool", "watch HOST", "full
--- weight". A failed step's undo chain takes the host out of the pool and stops its service
--- (`stop`, run in its root). With `analysis.on_no_data = "pause"`, a watch without data asks
--- for an approval before the full weight.
---   opts: { host, server, address, pool, layout, id, from, source, health = fun(host), share,
---           hold, warmup, analysis, stop, port, connect }
function M.out(opts)
  assert(type(opts) == "table" and opts.host and opts.server and opts.pool and opts.layout and opts.health,
    "scale.out: host, server, pool, layout and health are required")
  assert(opts.from or opts.source, "scale.out: from (with id) or source (a host of the pool) is required")
  local share = opts.share or 10
  assert(type(share) == "number" and share > 0 and share < 100, "scale.out: share is a percentage above 0 and below 100")
  local layout, host, pool = opts.layout, opts.host, opts.pool
  local released = step("release on " .. host, {
    description = "The release the pool runs, installed, started and health-checked on the new host",
    undo = function()
      if opts.stop then on_host(host, opts.stop, layout:root(host), opts.connect) end
    end,
  }, function()
    if pool.servers()[opts.server] then
      error("scale.out: " .. opts.server .. " is in " .. pool.name .. " already; scale in first, or pick another host", 0)
    end
    local p = peers(pool, opts.server)
    if p.servers == 0 then error("scale.out: no server of " .. pool.name .. " takes requests to compare the new one with", 0) end
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
    -- The weights to join with: `share` of the requests beside the peers, then theirs.
    local small = math.floor(share / (100 - share) * p.total + 0.5)
    small = math.max(1, math.min(p.weight, small))
    return { id = id, weight = small, full_weight = p.weight, share = 100 * small / (p.total + small) }
  end)
  step("join pool", {
    description = "The new host joins the pool with a small share of the requests",
    undo = function()
      -- Gone already: an undo cut off after it removed the server (a crash) is run again.
      if not pool.servers()[opts.server] then return end
      pool.weight(opts.server, 0)
      local left = wait_drained(opts, "30s")
      if left > 0 then log.warn("removing a server with requests in flight", { server = opts.server, in_flight = left }) end
      pool.remove(opts.server)
    end,
  }, function()
    pool.add(opts.server, opts.address or opts.server, released.weight)
    log.info("joined the pool", { server = opts.server, weight = released.weight,
                                  share = string.format("%.1f%%", released.share) })
    return pool.servers()[opts.server] or { weight = released.weight }
  end)
  local watched = step("watch " .. host, {
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
  if watched and watched.outcome == "no_data" then
    approve("The watch of " .. host .. " had no data. Give it its full weight?")
  end
  return step("full weight", {
    description = "The new host takes the weight of its peers",
    undo = function() pool.weight(opts.server, released.weight) end,
  }, function()
    pool.weight(opts.server, released.full_weight)
    local seen = pool.servers()[opts.server]
    return { id = released.id, weight = seen and seen.weight or released.full_weight }
  end)
end

--- Scale in: the host's weight is noted, then it stops taking new requests (weight 0), the
--- requests in flight finish (at most `deadline`, default 5m; past it the weight is put back
--- and the step fails), it leaves the pool, and its service is stopped (`stop`, run in the
--- layout's root). Refused when no other server of the pool takes requests. Steps: "drain
--- HOST", "remove HOST", "stop HOST"; each undo puts back what its step changed (`start`, which
--- `stop` needs, restarts the service; `health` is checked before the host takes requests again,
--- and a host that fails it stays out with the rollback failed).
---   opts: { host, server, pool, deadline, port (nginx: where the host serves, its connections
---           counted there), health = fun(host), stop, start, layout, connect }
function M.drain(opts)
  assert(type(opts) == "table" and opts.host and opts.server and opts.pool, "scale.drain: host, server and pool are required")
  assert(not opts.stop or opts.start, "scale.drain: stop needs start, so a rollback can bring the host back")
  local pool, host = opts.pool, opts.host
  local deadline = opts.deadline or "5m"
  local root = opts.layout and opts.layout:root(host) or nil
  local noted = step("note " .. host, { description = "The host's weight and address, to put back" }, function()
    local s = pool.servers()[opts.server] or error("scale.drain: " .. pool.name .. " has no server " .. opts.server, 0)
    if peers(pool, opts.server).servers == 0 then
      error("scale.drain: no other server of " .. pool.name .. " takes requests; draining " .. opts.server
        .. " would leave none", 0)
    end
    return { weight = s.weight ~= 0 and s.weight or nil, address = s.address }
  end)
  local weight = noted.weight or 1
  local function healthy_again()
    if opts.health and opts.health(host) == false then
      error("scale.drain: " .. host .. " is not healthy; it stays out of the pool (weight 0)", 0)
    end
  end
  step("drain " .. host, {
    description = "No new requests to the host; the ones in flight finish",
    undo = function()
      healthy_again()
      pool.weight(opts.server, weight)
    end,
  }, function()
    pool.weight(opts.server, 0)
    local left = wait_drained(opts, deadline)
    if left > 0 then
      pool.weight(opts.server, weight)
      error("scale.drain: " .. left .. " request(s) still in flight on " .. opts.server .. " after " .. deadline
        .. "; its weight is back", 0)
    end
    return { weight = weight }
  end)
  step("remove " .. host, {
    description = "The host leaves the pool",
    undo = function() pool.add(opts.server, noted.address or opts.server, 0) end,
  }, function()
    return pool.remove(opts.server)
  end)
  return step("stop " .. host, {
    description = "The host's service is stopped",
    when = function() return opts.stop ~= nil end,
    undo = function() on_host(host, opts.start, root, opts.connect) end,
  }, function()
    on_host(host, opts.stop, root, opts.connect)
    return true
  end)
end

return M
