--- runbook.deploy: releases on hosts over SSH, and the strategies of the deployment guides.
---
--- On each host, under its root:
---   releases/<id>/       one folder per release, uploaded once
---   current -> releases/<id>   the live release, switched atomically (a symlink renamed over)
---   previous             the id `current` pointed at before the last switch (for rollback)
---
---   local deploy = require "runbook.deploy"
---   local app = deploy.layout{ root = "/srv/app", restart = "systemctl restart app" }
---   deploy.canary(app, "web", { id = params.version, from = "build/", health = check })
local M = {}

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- A string quoted for a POSIX shell.
M.quote = q

--- The address of a host spec: "deploy@10.0.0.5:2222" -> "10.0.0.5".
function M.address(host)
  return (host:gsub("^.*@", ""):match("^[^:]+"))
end

-- A release id is a folder name: letters, digits, '.', '_' and '-', not "." or "..".
local function check_id(id)
  if type(id) ~= "string" or not id:match("^[%w_][%w._-]*$") or id == "." or id == ".." then
    error("deploy: a release id is letters, digits, '.', '_' and '-', got " .. tostring(id), 2)
  end
  return id
end

--- Builds the archive of a local release folder once (a .tar.gz is used as it is); returns its
--- path. Every host's upload then sends the same file.
function M.archive(from, id)
  check_id(id)
  if from:match("%.tar%.gz$") or from:match("%.tgz$") then return from end
  local dir = os.getenv("TMPDIR") or "/tmp"
  local path = string.format("%s/runbook-release-%s-%d-%d.tar.gz", dir, id, os.time(), math.random(1, 1e9))
  exec{ "tar", "-czf", path, "-C", from, "." }
  return path
end

local Layout = {}
Layout.__index = Layout

--- A release layout. opts: { root = "/srv/app" or function(host) -> path, restart = shell command
--- run after a switch (in the root; $RELEASE_ROOT and $RELEASE_HOST are set), keep = releases
--- kept (default 5) }.
function M.layout(opts)
  assert(type(opts) == "table" and opts.root, "deploy.layout: root is required")
  return setmetatable({ root_of = opts.root, restart_cmd = opts.restart, keep = opts.keep or 5 }, Layout)
end

function Layout:root(host)
  if type(self.root_of) == "function" then return self.root_of(host) end
  return self.root_of
end

--- Uploads a release (a local folder, tarred, or a .tar.gz) as releases/<id> on the host; an
--- existing complete release of that id is kept (a retried step does not upload twice).
function Layout:upload(s, host, id, from)
  check_id(id)
  local root = self:root(host)
  local dir = root .. "/releases/" .. id
  if s:exec("test -e " .. q(dir .. "/.complete"), { check = false, readonly = true, echo = false }).code == 0 then
    return dir
  end
  local archive = M.archive(from, id)
  local remote = root .. "/releases/.upload-" .. id .. ".tar.gz"
  s:exec("mkdir -p " .. q(root .. "/releases") .. " && rm -rf " .. q(dir))
  s:upload(archive, remote)
  s:exec("mkdir -p " .. q(dir) .. " && tar -xzf " .. q(remote) .. " -C " .. q(dir) .. " && rm -f " .. q(remote)
    .. " && touch " .. q(dir .. "/.complete"))
  return dir
end

--- The release `current` points at, or nil.
function Layout:current(s, host)
  local r = s:exec("readlink " .. q(self:root(host) .. "/current"), { check = false, readonly = true, echo = false })
  if r.code ~= 0 then return nil end
  return (r.stdout:gsub("%s+$", ""):match("([^/]+)$"))
end

--- Points `current` at releases/<id> (atomically) and remembers the release before; returns it.
function Layout:switch(s, host, id)
  check_id(id)
  local root = self:root(host)
  local before = self:current(s, host)
  if before == id then return before end
  s:exec("cd " .. q(root) .. " && test -d " .. q("releases/" .. id) .. " && ln -sfn " .. q("releases/" .. id)
    .. " current.next && mv -T current.next current" .. (before and (" && printf %s " .. q(before) .. " > previous") or ""))
  return before
end

--- Runs the restart command in the root.
function Layout:restart(s, host)
  if not self.restart_cmd then return end
  local root = self:root(host)
  s:exec("cd " .. q(root) .. " && export RELEASE_ROOT=" .. q(root) .. " RELEASE_HOST=" .. q(host) .. " && "
    .. self.restart_cmd)
end

--- Switches `current` back to the release before the last switch and restarts; returns the
--- release now live (nil when there was none before).
function Layout:rollback(s, host)
  local root = self:root(host)
  local r = s:exec("cat " .. q(root .. "/previous"), { check = false, readonly = true, echo = false })
  local previous = r.code == 0 and r.stdout:gsub("%s+$", "") or ""
  if previous == "" then return nil end
  s:exec("cd " .. q(root) .. " && ln -sfn " .. q("releases/" .. previous) .. " current.next && mv -T current.next current && rm -f previous")
  self:restart(s, host)
  return previous
end

--- Removes releases beyond the newest `keep`, never the current one.
function Layout:prune(s, host)
  local root = self:root(host)
  s:exec("cd " .. q(root .. "/releases") .. " && cur=$(readlink ../current | sed 's#.*/##') && ls -1t | grep -v '^\\.' | tail -n +"
    .. (self.keep + 1) .. " | while read r; do [ \"$r\" = \"$cur\" ] || rm -rf \"$r\"; done", { check = false })
end

