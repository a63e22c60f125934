-- Scale in: a host leaves the load balancer's pool without failing a request. Its weight is
-- noted and goes to 0, the requests in flight finish (up to a deadline; past it the weight is put
-- back and the run fails), it is removed from the pool, and its service is stopped. Refused when
-- no other server takes requests. Each move is a step with an undo: a failure, or a rollback,
-- starts the service again and, once healthy, puts the host back in the pool.
--   runbook run runbooks/scale_in.lua -p host=deploy@10.0.0.14 -p lb=haproxy -p lb_host=deploy@10.0.0.10 \
--     -p lb_server=web-{host} -p stop='systemctl stop app' -p start='systemctl start app'
local deploy = require "runbook.deploy"

runbook {
  name = "scale_in",
  description = "Drain a host from the pool (weight 0, requests in flight finished), remove it, stop its service",
  params = deploy.with_traffic_params {
    host = { type = "string", required = true, description = "the host to take out (user@address or address)" },
    deadline = { type = "duration", default = "5m", description = "how long the requests in flight may take to finish" },
    port = { type = "integer", default = 3000, description = "nginx: the port the host serves on (its connections are counted there)" },
    root = { type = "string", default = "/srv/app", description = "the host's release root, where stop and start run ({host})" },
    stop = { type = "string", description = "stops the host's service (run in the root; needs start)" },
    start = { type = "string", description = "starts it again, when a rollback puts the host back" },
    health_url = { type = "string", description = "the host's health URL ({host}): checked before a rollback lets it take requests" },
  },
  lock = "deploy",
  rollback = "auto",
}

local scale = require "runbook.scale"

if params.stop and not params.start then
  fail("stop needs start: a rollback (a later step failing) must be able to bring the host back")
end

scale.drain {
  host = params.host,
  server = deploy.lb_server(params, params.host),
  pool = deploy.traffic_pool(params),
  deadline = params.deadline,
  port = params.port,
  layout = deploy.layout { root = function(host) return deploy.at_host(params.root, host) end },
  health = params.health_url and function(host)
    http.wait_healthy(deploy.at_host(params.health_url, host),
      { timeout = "1m", interval = "500ms", attempt_timeout = "5s" })
  end,
  stop = params.stop,
  start = params.start,
}
