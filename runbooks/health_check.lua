-- Every service's health, the database and the buckets, in one report (the guides' "Health
-- Checks" sections: /api/health of the backend and frontend, the edge's /health, the database,
-- the S3 buckets); fails, with one notification, when anything is down:
--   runbook run runbooks/health_check.lua -p services=api=http://10.0.0.5:3000/api/health,edge=http://10.0.0.5:8080/health
runbook {
  name = "health_check",
  description = "Check every service's health endpoint, the database and the buckets; fail when one is down",
  params = {
    services = { type = "list", description = "name=url pairs, comma-separated" },
    database_url = { type = "secret", env = "DATABASE_URL", description = "checked when given" },
    buckets = { type = "list", description = "store URLs (s3://bucket, file:///path), comma-separated" },
    s3_endpoint = { type = "string", env = "S3_ENDPOINT", description = "S3-compatible endpoint (unset: AWS)" },
    s3_region = { type = "string", default = "us-east-1", env = "AWS_REGION" },
    timeout = { type = "string", default = "10s", description = "per request" },
    webhook = { type = "string", env = "RUNBOOK_NOTIFY_URL", description = "posted once when the check fails" },
  },
}

local checks = require "runbook.checks"
local notify = require "runbook.notify"

local services = require("runbook.util").pairs_of(params.services, "services")
local buckets = params.buckets or {}

notify.on_failure(params.webhook, function()
  local s = step("services", { description = "Each service's health endpoint answers 2xx" }, function()
    local r = checks.http(services, { timeout = params.timeout })
    return { ok = r.ok, summary = r.summary, services = r.services }
  end)
  local d = step("database", { description = "select current_user, current_database(), version()",
                               when = function() return params.database_url ~= nil end }, function()
    local r = checks.database(db.connect(params.database_url))
    return { ok = r.ok, summary = r.summary }
  end)
  local b = step("buckets", { description = "Each bucket reachable", when = function() return #buckets > 0 end }, function()
    local bad = {}
    for _, url in ipairs(buckets) do
      local opts = nil
      if url:match("^s3://") then
        opts = { endpoint = params.s3_endpoint, region = params.s3_region,
                 allow_http = params.s3_endpoint ~= nil and params.s3_endpoint:match("^http://") ~= nil }
      end
      local ok, store = pcall(storage.open, url, opts)
      local r = ok and checks.bucket(store) or { ok = false, summary = url .. ": " .. tostring(store):match("[^\n]*") }
      if not r.ok then bad[#bad + 1] = r.summary end
    end
    return { ok = #bad == 0, problems = bad }
  end)
  step("verdict", { description = "Fail when anything above is down" }, function()
    local bad = {}
    if not s.ok then bad[#bad + 1] = s.summary end
    if d and not d.ok then bad[#bad + 1] = d.summary end
    for _, p in ipairs(b and b.problems or {}) do bad[#bad + 1] = p end
    if #bad > 0 then fail(table.concat(bad, "; ")) end
    return "healthy"
  end)
end)
