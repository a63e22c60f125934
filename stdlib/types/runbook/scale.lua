---@meta runbook.scale
-- local scale = require "runbook.scale"

---@class runbook.scale
local scale = {}

---@class ScaleOutOptions
---@field host string The new host.
---@field server string The new host as the load balancer names it.
---@field address? string HAProxy: its address ("10.0.0.14:3000").
---@field pool DeployPool
---@field layout DeployLayout
---@field id? string The release (with `from`; else the source host's current one).
---@field from? string The release as a local folder or .tar.gz.
---@field source? string A host of the pool to copy the release from.
---@field health fun(host: string): boolean? Raises (or returns false) when the host is not healthy.
---@field share? number Percent of the requests while watched (default 10; the nearest whole weight beside its peers'), then its peers' weight.
---@field hold? Duration How long the small weight is watched (no watch without).
---@field warmup? Duration Before the watch.
---@field analysis? TrafficAnalysisOptions Else the watch is the host's health after the hold.
---@field stop? string Stops the host's service (run in its root) when it is taken out again.
---@field port? integer nginx: where the host serves (its connections are counted when it leaves again).
---@field connect? SshConnectOptions

--- Scale out: steps "release on HOST" (refused when the server is in the pool already; the
--- pool's release installed and health-checked), "join pool" (a small share), "watch HOST" (the
--- analysis over `hold`; no data with on_no_data = "pause" asks for an approval), "full weight"
--- (its peers' weight). A failure takes the host out of the pool again and stops its service.
--- Call it from the top level.
--- Example: `scale.out{ host = "10.0.0.14", server = "web4", address = "10.0.0.14:3000", pool = pool, layout = app, source = "10.0.0.11", health = check, hold = "5m" }`
---@param opts ScaleOutOptions
---@return {id: string, weight: integer}
function scale.out(opts) end

---@class ScaleDrainOptions
---@field host string
---@field server string The host as the load balancer names it.
---@field pool DeployPool
---@field deadline? Duration How long requests in flight may take to finish (default 5m).
---@field port? integer nginx: the port the host serves on (its established connections are counted).
---@field layout? DeployLayout Where stop and start run.
---@field health? fun(host: string): boolean? Checked before a rollback lets the host take requests again.
---@field stop? string Stops the service (needs start).
---@field start? string Starts it again, when a rollback puts the host back.
---@field connect? SshConnectOptions

--- Scale in: steps "note HOST" (its weight and address; refused when no other server takes
--- requests), "drain HOST" (weight 0, the requests in flight finished within the deadline, else
--- the weight is put back and the step fails), "remove HOST", "stop HOST"; each undo puts back
--- what its step changed, the host health-checked before it takes requests again. Call it from
--- the top level.
--- Example: `scale.drain{ host = "10.0.0.14", server = "web4", pool = pool, deadline = "5m", stop = "systemctl stop app" }`
---@param opts ScaleDrainOptions
---@return boolean?
function scale.drain(opts) end

return scale
