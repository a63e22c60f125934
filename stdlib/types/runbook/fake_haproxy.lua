---@meta runbook.fake_haproxy
--- HAProxy's runtime API as a fake for `runbook test`: servers added, weighted, enabled,
--- disabled and deleted as HAProxy does, `show stat` read back, requests in flight that finish
--- once a server takes no new ones. The servers live in the fake's world (`state`).
--- Example:
---   local haproxy = require "runbook.fake_haproxy"
---   local lb = haproxy.new{ backend = "app", servers = { ["web-1:3000"] = 100, ["web-2:3000"] = { weight = 100, scur = 3 } } }
---   run("scale_in.lua", { params = { host = "web-2", lb = "haproxy" }, fakes = { exec = { lb.exec() } } })
local M = {}

---@class FakeHaproxyServer
---@field weight? integer
---@field addr? string Default: the server's name.
---@field status? "UP"|"MAINT"
---@field scur? integer Requests in flight.

---@class FakeHaproxyOptions
---@field backend string
---@field socket? string Default "/run/haproxy/admin.sock".
---@field servers table<string, integer|FakeHaproxyServer> By server name: a weight, or a server.

---@class FakeHaproxy
---@field exec fun(): table The fake of `exec` for socat on this machine.
---@field ssh fun(host: string): table The fake of `ssh` for socat on the load balancer `host`.

--- A load balancer whose fakes go in `fakes.exec` (or `fakes.ssh`).
---@param opts FakeHaproxyOptions
---@return FakeHaproxy
function M.new(opts) end

return M
