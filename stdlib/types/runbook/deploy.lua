---@meta runbook.deploy
-- local deploy = require "runbook.deploy"

---@class runbook.deploy
local deploy = {}

---@class DeployLayoutOptions
---@field root string|fun(host: string): string The release root on each host.
---@field restart? string Shell command run in the root after a switch ($RELEASE_ROOT, $RELEASE_HOST, and $RELEASE_COLOR for blue/green).
---@field keep? integer Releases kept by `prune` (default 5).

---@class DeployLayout
--- root/releases/<id>, root/current -> releases/<id>, root/previous.
local DeployLayout = {}

--- Uploads a local folder (tarred) or a .tar.gz as releases/<id>; a complete one is kept.
---@param s SshSession
---@param host string
---@param id string
---@param from string
---@return string dir
function DeployLayout:upload(s, host, id, from) end

--- The release `current` points at, or nil.
---@param s SshSession
---@param host string
---@return string?
function DeployLayout:current(s, host) end

--- Points `current` at releases/<id> atomically; returns the release before.
---@param s SshSession
---@param host string
---@param id string
---@return string?
function DeployLayout:switch(s, host, id) end

--- Runs the restart command in the root.
---@param s SshSession
---@param host string
function DeployLayout:restart(s, host) end

--- Back to the release before the last switch, restarted; returns it (nil when none).
---@param s SshSession
---@param host string
---@return string?
function DeployLayout:rollback(s, host) end

--- Removes releases beyond the newest `keep`, never the current one.
---@param s SshSession
---@param host string
function DeployLayout:prune(s, host) end

--- Upload, switch and restart: what every strategy does on a host.
---@param s SshSession
---@param host string
---@param id string
---@param from string
---@return {from: string?, to: string}
function DeployLayout:install(s, host, id, from) end

---@class DeployOptions
---@field id string The release id (a version).
---@field from string A local folder or .tar.gz (relative to the runbook).
---@field health? fun(host: string, color?: string): boolean? Raising or returning false fails the host.
---@field batch? integer|string Hosts per batch (rolling).
---@field canary? integer Hosts in the canary (default 1).
---@field max_failures? integer|string
---@field pause? Duration
---@field connect? SshConnectOptions

--- A string quoted for a POSIX shell.
--- Example: `s:exec("cat " .. deploy.quote(root .. "/previous"))`
---@param s string
---@return string
function deploy.quote(s) end

--- The address of a host spec: "deploy@10.0.0.5:2222" -> "10.0.0.5".
--- Example: `http.get("http://" .. deploy.address(host) .. ":3000/api/health")`
---@param host string
---@return string
function deploy.address(host) end

--- The .tar.gz of a local release folder, built once (a .tar.gz is returned as it is).
--- Example: `local archive = deploy.archive("build", params.version)`
---@param from string
---@param id string
---@return string
function deploy.archive(from, id) end

--- A release layout on hosts.
--- Example: `local app = deploy.layout{ root = "/srv/app", restart = "systemctl restart app" }`
---@param opts DeployLayoutOptions
---@return DeployLayout
function deploy.layout(opts) end

--- Rolling: batch by batch, each host health-checked; halts past max_failures and rolls the
--- hosts of this attempt back.
--- Example: `deploy.rolling(app, "web", { id = params.version, from = "build", batch = 2, health = check })`
---@param layout DeployLayout
---@param hosts string[]|string
---@param opts DeployOptions
---@return table<string, SshHostOutcome>
function deploy.rolling(layout, hosts, opts) end

--- Canary: one host first with its health gate, then the rest; a failed canary is rolled back
--- and the other hosts are never touched.
--- Example: `deploy.canary(app, "web", { id = params.version, from = "build", health = check })`
---@param layout DeployLayout
---@param hosts string[]|string
---@param opts DeployOptions
---@return table<string, SshHostOutcome>
function deploy.canary(layout, hosts, opts) end

--- Blue/green: the release goes to the idle colour, which is restarted and health-checked
--- before the traffic pointer `live` switches; the old colour is kept.
--- Example: `deploy.blue_green(app, "web", { id = params.version, from = "build", health = check_color })`
---@param layout DeployLayout
---@param hosts string[]|string
---@param opts DeployOptions
---@return table<string, SshHostOutcome>
function deploy.blue_green(layout, hosts, opts) end

--- Points each host's traffic back at the other colour.
--- Example: `deploy.blue_green_rollback(app, "web")`
---@param layout DeployLayout
---@param hosts string[]|string
---@param opts? {connect?: SshConnectOptions}
---@return table<string, SshHostOutcome>
function deploy.blue_green_rollback(layout, hosts, opts) end

---@class TrafficBackend
---@field name? string Shown in logs ("haproxy app", "nginx upstream app").
---@field set fun(percent: number): table? Sends `percent` of the traffic to the new version (0: all on the stable one); may return the weights set.
---@field even? fun(): table? Every server at the same weight, as between releases (needed by traffic_rollout).
---@field even_weight? integer That weight (HAProxy 100, nginx 1).

