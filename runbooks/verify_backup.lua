-- Restore drill: take the latest backup, restore it into a scratch database (created, then
-- dropped), list its tables with their rows, and record the drill in the backup's manifest.
--   runbook run runbooks/verify_backup.lua -p store=s3://backups/app     (DATABASE_URL: the server)
runbook {
  name = "verify_backup",
  description = "Restore the latest backup into a scratch database and check it",
  params = {
    database_url = { type = "secret", env = "DATABASE_URL", required = true,
                     description = "a server to create the scratch database on (SQLite needs none but the param)" },
    store        = { type = "string", default = "file://./backups" },
    s3_endpoint  = { type = "string", env = "S3_ENDPOINT" },
    s3_region    = { type = "string", default = "us-east-1", env = "AWS_REGION" },
    label        = { type = "string", description = "only backups with this label" },
    notify_url   = { type = "string", env = "RUNBOOK_NOTIFY_URL" },
  },
}

local common = require("_backup_common").new(params, "verify_backup")
local store = common.store()

local latest = common.step("find the latest backup", {}, function()
  local m = backup.latest(store, { label = params.label })
  if not m then fail("no complete backup in " .. params.store) end
  log.info("latest backup", { key = m.key, created_at = m.created_at, bytes = m.bytes_stored })
  return m
end)

common.step("restore drill", { description = "Checksum, scratch restore, row counts against the manifest" }, function()
  local v = backup.verify(latest, { server = params.database_url })
  for name, rows in pairs(v.tables) do log.info("table restored", { table = name, rows = rows }) end
  return { key = latest.key, ok = v.ok, tables = v.tables, ms = v.duration_ms }
end)
