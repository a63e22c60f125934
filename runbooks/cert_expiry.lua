-- Certificates that expire soon ("SSL certificate should show dates 3+ months away"): a warning
-- under warn_days, a failed run under critical_days (or a certificate that does not verify):
--   runbook run runbooks/cert_expiry.lua -p hosts=app.example.com,api.example.com:8443
runbook {
  name = "cert_expiry",
  description = "Check the TLS certificates of hosts: warn when one expires soon, fail when it is critical",
  params = {
    hosts = { type = "list", required = true, description = "host or host:port, comma-separated" },
    warn_days = { type = "integer", default = 30, min = 1, description = "warn when a certificate expires within" },
    critical_days = { type = "integer", default = 7, min = 0, description = "fail when one expires within" },
    ca = { type = "string", description = "a PEM file of a private CA to trust besides the system's" },
    webhook = { type = "string", env = "RUNBOOK_NOTIFY_URL", description = "posted once when the check fails" },
  },
}

local checks = require "runbook.checks"
local notify = require "runbook.notify"

notify.on_failure(params.webhook, function()
  step("check certificates", { description = "Connect to each host and read its certificate's dates" }, function()
    local r = checks.tls(params.hosts, { warn_days = params.warn_days, critical_days = params.critical_days, ca = params.ca })
    for host, h in pairs(r.hosts) do
      local fields = { host = host, days_left = h.days_left, not_after = h.not_after, error = h.error }
      if h.level == "ok" then log.info("certificate ok", fields)
      elseif h.level == "warning" then log.warn("certificate expires soon", fields)
      else log.error("certificate critical", fields) end
    end
    checks.assert(r)
    return { level = r.level, summary = r.summary, hosts = r.hosts }
  end)
end)
