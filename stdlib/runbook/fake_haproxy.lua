--- runbook.fake_haproxy: HAProxy's runtime API as a fake for `runbook test`, so a runbook that
--- moves traffic (deploy's traffic_canary, scale out and in, deploy.pool) is tested against the
--- pool it would see: servers added, weighted, enabled, disabled and deleted as HAProxy does,
--- `show stat` read back, requests in flight that finish once a server takes no new ones.
---   local haproxy = require "runbook.fake_haproxy"
---   local lb = haproxy.new{ backend = "app", servers = { ["web-1:3000"] = 100, ["web-2:3000"] = { weight = 100, scur = 3 } } }
---   run("scale_in.lua", { params = {...}, fakes = { exec = { lb.exec() } } })  -- socat on this machine
---   run(..., { fakes = { ssh = { lb.ssh("lb-1") } } })                          -- socat over ssh on lb-1
--- The servers live in the fake's world (`state`): kept across a crash and its resume, fresh
--- for each pass of a crash proof.
local M = {}

local HEADER = "# pxname,svname,scur,status,weight,addr\n"

local function copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = type(v) == "table" and copy(v) or v end
  return out
end

--- opts: { backend = "app", socket = "/run/haproxy/admin.sock", servers = { [name] = weight |
--- { weight, addr, status = "UP", scur = requests in flight } } }
function M.new(opts)
  assert(type(opts) == "table" and opts.backend and opts.servers, "fake_haproxy.new: backend and servers are required")
  local socket = opts.socket or "/run/haproxy/admin.sock"
  local b = opts.backend
  local initial = {}
  for name, s in pairs(opts.servers) do
    if type(s) == "number" then s = { weight = s } end
    initial[name] = { weight = s.weight or 1, addr = s.addr or name, status = s.status or "UP", scur = s.scur or 0 }
  end

  local function command(servers, line)
    local verb, rest = line:match("^%s*(%a+ %a+)%s*(.-)%s*$")
    if line:match("^%s*show stat%s*$") then
      local out = { HEADER }
      local names = {}
      for name in pairs(servers) do names[#names + 1] = name end
      table.sort(names)
      for _, name in ipairs(names) do
        local s = servers[name]
        out[#out + 1] = string.format("%s,%s,%d,%s,%d,%s\n", b, name, s.scur, s.status, s.weight, s.addr)
        -- A server that takes no new requests sees those in flight finish, one per look.
        if (s.weight == 0 or s.status == "MAINT") and s.scur > 0 then s.scur = s.scur - 1 end
      end
      out[#out + 1] = string.format("%s,BACKEND,0,UP,0,\n", b)
      return table.concat(out)
    end
    local target, args = rest:match("^([^%s]+)%s*(.-)$")
    local backend, name = (target or ""):match("^([^/]+)/(.+)$")
    if backend ~= b then return "No such backend.\n" end
    local s = servers[name]
    if verb == "add server" then
      if s then return "Already exists a server with the same name in backend.\n" end
      local addr, weight = args:match("^(%S+)%s+weight%s+(%d+)$")
      if not addr then return "'add server' : invalid arguments.\n" end
      servers[name] = { weight = tonumber(weight), addr = addr, status = "MAINT", scur = 0 }
      return "New server registered.\n"
    end
    if not s then return "No such server.\n" end
    if verb == "set weight" then
      local w = tonumber(args)
      if not w or w < 0 or w > 256 then return "Invalid weight.\n" end
      s.weight = math.floor(w)
      return ""
    elseif verb == "enable server" then
      s.status = "UP"
      return ""
    elseif verb == "disable server" then
      s.status = "MAINT"
      return ""
    elseif verb == "del server" then
      if s.status ~= "MAINT" then return "Only servers in maintenance mode can be deleted.\n" end
      if s.scur > 0 then return "Server still has connections attached to it, cannot remove it.\n" end
      servers[name] = nil
      return "Server deleted.\n"
    end
    return "Unknown command: '" .. line .. "'\n"
  end

  -- The servers of this socket's backend, in the world's state.
  local key = "haproxy " .. socket .. " " .. b
  local function respond(call, _args, _n, state)
    state[key] = state[key] or copy(initial)
    local input = call:match(" <<< (.*)$") or ""
    local out = {}
    for line in (input:gsub("\n$", "") .. ";"):gmatch("([^;]*);") do
      if line:match("%S") then out[#out + 1] = command(state[key], line) end
    end
    return { stdout = table.concat(out) }
  end

  local lb = {}
  --- The fake of `exec`: socat on this machine.
  function lb.exec()
    return { match = "socat stdio unix-connect:" .. socket, respond = respond }
  end
  --- The fake of `ssh`: socat on the load balancer `host`.
  function lb.ssh(host)
    return { host = host, match = "socat stdio 'unix-connect:" .. socket .. "'", respond = respond }
  end
  return lb
end

return M
