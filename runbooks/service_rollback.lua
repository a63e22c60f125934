-- Roll services back to their release before, in the order the procedure names (the media guide:
-- "stop all services, restore code, restart in order: worker, edge, backend, frontend"):
--   runbook run runbooks/service_rollback.lua -p services=worker,edge,backend,frontend \
--     -p health=backend=http://{host}:3000/api/health,edge=http://{host}:8080/health
runbook {
  name = "service_rollback",
  description = "Stop the services in order, switch each back to its previous release, start them in order, check health",
  params = {
    hosts = { type = "string", default = "web", description = "the inventory group of runbook.toml" },
    services = { type = "list", default = { "worker", "edge", "backend", "frontend" },
                 description = "the services, in the order they are stopped and started" },
    root = { type = "string", default = "/srv/{service}", description = "each service's release root ({service}, {host})" },
    stop = { type = "string", default = "systemctl stop {service}", description = "run in the service's root" },
    start = { type = "string", default = "systemctl start {service}", description = "run in the service's root" },
    health = { type = "list", description = "service=url pairs ({host}), checked after the start" },
    health_timeout = { type = "string", default = "1m" },
  },
  lock = "deploy",
}

local deploy = require "runbook.deploy"
local q = deploy.quote

local address = deploy.address
local function fill(template, service, host)
  return (template:gsub("{service}", service):gsub("{host}", host and address(host) or "{host}"))
end

local health = require("runbook.util").pairs_of(params.health, "health")

local layouts = {}
for _, service in ipairs(params.services) do
  layouts[service] = deploy.layout {
    root = function(host) return fill(params.root, service, host) end,
    restart = fill(params.start, service),
  }
end

local function on_each(service, what)
  return ssh.each(params.hosts, function(s, host)
    return what(s, host, layouts[service]:root(host))
  end)
end

for _, service in ipairs(params.services) do
  step("stop " .. service, function()
    on_each(service, function(s, host, root)
      s:exec("cd " .. q(root) .. " && " .. fill(params.stop, service, host))
    end)
  end)
end

for _, service in ipairs(params.services) do
  step("restore " .. service, { description = "current -> the release before the last switch" }, function()
    local out = {}
    local r = on_each(service, function(s, host, root)
      local cur = layouts[service]:current(s, host)
      local prev = s:exec("cat " .. q(root .. "/previous"), { check = false, readonly = true, echo = false })
      local before = prev.code == 0 and prev.stdout:gsub("%s+$", "") or ""
      if before == "" then fail(service .. " on " .. host .. ": no release before " .. tostring(cur)) end
      s:exec("cd " .. q(root) .. " && ln -sfn " .. q("releases/" .. before) .. " current.next && mv -T current.next current"
        .. " && printf %s " .. q(tostring(cur)) .. " > previous")
      return { from = cur, to = before }
    end)
    for host, o in pairs(r) do out[host] = o.result end
    return out
  end)
end

for _, service in ipairs(params.services) do
  step("start " .. service, function()
    on_each(service, function(s, host, root)
      s:exec("cd " .. q(root) .. " && export RELEASE_ROOT=" .. q(root) .. " RELEASE_HOST=" .. q(host) .. " && "
        .. fill(params.start, service, host))
      if health[service] then
        http.wait_healthy(fill(health[service], service, host), { timeout = params.health_timeout, interval = "500ms" })
      end
    end)
  end)
end