---@class TrafficAnalysisOptions
---@field prometheus? Prometheus
---@field checks (string|AnalysisCheck)[] e.g. { "error_rate < 5% for 5m", "p95_latency < 2s for 2m" }
---@field queries? table<string, string|fun(): number?>
---@field interval? Duration Between samples (default 15s).
---@field on_no_data? "fail"|"pause"|"continue" "fail" (default) fails the stage; "pause" asks for an approval before the next stage.

---@class TrafficCanaryOptions
---@field stages? number[] Percentages, rising (default {5, 25, 50, 100}).
---@field hold? Duration How long each stage below 100% is held (and watched by the analysis).
---@field warmup? Duration Waited after each weight change, before the hold (at least the queries' rate window).
---@field analysis? TrafficAnalysisOptions metrics.analyze over each hold (its duration is the hold).
---@field name? string Put before the steps' names ("api traffic 5%"), for two canaries in one runbook.

--- Traffic canary: one step per stage ("traffic 5%", ...), each setting the weight, holding it
--- and judging it by the analysis. A failed stage puts all traffic back on the stable version and
--- fails with the numbers; each stage's undo does the same; a crash resumes at the stage in
--- flight. `on_no_data = "pause"` asks for an approval before the next stage. Call it from the
--- runbook's top level.
--- Example: `deploy.traffic_canary(lb, { hold = "5m", analysis = { prometheus = prom, queries = q, checks = { "error_rate < 5% for 5m" } } })`
---@param backend TrafficBackend
---@param opts? TrafficCanaryOptions
---@return {percent: number, weights?: table, outcome?: string, checks?: table}
function deploy.traffic_canary(backend, opts) end

---@class TrafficRolloutOptions: TrafficCanaryOptions
---@field pool DeployPool The same load balancer's pool: hosts leave and rejoin it one at a time.
---@field server fun(host: string): string A host's name in the pool.
---@field drain? Duration How long a host's requests in flight may take to finish (default 30s).
---@field id string The release id.
---@field from string A local folder or .tar.gz.
---@field health? fun(host: string) Raises (or returns false) when a host is not healthy.
---@field canary string[] The hosts, of `hosts`, that take the canary's share.
---@field backend TrafficBackend With set and even (deploy.haproxy and deploy.nginx have both).
---@field connect? SshConnectOptions

--- A release judged by live traffic: "canary release" (the canary hosts leave the pool, get the
--- release, are health-checked), the traffic canary's stages below 100 ("traffic 5%" ...), then
--- "promote" (the final 100: the other hosts one at a time out of the pool, the release,
--- health-checked, back in; then even weights). A failure puts traffic on the stable version
--- first; each step's undo takes its hosts back one at a time, health-checked before they take
--- requests again. Call it from the top level.
--- Example: `deploy.traffic_rollout(app, "web", { id = v, from = "build/", health = check, canary = { "10.0.0.11" }, backend = lb, hold = "5m", analysis = a })`
---@param layout DeployLayout
---@param hosts string|string[] An inventory group or host specs.
---@param opts TrafficRolloutOptions
---@return table weights The pool's weights once even.
function deploy.traffic_rollout(layout, hosts, opts) end

--- The HAProxy weights that send `percent` of requests to `canary_servers` servers and the rest
--- to `stable_servers` (within HAProxy's 0..256).
--- Example: `deploy.split_weights(25, 1, 3)` is 75, 75 (one canary at 75 beside three stable at 75 each: 25%)
---@param percent number
---@param canary_servers integer
---@param stable_servers integer
---@return integer canary_weight
---@return integer stable_weight
function deploy.split_weights(percent, canary_servers, stable_servers) end

---@class HaproxyBackend: TrafficBackend
---@field weights fun(): table<string, integer> The servers' current weights, by name.
---@field set fun(percent: number): {canary: integer, stable: integer, seen: table<string, integer>} `seen`: the weights HAProxy reports afterwards.
---@field even fun(): {canary: integer, stable: integer, seen: table<string, integer>} Every server at 100.

---@class HaproxyOptions
---@field socket string The runtime API's socket on the load balancer (`stats socket ... level admin`).
---@field backend string
---@field stable string[] Servers of the stable version.
---@field canary string[] Servers of the new version.
---@field ssh? string The load balancer, when it is not this machine (socat runs there).
---@field connect? SshConnectOptions

--- A traffic backend for HAProxy: weights set through its runtime API (no reload), with socat on
--- the load balancer. An unknown backend or server is an error with HAProxy's answer.
--- Example: `local lb = deploy.haproxy{ socket = "/run/haproxy/admin.sock", backend = "app", stable = { "web1" }, canary = { "web2" }, ssh = "lb1" }`
---@param opts HaproxyOptions
---@return HaproxyBackend
function deploy.haproxy(opts) end

---@class NginxOptions
---@field file string The file holding the upstream block (included by nginx.conf), rewritten whole.
---@field upstream string The upstream's name.
---@field stable string[] "host:port" of the stable version's servers.
---@field canary string[] "host:port" of the new version's servers.
---@field ssh? string The load balancer, when it is not this machine.
---@field connect? SshConnectOptions
---@field test? string The config check (default "nginx -t").
---@field reload? string The reload (default "nginx -s reload").

--- A traffic backend for nginx: the upstream block is written with weights (a side at 0%
--- marked `down`), checked with `nginx -t`, then reloaded; a config nginx refuses is put back
--- and the error quotes nginx.
--- Example: `local lb = deploy.nginx{ file = "/etc/nginx/conf.d/app-upstream.conf", upstream = "app", stable = { "10.0.0.5:3000" }, canary = { "10.0.0.9:3000" }, ssh = "lb1" }`
---@param opts NginxOptions
---@return TrafficBackend
function deploy.nginx(opts) end

---@class DeployPoolOptions
---@field lb "haproxy"|"nginx"
---@field ssh? string The load balancer, when it is not this machine.
---@field connect? SshConnectOptions
---@field socket? string HAProxy: the runtime API's socket.
---@field backend? string HAProxy: the backend.
---@field file? string nginx: the file holding the upstream block.
---@field upstream? string nginx: the upstream's name.
---@field test? string nginx: the config check (default "nginx -t").
---@field reload? string nginx: the reload (default "nginx -s reload").

---@class DeployPoolServer
---@field weight integer 0: no new requests (nginx: `down`).
---@field sessions? integer HAProxy: requests in flight.
---@field status? string HAProxy: "UP", "MAINT", "no check" ...
---@field address? string

---@class DeployPool
---@field name string
---@field lb string
---@field servers fun(): table<string, DeployPoolServer> By name (nginx: by address).
---@field add fun(name: string, address: string?, weight: integer) Joins the pool (again: only its weight is set); HAProxy adds it at run time.
---@field weight fun(name: string, weight: integer)
---@field sessions fun(name: string): integer? Requests in flight (HAProxy); nil with nginx, which does not say.
---@field remove fun(name: string): boolean Leaves the pool (HAProxy: maintenance, then deleted); false when it was not there.

--- A load balancer's pool, one server at a time, for scaling out and in.
--- Example: `local pool = deploy.pool{ lb = "haproxy", socket = "/run/haproxy/admin.sock", backend = "app", ssh = "lb1" }`
---@param spec DeployPoolOptions
---@return DeployPool
function deploy.pool(spec) end

---@class TrafficParams
---@field lb? "haproxy"|"nginx"
---@field lb_host? string
---@field lb_server string
---@field lb_address string
---@field haproxy_socket string
---@field lb_backend string
---@field nginx_file string
---@field nginx_test string
---@field nginx_reload string
---@field hold Duration
---@field warmup Duration
---@field prometheus? string
---@field prometheus_token? Secret
---@field error_rate_query string
---@field latency_query string
---@field checks string[]
---@field interval Duration
---@field on_no_data "fail"|"pause"|"continue"

--- The param declarations of a load balancer and of the numbers that judge a stage (lb,
--- lb_host, lb_server, lb_address, haproxy_socket, lb_backend, nginx_*, hold, warmup,
--- prometheus, prometheus_token, error_rate_query, latency_query, checks, interval,
--- on_no_data), added to the runbook's own; the readers below take `params` back.
--- Example: `runbook { name = "scale_out", params = deploy.with_traffic_params { host = { type = "string", required = true } } }`
---@param own table<string, table> The runbook's own param declarations.
---@return table<string, table>
function deploy.with_traffic_params(own) end

--- `template` with {host} replaced by the host's address.
--- Example: `deploy.at_host("http://{host}:3000/api/health", "deploy@10.0.0.5")` is "http://10.0.0.5:3000/api/health"
---@param template string
---@param host string
---@return string
function deploy.at_host(template, host) end

--- A host as the load balancer names it: lb_server with {host} its address.
---@param params TrafficParams
---@param host string
---@return string
function deploy.lb_server(params, host) end

--- The traffic backend (deploy.haproxy or deploy.nginx) of the traffic params.
---@param params TrafficParams
---@param canary string[] Servers, as the load balancer names them.
---@param stable string[]
---@return TrafficBackend
function deploy.traffic_backend(params, canary, stable) end

--- The pool (deploy.pool) of the traffic params.
---@param params TrafficParams
---@return DeployPool
function deploy.traffic_pool(params) end

--- The analysis of the traffic params for the judged hosts: Prometheus' error ratio and latency
--- ({canary} in the queries: their addresses) when `prometheus` is set, else how many of them
--- `healthy(host)` says are not.
---@param params TrafficParams
---@param hosts string[]
---@param healthy fun(host: string): boolean
---@return TrafficAnalysisOptions
function deploy.traffic_analysis(params, hosts, healthy) end

--- Waits until `server` has no request in flight (HAProxy's count), at most `deadline` (default
--- 30s); returns how many were left. With nginx, which does not say, it waits `settle` (default
--- 2s): a reload lets the old workers finish what they have.
--- Example: `deploy.wait_drained(pool, "web3", "1m")`
---@param pool DeployPool
---@param server string
---@param deadline? Duration
---@param settle? Duration
---@return integer
function deploy.wait_drained(pool, server, deadline, settle) end