--- Upload, switch and restart on one host: what every strategy does per host. Returns { from, to }.
function Layout:install(s, host, id, from)
  self:upload(s, host, id, from)
  local before = self:switch(s, host, id)
  self:restart(s, host)
  return { from = before, to = id }
end

-- The hosts of a group name or a list.
local function host_list(hosts)
  if type(hosts) == "string" then return ssh.group(hosts) end
  return hosts
end

-- Every host of `list` that runs release `id` goes back to its release before.
local function roll_back_hosts(layout, list, id, connect)
  for _, host in ipairs(list) do
    local rok, err = pcall(function()
      local s = ssh.connect(host, connect)
      if layout:current(s, host) == id then
        local to = layout:rollback(s, host)
        if to then log.warn("rolled back", { host = host, to = to })
        else log.warn("no release before this one to roll back to", { host = host }) end
      end
      s:close()
    end)
    if not rok then log.error("rollback failed", { host = host, error = tostring(err):match("[^\n]*") }) end
  end
end

-- Runs ssh.rolling with upload, switch and restart per host. When it halts, every host of the
-- list that now runs this release (switched in this attempt or in an earlier one, before a
-- resume) goes back to its release before, and the error is raised again.
local function rollout(layout, hosts, opts, rolling_opts)
  check_id(opts.id)
  assert(opts.from, "deploy: from is required")
  local archive = M.archive(opts.from, opts.id)
  local ok, result = pcall(ssh.rolling, hosts, function(s, host)
    return layout:install(s, host, opts.id, archive)
  end, rolling_opts)
  if ok then return result end
  roll_back_hosts(layout, host_list(hosts), opts.id, opts.connect)
  error(result, 0)
end

--- Rolling: `batch` hosts at a time (default 1), each health-checked; halts past max_failures
--- and rolls the hosts of this attempt back. opts: { id, from, batch, max_failures, health =
--- fun(host), pause, connect }.
function M.rolling(layout, hosts, opts)
  return rollout(layout, hosts, opts, { batch = opts.batch, max_failures = opts.max_failures or 0,
                                        health = opts.health, pause = opts.pause, connect = opts.connect })
end

--- Canary: one host first (opts.canary hosts), its health checked, then the rest in batches; a
--- canary that fails is rolled back and the other hosts are never touched.
function M.canary(layout, hosts, opts)
  return rollout(layout, hosts, opts, { first = opts.canary or 1, batch = opts.batch, max_failures = 0,
                                        health = opts.health, pause = opts.pause, connect = opts.connect })
end

--- Blue/green on each host: the release goes to the idle colour (colors/blue or colors/green, a
--- link to the release), whose service is restarted ($RELEASE_COLOR set) and health-checked with
--- opts.health(host, color); only then does the traffic pointer `live` switch to it. The old
--- colour stays as it was, for `deploy.blue_green_rollback`.
function M.blue_green(layout, hosts, opts)
  assert(opts.from and opts.health, "deploy.blue_green: id, from and health are required")
  local archive = M.archive(opts.from, opts.id)
  return ssh.each(hosts, function(s, host)
    local root = layout:root(host)
    layout:upload(s, host, opts.id, archive)
    local live = s:exec("readlink " .. q(root .. "/live"), { check = false, readonly = true, echo = false })
    local live_color = live.code == 0 and live.stdout:match("(%a+)%s*$") or nil
    local idle = live_color == "blue" and "green" or "blue"
    s:exec("mkdir -p " .. q(root .. "/colors") .. " && ln -sfn " .. q("../releases/" .. opts.id) .. " "
      .. q(root .. "/colors/" .. idle))
    if layout.restart_cmd then
      s:exec("cd " .. q(root) .. " && export RELEASE_ROOT=" .. q(root) .. " RELEASE_HOST=" .. q(host) .. " RELEASE_COLOR=" .. idle
        .. " && " .. layout.restart_cmd)
    end
    local healthy = opts.health(host, idle)
    if healthy == false then error("the " .. idle .. " colour is not healthy; traffic stays on " .. (live_color or "nothing"), 0) end
    s:exec("cd " .. q(root) .. " && ln -sfn " .. q("colors/" .. idle) .. " live.next && mv -T live.next live")
    return { live = idle, previous = live_color }
  end, { max_failures = opts.max_failures or 0, connect = opts.connect })
end

--- Points each host's traffic back at the other colour.
function M.blue_green_rollback(layout, hosts, opts)
  opts = opts or {}
  return ssh.each(hosts, function(s, host)
    local root = layout:root(host)
    local r = s:exec("readlink " .. q(root .. "/live"), { check = false, readonly = true, echo = false })
    local live = r.code == 0 and r.stdout:match("(%a+)%s*$") or nil
    if not live then return nil end
    local other = live == "blue" and "green" or "blue"
    if s:exec("test -e " .. q(root .. "/colors/" .. other), { check = false, readonly = true, echo = false }).code ~= 0 then
      log.warn("no other colour to go back to", { host = host, live = live })
      return live
    end
    s:exec("cd " .. q(root) .. " && ln -sfn " .. q("colors/" .. other) .. " live.next && mv -T live.next live")
    return other
  end, { connect = opts.connect })
end

