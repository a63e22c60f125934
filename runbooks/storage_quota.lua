-- Storage quotas (the media guide's storage_quotas table): a warning at 80% of a quota, a failed
-- run at 95%, one notification when it fails:
--   runbook run runbooks/storage_quota.lua           (DATABASE_URL in the env)
runbook {
  name = "storage_quota",
  description = "Check every storage quota: warn at 80% used, fail at 95%",
  params = {
    database_url = { type = "secret", env = "DATABASE_URL", required = true, description = "the database holding the quotas" },
    query = { type = "string",
              default = "select brand_id::text as name, used_bytes as used, quota_bytes as quota from storage_quotas",
              description = "a query returning name, used and quota (bytes) per quota" },
    warn_percent = { type = "number", default = 80, min = 1, max = 100 },
    critical_percent = { type = "number", default = 95, min = 1, max = 100 },
    webhook = { type = "string", env = "RUNBOOK_NOTIFY_URL", description = "posted once when the check fails" },
  },
}

local checks = require "runbook.checks"
local notify = require "runbook.notify"
local conn = db.connect(params.database_url)

notify.on_failure(params.webhook, function()
  step("check quotas", { description = "Each quota's use against the warning and critical thresholds" }, function()
    local report, critical, warning = {}, {}, {}
    for _, row in ipairs(conn:query(params.query)) do
      if row.quota == null or row.used == null then goto continue end -- no quota: unlimited
      local r = checks.quota(tonumber(row.used), tonumber(row.quota),
        { warn = params.warn_percent, critical = params.critical_percent })
      report[#report + 1] = { name = row.name, level = r.level, percent = math.floor(r.percent * 10 + 0.5) / 10 }
      if r.level == "critical" then critical[#critical + 1] = row.name .. " " .. r.summary
      elseif r.level == "warning" then
        warning[#warning + 1] = row.name
        log.warn("storage quota", { name = row.name, used = r.summary })
      end
      ::continue::
    end
    if #critical > 0 then fail("storage quota critical: " .. table.concat(critical, "; ")) end
    return { quotas = report, warnings = warning }
  end)
end)
