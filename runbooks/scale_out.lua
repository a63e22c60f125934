-- Scale out, done and not only detected: a new host gets the release the pool runs (copied from
-- a host of the pool), is health-checked, joins the load balancer's pool with a small share of
-- the requests, is watched by the same numbers as a canary stage (Prometheus, else its health),
-- then takes its peers' weight. Each move is a step with an undo: a failure takes the host out
-- of the pool again. A host already in the pool is refused.
--   runbook run runbooks/scale_out.lua -p host=deploy@10.0.0.14 -p lb=haproxy -p lb_host=deploy@10.0.0.10 \
--     -p lb_server=web-{host} -p health_url=http://{host}:3000/api/health
local deploy = require "runbook.deploy"

runbook {
  name = "scale_out",
  description = "Add a host to the pool: the current release, health-checked, a small share watched, then its peers' weight",
  params = deploy.with_traffic_params {
    host = { type = "string", required = true, description = "the new host (user@address or address)" },
    hosts = { type = "string", default = "web", description = "the pool's inventory group; its first host is the release's source" },
    version = { type = "string", pattern = "^[A-Za-z0-9._-]+$", description = "the release (default: the one the pool runs)" },
    from = { type = "string", description = "the release as a local folder or .tar.gz (default: copied from the pool)" },
    root = { type = "string", default = "/srv/app", description = "release root on each host ({host} is its address)" },
    restart = { type = "string", description = "run in the root after the release is installed ($RELEASE_HOST set)" },
    stop = { type = "string", description = "run in the root to stop the service when the new host is taken out again" },
    health_url = { type = "string", required = true, description = "each host's health URL, {host} its address" },
    health_timeout = { type = "duration", default = "1m" },
    share = { type = "number", default = 10, min = 1, max = 50,
              description = "percent of the requests the new host takes while watched (then its peers' weight)" },
  },
  lock = "deploy",
  rollback = "auto",
}

local scale = require "runbook.scale"

local function url_for(host) return deploy.at_host(params.health_url, host) end
local source = ssh.group(params.hosts)[1] or fail("the group " .. params.hosts .. " has no host to copy the release from")

scale.out {
  host = params.host,
  server = deploy.lb_server(params, params.host),
  address = deploy.at_host(params.lb_address, params.host),
  pool = deploy.traffic_pool(params),
  layout = deploy.layout {
    root = function(host) return deploy.at_host(params.root, host) end,
    restart = params.restart,
  },
  id = params.version,
  from = params.from,
  source = source,
  health = function(host)
    http.wait_healthy(url_for(host), { timeout = params.health_timeout, interval = "500ms", attempt_timeout = "5s" })
  end,
  share = params.share,
  hold = params.hold,
  warmup = params.warmup,
  analysis = deploy.traffic_analysis(params, { params.host }, function(host)
    return pcall(http.get, url_for(host), { timeout = "5s", readonly = true })
  end),
  stop = params.stop,
}
