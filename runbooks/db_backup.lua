-- Nightly database backup, as the deployment guides do it by hand ("8. Backup Procedures":
-- pg_dump -F c, keep 30 days) but streamed, checksummed, verified by restoring it, and pruned:
--   runbook run runbooks/db_backup.lua -p store=s3://backups/app      (DATABASE_URL in the env)
runbook {
  name = "db_backup",
  description = "Back up a database, verify the backup by restoring it into a scratch database, keep 30 days",
  params = {
    database_url = { type = "secret", env = "DATABASE_URL", required = true,
                     description = "postgres://, mysql:// or sqlite:// database to back up" },
    store        = { type = "string", default = "file://./backups", description = "file:///path or s3://bucket/prefix" },
    s3_endpoint  = { type = "string", env = "S3_ENDPOINT", description = "S3-compatible endpoint (unset: AWS)" },
    s3_region    = { type = "string", default = "us-east-1", env = "AWS_REGION" },
    label        = { type = "string", default = "nightly", description = "label of the backups this run makes and prunes" },
    keep_days    = { type = "integer", default = 30, min = 1, description = "daily backups kept" },
    notify_url   = { type = "string", env = "RUNBOOK_NOTIFY_URL", description = "webhook posted when a step fails" },
  },
  lock = "db_backup",
}

local common = require("_backup_common").new(params, "db_backup")
local store = common.store()

local m = common.step("back up", { description = "Dump, compress (zstd) and checksum into the store; manifest last", retries = 2 },
  function() return backup.create{ source = params.database_url, to = store, label = params.label } end)

common.step("verify by restore", { description = "Checksum, restore into a scratch database, compare every table's rows" },
  function()
    local v = backup.verify(m, { server = params.database_url })
    log.info("backup verified", { tables = v.tables, ms = v.duration_ms })
    return { ok = v.ok, tables = v.tables }
  end)

common.step("prune", { description = "Keep " .. params.keep_days .. " daily backups, 8 weekly, 12 monthly, and the newest verified" },
  function()
    local r = backup.prune(store, { label = params.label, keep_daily = params.keep_days, keep_weekly = 8, keep_monthly = 12 })
    return { kept = #r.kept, removed = #r.removed, incomplete_removed = #r.incomplete_removed }
  end)