-- Weights for `p` percent of requests on `nc` canary servers and the rest on `ns` stable ones,
-- within HAProxy's 0..256: canary * nc / (canary * nc + stable * ns) = p / 100.
local function split_weights(p, nc, ns)
  assert(nc >= 1 and ns >= 1, "deploy.split_weights: at least one canary and one stable server")
  if p <= 0 then return 0, 100 end
  if p >= 100 then return 100, 0 end
  local wc, ws = p * ns, (100 - p) * nc
  local scale = math.max(wc, ws) / 256
  if scale > 1 then wc, ws = wc / scale, ws / scale end
  wc, ws = math.max(1, math.floor(wc + 0.5)), math.max(1, math.floor(ws + 0.5))
  -- Weights are whole numbers from 1 to 256: some shares cannot be had with some server counts.
  local share = 100 * wc * nc / (wc * nc + ws * ns)
  if math.abs(share - p) > 1 then
    error(string.format("deploy.split_weights: %s%% cannot be sent to %d canary server(s) beside %d stable one(s) "
      .. "within HAProxy's weights (the nearest is %.1f%%)", p, nc, ns, share), 2)
  end
  return wc, ws
end
M.split_weights = split_weights

-- HAProxy's runtime API: `api(commands, readonly)` sends the commands as one line (HAProxy
-- answers each in turn) with socat on the load balancer: over `opts.ssh` when given, else here.
local function haproxy_api(opts)
  return function(commands, readonly)
    local input = table.concat(commands, "; ") .. "\n"
    local out
    if opts.ssh then
      local s = ssh.connect(opts.ssh, opts.connect)
      local ok, r = pcall(s.exec, s, "socat stdio " .. q("unix-connect:" .. opts.socket), { stdin = input, echo = false, readonly = readonly })
      s:close()
      if not ok then error(r, 0) end
      out = r.stdout
    else
      out = exec{ "socat", "stdio", "unix-connect:" .. opts.socket, stdin = input, echo = false, readonly = readonly }.stdout
    end
    -- (A dry run's placeholder in place of the output: nothing was sent.)
    return type(out) == "string" and out or ""
  end
end

--- A traffic backend for HAProxy: the servers' weights are set through its runtime API (no
--- reload, no dropped connection), with socat on the load balancer: over `ssh` when given (a
--- host of the inventory or "user@host"), else on this machine.
---   deploy.haproxy{ socket = "/run/haproxy/admin.sock", backend = "app",
---                   stable = { "web1", "web2" }, canary = { "web3" }, ssh = "lb1" }
--- Returns a backend for traffic_canary, with `weights()` to read them back.
function M.haproxy(opts)
  assert(type(opts) == "table" and opts.socket and opts.backend and opts.stable and opts.canary,
    "deploy.haproxy: socket, backend, stable and canary are required")
  -- HAProxy's names are letters, digits, '-', '_', '.' and ':'.
  for _, name in ipairs({ opts.backend, table.unpack(opts.stable) }) do
    assert(tostring(name):match("^[%w%._:%-]+$"), "deploy.haproxy: '" .. tostring(name) .. "' is not a backend or server name")
  end
  for _, name in ipairs(opts.canary) do
    assert(tostring(name):match("^[%w%._:%-]+$"), "deploy.haproxy: '" .. tostring(name) .. "' is not a server name")
  end
  assert(#opts.stable >= 1 and #opts.canary >= 1, "deploy.haproxy: at least one stable and one canary server")
  local api = haproxy_api(opts)
  local b = { name = "haproxy " .. opts.backend }
  -- Sets the canary servers to `wc` and the stable ones to `ws`; returns the weights HAProxy
  -- then reports, by server.
  local named = {}
  for _, name in ipairs(opts.stable) do named[name] = true end
  for _, name in ipairs(opts.canary) do named[name] = true end
  local function apply(wc, ws)
    -- Every server is read first: HAProxy goes on after a command it refuses, so a misspelt
    -- canary would otherwise leave the stable servers' weights changed.
    b.weights()
    -- A server of the backend that is neither would take a share of its own.
    local others = {}
    for name, srv in pairs(M.pool { lb = "haproxy", socket = opts.socket, backend = opts.backend, ssh = opts.ssh,
                                    connect = opts.connect }.servers()) do
      if not named[name] and (srv.weight or 0) > 0 then others[#others + 1] = name end
    end
    table.sort(others)
    if #others > 0 then
      error("haproxy " .. opts.backend .. ": " .. table.concat(others, ", ") .. " take(s) requests but are neither canary nor "
        .. "stable servers, so the shares would be wrong: name them, or set their weight to 0", 0)
    end
    local commands = {}
    for _, srv in ipairs(opts.canary) do commands[#commands + 1] = "set weight " .. opts.backend .. "/" .. srv .. " " .. wc end
    for _, srv in ipairs(opts.stable) do commands[#commands + 1] = "set weight " .. opts.backend .. "/" .. srv .. " " .. ws end
    local out = api(commands)
    -- A command that worked answers nothing; one that did not says why ("No such server.").
    if out:match("%S") then error("haproxy " .. opts.backend .. ": " .. out:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""), 0) end
    return b.weights()
  end
  function b.set(p)
    local wc, ws = split_weights(p, #opts.canary, #opts.stable)
    return { canary = wc, stable = ws, seen = apply(wc, ws) }
  end
  b.even_weight = 100
  --- Every server at the same weight (100): the pool as it is between releases.
  function b.even()
    return { canary = 100, stable = 100, seen = apply(100, 100) }
  end
  function b.weights()
    local servers = {}
    for _, srv in ipairs(opts.stable) do servers[#servers + 1] = srv end
    for _, srv in ipairs(opts.canary) do servers[#servers + 1] = srv end
    local commands = {}
    for _, srv in ipairs(servers) do commands[#commands + 1] = "get weight " .. opts.backend .. "/" .. srv end
    local out, weights, i = api(commands, true), {}, 0
    for line in out:gmatch("[^\n]+") do
      local w = line:match("^(%d+) %(initial")
      if not w then error("haproxy " .. opts.backend .. ": " .. line, 0) end
      i = i + 1
      weights[servers[i]] = tonumber(w)
    end
    return weights
  end
  return b
end

local function check_nginx_server(server)
  assert(tostring(server):match("^[%w%.%-_:%[%]]+$"), "deploy.nginx: '" .. tostring(server) .. "' is not a server address")
end

-- An nginx upstream block in a file of its own: `write(servers, what)` writes it whole ({ address,
-- weight } each, weight 0 marked down), checks it with `nginx -t` (putting the file back when
-- refused) and reloads; `read()` returns the servers it has. Over `opts.ssh` when given.
local function nginx_upstream(opts)
  assert(tostring(opts.upstream):match("^[%w_%-]+$"), "deploy.nginx: '" .. tostring(opts.upstream) .. "' is not an upstream name")
  local test_cmd, reload_cmd = opts.test or "nginx -t", opts.reload or "nginx -s reload"
  local function sh(command, input, readonly)
    if opts.ssh then
      local s = ssh.connect(opts.ssh, opts.connect)
      local ok, r = pcall(s.exec, s, command, { stdin = input, check = false, echo = false, readonly = readonly })
      s:close()
      if not ok then error(r, 0) end
      return r
    end
    return exec{ shell = command, stdin = input, check = false, echo = false, readonly = readonly }
  end
  local u = {}
  function u.write(servers, what)
    local lines = { "# Written by runbook (deploy.nginx): " .. what .. ".", "upstream " .. opts.upstream .. " {" }
    for _, server in ipairs(servers) do
      check_nginx_server(server.address)
      lines[#lines + 1] = "  server " .. server.address .. (server.weight == 0 and " down;" or (" weight=" .. server.weight .. ";"))
    end
    lines[#lines + 1] = "}"
    local file, prev = q(opts.file), q(opts.file .. ".runbook-prev")
    local w = sh("if [ -e " .. file .. " ]; then cp -p " .. file .. " " .. prev .. "; fi && cat > " .. file .. ".runbook-next && mv "
      .. file .. ".runbook-next " .. file, table.concat(lines, "\n") .. "\n")
    if type(w) == "table" and w.code ~= 0 then error("nginx " .. opts.upstream .. ": cannot write " .. opts.file .. ": " .. w.stderr, 0) end
    local t = sh(test_cmd)
    if type(t) == "table" and t.code ~= 0 then
      sh("if [ -e " .. prev .. " ]; then mv " .. prev .. " " .. file .. "; fi")
      error("nginx " .. opts.upstream .. ": `" .. test_cmd .. "` refused the new upstream (put back as it was): "
        .. (t.stderr .. t.stdout):gsub("%s+$", ""), 0)
    end
    local r = sh(reload_cmd)
    if type(r) == "table" and r.code ~= 0 then
      error("nginx " .. opts.upstream .. ": `" .. reload_cmd .. "` failed: " .. (r.stderr .. r.stdout):gsub("%s+$", ""), 0)
    end
  end
  function u.read()
    local r = sh("cat " .. q(opts.file), nil, true)
    if type(r) ~= "table" then return {} end
    if r.code ~= 0 then error("nginx " .. opts.upstream .. ": cannot read " .. opts.file .. ": " .. r.stderr, 0) end
    -- Only `server` lines of this upstream's block, comments dropped.
    local servers, inside = {}, false
    for line in r.stdout:gmatch("[^\n]+") do
      line = line:gsub("#.*$", "")
      if line:match("^%s*upstream%s+" .. opts.upstream:gsub("%-", "%%-") .. "%s*{") then
        inside = true
      elseif inside and line:match("^%s*}") then
        inside = false
      elseif inside then
        local address, rest = line:match("^%s*server%s+([^%s;]+)([^;]*);")
        if address then
          local weight = rest:match("%f[%w]down%f[%W]") and 0 or tonumber(rest:match("weight=(%d+)")) or 1
          servers[#servers + 1] = { address = address, weight = weight }
        end
      end
    end
    return servers
  end
  return u
end

--- A traffic backend for nginx: the upstream block is written with weights (a 0% side marked
--- `down`), checked with `nginx -t` and only then reloaded; a config nginx refuses is put back
--- as it was and the error carries nginx's words. Over `ssh` when given, else on this machine.
---   deploy.nginx{ file = "/etc/nginx/conf.d/app-upstream.conf", upstream = "app",
---                 stable = { "10.0.0.5:3000" }, canary = { "10.0.0.9:3000" }, ssh = "lb1",
---                 test = "nginx -t", reload = "nginx -s reload" }
function M.nginx(opts)
  assert(type(opts) == "table" and opts.file and opts.upstream and opts.stable and opts.canary,
    "deploy.nginx: file, upstream, stable and canary are required")
  assert(#opts.stable >= 1 and #opts.canary >= 1, "deploy.nginx: at least one stable and one canary server")
  local upstream = nginx_upstream(opts)
  for _, list in ipairs({ opts.stable, opts.canary }) do
    for _, server in ipairs(list) do check_nginx_server(server) end
  end
  local b = { name = "nginx " .. opts.upstream }
  -- The canary servers at `wc` and the stable ones at `ws` (0: down).
  local named = {}
  for _, server in ipairs(opts.stable) do named[server] = true end
  for _, server in ipairs(opts.canary) do named[server] = true end
  local function apply(wc, ws, what)
    -- The block is written whole: a server in it that is neither would be dropped.
    local others = {}
    for _, s in ipairs(upstream.read()) do
      if not named[s.address] and s.weight > 0 then others[#others + 1] = s.address end
    end
    if #others > 0 then
      error("nginx " .. opts.upstream .. ": " .. table.concat(others, ", ") .. " take(s) requests but are neither canary nor "
        .. "stable servers (the upstream is rewritten whole): name them, or mark them down", 0)
    end
    local servers = {}
    for _, server in ipairs(opts.stable) do servers[#servers + 1] = { address = server, weight = ws } end
    for _, server in ipairs(opts.canary) do servers[#servers + 1] = { address = server, weight = wc } end
    upstream.write(servers, what)
    return { canary = wc, stable = ws }
  end
  function b.set(p)
    local wc, ws = split_weights(p, #opts.canary, #opts.stable)
    return apply(wc, ws, p .. "% of requests on the canary")
  end
  b.even_weight = 1
  --- Every server at the same weight: the pool as it is between releases.
  function b.even()
    return apply(1, 1, "every server at the same weight")
  end
  return b
end

-- Many answers on one line, as an error reads them.
local function squash(out)
  return (out:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""))
end

--- A load balancer's pool, one server at a time (scaling out and in):
---   deploy.pool{ lb = "haproxy", socket = "/run/haproxy/admin.sock", backend = "app", ssh = "lb1" }
---   deploy.pool{ lb = "nginx", file = "/etc/nginx/conf.d/app-upstream.conf", upstream = "app", ssh = "lb1" }
--- servers() -> { [name] = { weight, sessions?, address? } }; add(name, address, weight) (again
--- with the same name only sets its weight); weight(name, w); sessions(name) -> the requests in
--- flight (HAProxy; nil with nginx, which does not say); remove(name) -> whether it was there.
--- For nginx a server's name is its address.
function M.pool(spec)
  assert(type(spec) == "table" and (spec.lb == "haproxy" or spec.lb == "nginx"), "deploy.pool: lb must be haproxy or nginx")
  local p = { lb = spec.lb }
  local function whole(weight)
    if math.type(weight) ~= "integer" or weight < 0 or weight > 256 then
      error("deploy.pool: a weight is a whole number from 0 to 256, got " .. tostring(weight), 3)
    end
    return weight
  end
  if spec.lb == "nginx" then
    assert(spec.file and spec.upstream, "deploy.pool: nginx needs file and upstream")
    local upstream = nginx_upstream(spec)
    p.name = "nginx " .. spec.upstream
    function p.servers()
      local out = {}
      for _, s in ipairs(upstream.read()) do out[s.address] = { weight = s.weight, address = s.address } end
      return out
    end
    local function change(name, weight, what)
      local list, found = upstream.read(), false
      for i = #list, 1, -1 do
        if list[i].address == name then
          found = true
          if weight then list[i].weight = weight else table.remove(list, i) end
        end
      end
      if not found and weight then list[#list + 1] = { address = name, weight = weight } end
      if found or weight then upstream.write(list, what) end
      return found
    end
    function p.add(name, _, weight)
      change(name, whole(weight), "added " .. name)
    end
    function p.weight(name, weight)
      if not p.servers()[name] then error(p.name .. ": no server " .. name, 0) end
      change(name, whole(weight), name .. " at weight " .. weight)
    end
    function p.sessions() return nil end
    function p.remove(name) return change(name, nil, "removed " .. name) end
    return p
  end
  assert(spec.socket and spec.backend, "deploy.pool: haproxy needs socket and backend")
  local api = haproxy_api(spec)
  local b = spec.backend
  p.name = "haproxy " .. b
  local function named(name)
    assert(tostring(name):match("^[%w%._:%-]+$"), "deploy.pool: '" .. tostring(name) .. "' is not a server name")
    return b .. "/" .. name
  end
  function p.servers()
    local out = api({ "show stat" }, true)
    local header, servers = nil, {}
    for line in out:gmatch("[^\n]+") do
      local fields = {}
      for f in ((line:gsub("^# ", "")) .. ","):gmatch("([^,]*),") do fields[#fields + 1] = f end
      if line:sub(1, 2) == "# " then
        header = fields
      elseif header then
        local row = {}
        for i, f in ipairs(fields) do if header[i] then row[header[i]] = f end end
        if row.pxname == b and row.svname ~= "BACKEND" and row.svname ~= "FRONTEND" then
          servers[row.svname] = { weight = tonumber(row.weight), sessions = tonumber(row.scur), status = row.status,
                                  address = row.addr }
        end
      end
    end
    return servers
  end
  function p.add(name, address, weight)
    assert(tostring(address):match("^[%w%._:%-%[%]]+$"), "deploy.pool: '" .. tostring(address) .. "' is not an address")
    local have = p.servers()[name]
    local out
    if have then
      out = api({ "set weight " .. named(name) .. " " .. whole(weight), "enable server " .. named(name) })
    else
      -- A server added at run time starts in maintenance: enabled once it is there.
      out = api({ "add server " .. named(name) .. " " .. address .. " weight " .. whole(weight), "enable server " .. named(name) })
      out = out:gsub("New server registered%.", "")
    end
    if out:match("%S") then error(p.name .. ": adding " .. name .. ": " .. squash(out), 0) end
  end
  function p.weight(name, weight)
    local out = api({ "set weight " .. named(name) .. " " .. whole(weight) })
    if out:match("%S") then error(p.name .. ": " .. name .. ": " .. squash(out), 0) end
  end
  function p.sessions(name)
    local s = p.servers()[name]
    return s and s.sessions or 0
  end
  function p.remove(name)
    if not p.servers()[name] then return false end
    -- Only a server in maintenance without connections can be deleted.
    local out = api({ "disable server " .. named(name), "del server " .. named(name) })
    if not out:match("Server deleted%.") then error(p.name .. ": removing " .. name .. ": " .. squash(out), 0) end
    return true
  end
  return p
end

--- Traffic canary, as the guides describe it (5% -> 25% -> 50% -> 100%, judged by numbers).
--- Each stage is a step of its own ("traffic 5%", ...): the weight is set through `backend`,
--- held for `hold` and, when `analysis` is given, judged by metrics.analyze over that hold. A
--- stage whose analysis fails puts every request back on the stable version at once, then
--- fails its step with the numbers; its undo (for `rollback = "auto"`, a declined gate or a
--- cancel) does the same. A crash mid-rollout resumes at the stage in flight; completed stages
--- never run again. With `analysis.on_no_data = "pause"`, a stage without data asks for an
--- approval (`approve`) before the next one. `warmup` waits after each weight change before the
--- hold begins (a rate over a window needs the new traffic in it).
---   backend: { name = "haproxy app", set = function(percent) ... end } (see the traffic helpers)
---   opts: { stages = {5, 25, 50, 100}, hold = "5m", warmup = "1m", analysis = { prometheus, queries, checks, interval, on_no_data } }
--- Call it from the runbook's top level (it declares steps); returns the last stage's result.
function M.traffic_canary(backend, opts)
  opts = opts or {}
  assert(type(backend) == "table" and type(backend.set) == "function",
    "deploy.traffic_canary: backend must be a table with set = function(percent)")
  local stages = opts.stages or { 5, 25, 50, 100 }
  if #stages == 0 then error("deploy.traffic_canary: stages is empty", 2) end
  local last = 0
  for i, p in ipairs(stages) do
    if type(p) ~= "number" or p ~= p or p <= last or p > 100 then
      error("deploy.traffic_canary: stages must rise from above 0 to at most 100 (stage " .. i .. " is " .. tostring(p) .. ")", 2)
    end
    last = p
  end
  if opts.analysis and not opts.hold then
    error("deploy.traffic_canary: an analysis needs a hold (how long each stage is watched)", 2)
  end
  for _, key in ipairs({ "duration", "raise" }) do
    if opts.analysis and opts.analysis[key] ~= nil then
      error("deploy.traffic_canary: analysis." .. key .. " is set by the canary (the hold; a failed stage raises)", 2)
    end
  end
  local name = backend.name or "traffic"
  local prefix = opts.name and (opts.name .. " ") or ""
  local function to_stable()
    backend.set(0)
    log.warn("traffic back on the stable version", { backend = name })
  end
  local result
  for _, p in ipairs(stages) do
    result = step(prefix .. "traffic " .. p .. "%", { undo = to_stable }, function()
      -- Whatever stops this stage (bad numbers, no data, Prometheus down, the weight change
      -- itself), traffic goes back to the stable version before the step fails: the undo
      -- belongs to completed steps only.
      local ok, r = pcall(function()
        local set = backend.set(p)
        local weights = type(set) == "table" and set or nil
        log.info("canary at " .. p .. "% of traffic", { backend = name })
        if p == 100 or not opts.hold then return { percent = p, weights = weights } end
        -- The new weights take a moment to show in the numbers (a rate over a window).
        if opts.warmup then sleep(opts.warmup) end
        if not opts.analysis then
          sleep(opts.hold)
          return { percent = p, weights = weights }
        end
        local a = {}
        for k, v in pairs(opts.analysis) do a[k] = v end
        a.duration = opts.hold
        local r = metrics.analyze(a)
        return { percent = p, weights = weights, outcome = r.outcome, checks = r.checks }
      end)
      if ok then return r end
      local back, why = pcall(to_stable)
      local message = "the canary failed at " .. p .. "% of traffic: " .. tostring(r):gsub("^runtime error: ", "")
      if not back then message = message .. "; and putting traffic back on the stable version failed too: " .. tostring(why) end
      error(message, 0)
    end)
    -- Only with on_no_data = "pause": a stage without data asks before the canary goes on.
    if result and result.outcome == "no_data" then
      approve("The canary's analysis had no data at " .. p .. "% of traffic. Go on?")
    end
  end
  return result
end

--- Waits until `server` of `pool` has no request in flight, at most `deadline` (a duration);
--- returns how many were left. A pool that cannot say (nginx) waits `settle` (default 2s)
--- instead: its reload lets old workers finish what they have.
function M.wait_drained(pool, server, deadline, settle)
  local left = pool.sessions(server)
  if left == nil then
    sleep(settle or "2s")
    return 0
  end
  for _ = 1, math.ceil(require("runbook.pg").seconds(deadline or "30s") / 0.5) do
    if left == 0 then break end
    log.info("draining", { server = server, in_flight = left })
    sleep("500ms")
    left = pool.sessions(server) or 0
  end
  return left
end

--- A release judged by live traffic (the guides' canary), in three kinds of step:
---   "canary release": the canary hosts leave the pool (weight 0, their requests in flight
---     finished), get the release and are health-checked;
---   "traffic 5%" ... : the traffic canary's stages below 100, each held and judged by the
---     analysis (`deploy.traffic_canary`);
---   "promote" (the final 100): the other hosts, one at a time, leave the pool, get the release,
---     are health-checked and rejoin it, so capacity never drops by more than one host; then
---     every server is at the same weight.
--- A failure anywhere puts traffic on the stable version first. Each step's undo takes its hosts
--- back one at a time the same way (out of the pool, back to their release, health-checked,
--- back in), and leaves a host that is not healthy out of the pool, failing the rollback.
---   opts: { id, from, health = fun(host), canary = { hosts }, backend (with set and even),
---           pool (deploy.pool of the same load balancer), server = fun(host) -> its name there,
---           stages (the last 100), hold, warmup, analysis, drain (deadline, default 30s),
---           connect, name }
--- Call it from the runbook's top level (it declares steps).
function M.traffic_rollout(layout, hosts, opts)
  check_id(opts.id)
  assert(opts.from, "deploy.traffic_rollout: from is required")
  local backend, pool = opts.backend, opts.pool
  if type(backend) ~= "table" or type(backend.set) ~= "function" or type(backend.even) ~= "function" then
    error("deploy.traffic_rollout: backend must have set(percent) and even() (deploy.haproxy and deploy.nginx do)", 2)
  end
  if type(pool) ~= "table" or type(opts.server) ~= "function" then
    error("deploy.traffic_rollout: pool (deploy.pool) and server = function(host) are required (hosts leave the pool one at a time)", 2)
  end
  local all, canary, is_canary, rest = host_list(hosts), opts.canary or {}, {}, {}
  for _, h in ipairs(canary) do is_canary[h] = true end
  for _, h in ipairs(all) do if not is_canary[h] then rest[#rest + 1] = h end end
  if #canary == 0 or #rest == 0 or #canary + #rest ~= #all then
    error("deploy.traffic_rollout: the canary hosts must be some, not all, of the " .. #all .. " host(s)", 2)
  end
  local stages = opts.stages or { 5, 25, 50, 100 }
  if #stages < 2 or stages[#stages] ~= 100 then
    error("deploy.traffic_rollout: stages end with 100 (the promotion), after at least one share to judge", 2)
  end
  local shares = {}
  for i = 1, #stages - 1 do shares[i] = stages[i] end
  local prefix = opts.name and (opts.name .. " ") or ""
  local archive_of = function() return M.archive(opts.from, opts.id) end

  -- One host out of the pool, changed by `change(s)`, health-checked, back in at `weight`.
  local function cycle(host, weight, change)
    local server = opts.server(host)
    pool.weight(server, 0)
    local left = M.wait_drained(pool, server, opts.drain)
    if left > 0 then log.warn("requests still in flight; going on", { server = server, in_flight = left }) end
    local s = ssh.connect(host, opts.connect)
    local ok, err = pcall(change, s)
    s:close()
    if not ok then error(err, 0) end
    if opts.health and opts.health(host) == false then error(host .. " is not healthy; it stays out of the pool", 0) end
    pool.weight(server, weight)
  end
  -- Every host of `list` on this release goes back to its release before, one at a time.
  local function back(list)
    for _, host in ipairs(list) do
      local s = ssh.connect(host, opts.connect)
      local on_it = layout:current(s, host) == opts.id
      s:close()
      if on_it then
        cycle(host, backend.even_weight or 1, function(session)
          local to = layout:rollback(session, host)
          log.warn("rolled back", { host = host, to = to or "nothing before" })
        end)
      end
    end
  end

  step(prefix .. "canary release", {
    description = "The canary hosts leave the pool, get the release and are health-checked",
    undo = function()
      back(canary)
      backend.even()
    end,
  }, function()
    backend.set(0)
    for _, host in ipairs(canary) do
      local left = M.wait_drained(pool, opts.server(host), opts.drain)
      if left > 0 then log.warn("requests still in flight; going on", { server = opts.server(host), in_flight = left }) end
    end
    local archive = archive_of()
    local ok, err = pcall(function()
      for _, host in ipairs(canary) do
        local s = ssh.connect(host, opts.connect)
        local iok, ierr = pcall(layout.install, layout, s, host, opts.id, archive)
        s:close()
        if not iok then error(ierr, 0) end
        if opts.health and opts.health(host) == false then error(host .. " is not healthy", 0) end
      end
    end)
    if not ok then
      -- Back to their release, healthy, then into the pool again.
      local bok, why = pcall(function() back(canary); backend.even() end)
      if not bok then log.error("the canaries could not be put back", { error = tostring(why) }) end
      error(err, 0)
    end
    return canary
  end)
  M.traffic_canary(backend, { stages = shares, hold = opts.hold, warmup = opts.warmup, analysis = opts.analysis,
                              name = opts.name })
  return step(prefix .. "promote", {
    description = "The other hosts, one at a time: out of the pool, the release, health-checked, back in; then even",
    undo = function() back(rest) end,
  }, function()
    local archive = archive_of()
    for _, host in ipairs(rest) do
      local ok, err = pcall(cycle, host, backend.even_weight or 1, function(s)
        layout:install(s, host, opts.id, archive)
      end)
      if not ok then
        -- This attempt's hosts go back; the stages' undo then moves traffic off the canaries.
        local bok, why = pcall(back, rest)
        if not bok then log.error("putting the other hosts back failed", { error = tostring(why) }) end
        error(err, 0)
      end
    end
    return backend.even()
  end)
end


--- The params of a load balancer and of the numbers that judge a stage, shared by the runbooks
--- that move traffic (deploy.lua, scale_out.lua, scale_in.lua): returns `own` with them added.
--- traffic_backend, traffic_pool and traffic_analysis read them back.
function M.with_traffic_params(own)
  local shared = {
    lb = { type = "enum", choices = { "haproxy", "nginx" }, description = "the load balancer in front of the hosts" },
    lb_host = { type = "string", description = "the load balancer over SSH (an inventory host or user@host); else this machine" },
    lb_server = { type = "string", default = "{host}:3000",
                  description = "each host as the load balancer names it: HAProxy's server name or nginx's address ({host})" },
    lb_address = { type = "string", default = "{host}:3000", description = "HAProxy: the address of a server added to the pool" },
    haproxy_socket = { type = "string", default = "/run/haproxy/admin.sock", description = "HAProxy's runtime API (level admin)" },
    lb_backend = { type = "string", default = "app", description = "HAProxy's backend or nginx's upstream" },
    nginx_file = { type = "string", default = "/etc/nginx/conf.d/app-upstream.conf",
                   description = "the file holding nginx's upstream block, rewritten whole" },
    nginx_test = { type = "string", default = "nginx -t" },
    nginx_reload = { type = "string", default = "nginx -s reload" },
    hold = { type = "duration", default = "10m",
             description = "how long a stage (a share of the traffic) is watched; longer than the checks' `for`" },
    warmup = { type = "duration", default = "90s",
               description = "after each weight change, before the watch begins: the queries' rate window and two scrapes" },
    prometheus = { type = "string", env = "PROMETHEUS_URL",
                   description = "judge stages by Prometheus (else by the judged hosts' health endpoint)" },
    prometheus_token = { type = "secret", env = "PROMETHEUS_TOKEN", description = "a bearer token for Prometheus" },
    error_rate_query = {
      type = "string",
      default = '(sum(rate(http_requests_total{instance=~"({canary}):.*",status=~"5.."}[1m])) or vector(0))'
        .. ' / sum(rate(http_requests_total{instance=~"({canary}):.*"}[1m]))',
      description = "PromQL: the judged hosts' error ratio ({canary}: their addresses as a regex)",
    },
    latency_query = {
      type = "string",
      default = 'histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{instance=~"({canary}):.*"}[1m])))',
      description = "PromQL: the judged hosts' 95th percentile latency in seconds",
    },
    checks = { type = "list", default = { "error_rate < 5% for 5m", "p95_latency < 2s for 2m" },
               description = "the rules a stage must keep (the guide's alert rules); names: error_rate, p95_latency" },
    interval = { type = "duration", default = "15s", description = "between two samples of the checks" },
    on_no_data = { type = "enum", choices = { "fail", "pause", "continue" }, default = "fail",
                   description = "a stage without numbers: fails, asks for an approval, or goes on" },
  }
  for k, v in pairs(shared) do
    if own[k] == nil then own[k] = v end
  end
  return own
end

--- `template` with {host} replaced by the host's address ("http://{host}:3000/health").
function M.at_host(template, host)
  return (template:gsub("{host}", function() return M.address(host) end))
end

--- A host as the load balancer of the traffic params names it (lb_server, {host} its address).
function M.lb_server(params, host)
  return M.at_host(params.lb_server, host)
end

-- The load balancer over SSH, or nil for this machine (an empty lb_host, e.g. `-p lb_host=`
-- over a params file's, is this machine).
local function lb_host(params)
  return params.lb_host ~= "" and params.lb_host or nil
end

--- The traffic backend of the traffic params, for canary servers and stable ones.
function M.traffic_backend(params, canary, stable)
  if params.lb == "haproxy" then
    return M.haproxy { socket = params.haproxy_socket, backend = params.lb_backend, ssh = lb_host(params),
                       canary = canary, stable = stable }
  elseif params.lb == "nginx" then
    return M.nginx { file = params.nginx_file, upstream = params.lb_backend, ssh = lb_host(params), canary = canary,
                     stable = stable, test = params.nginx_test, reload = params.nginx_reload }
  end
  error("lb is required: haproxy or nginx, the load balancer that moves the requests", 0)
end

--- The pool of the traffic params (deploy.pool).
function M.traffic_pool(params)
  if not params.lb then error("lb is required: haproxy or nginx, the load balancer of the pool", 0) end
  return M.pool { lb = params.lb, ssh = lb_host(params), socket = params.haproxy_socket, backend = params.lb_backend,
                  file = params.nginx_file, upstream = params.lb_backend, test = params.nginx_test,
                  reload = params.nginx_reload }
end

--- The analysis of the traffic params for the judged hosts: Prometheus' error ratio and latency
--- of those hosts when `prometheus` is set, else the share of them whose `healthy(host)` is false.
function M.traffic_analysis(params, hosts, healthy)
  local analysis = { checks = params.checks, interval = params.interval, on_no_data = params.on_no_data }
  if params.prometheus then
    local addresses = {}
    for _, host in ipairs(hosts) do addresses[#addresses + 1] = (M.address(host):gsub("%.", "\\\\.")) end
    local pattern = table.concat(addresses, "|")
    analysis.prometheus = metrics.prometheus(params.prometheus, { token = params.prometheus_token })
    analysis.queries = {
      error_rate = (params.error_rate_query:gsub("{canary}", function() return pattern end)),
      p95_latency = (params.latency_query:gsub("{canary}", function() return pattern end)),
    }
  else
    -- (the number of judged hosts whose health endpoint does not answer 2xx)
    analysis.checks = { "unhealthy < 1" }
    analysis.queries = { unhealthy = function()
      local bad = 0
      for _, host in ipairs(hosts) do
        if not healthy(host) then bad = bad + 1 end
      end
      return bad
    end }
  end
  return analysis
end

return M
