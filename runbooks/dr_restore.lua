-- Disaster recovery (the guides' "9. Disaster Recovery"): restore the latest good backup into a
-- new database, re-apply the policies from a SQL file, compare row counts with the backup's
-- manifest, and print what to switch. Asks for approval before it writes anything.
--   runbook run runbooks/dr_restore.lua -p store=s3://backups/app -p policies=sql/policies.sql
runbook {
  name = "dr_restore",
  description = "Restore the latest verified backup into a new database and tell what to switch",
  params = {
    target_url  = { type = "secret", env = "TARGET_DATABASE_URL", required = true,
                    description = "the new, empty database to restore into" },
    store       = { type = "string", default = "file://./backups" },
    s3_endpoint = { type = "string", env = "S3_ENDPOINT" },
    s3_region   = { type = "string", default = "us-east-1", env = "AWS_REGION" },
    label       = { type = "string", description = "only backups with this label" },
    policies    = { type = "string", description = "a SQL file of policies to re-apply after the restore" },
    clean       = { type = "boolean", default = false, description = "replace the tables of a non-empty target" },
    notify_url  = { type = "string", env = "RUNBOOK_NOTIFY_URL" },
  },
  lock = "dr_restore",
}

local common = require("_backup_common").new(params, "dr_restore")
local store = common.store()

local chosen = common.step("choose the backup", { description = "The newest verified backup, else the newest" }, function()
  local all = backup.list(store, { label = params.label })
  if #all == 0 then fail("no complete backup in " .. params.store) end
  for _, m in ipairs(all) do
    if m.verification and m.verification.ok then return m end
  end
  log.warn("no verified backup: restoring the newest, unverified one", { key = all[1].key })
  return all[1]
end)

approve("Restore " .. chosen.key .. " (" .. chosen.created_at .. ") into the target database?")

local restored = common.step("restore", { description = "Checksum first, then the restore" }, function()
  -- The store it was listed from (the manifest names the store as its writer saw it).
  return backup.restore(chosen, { store = store, into = params.target_url, clean = params.clean })
end)

if params.policies then
  common.step("re-apply policies", { description = "Run " .. params.policies .. " in one transaction" }, function()
    local target = db.connect(params.target_url)
    local n = target:execute_file(params.policies)
    target:close()
    return { statements = n }
  end)
end

common.step("compare counts", { description = "Every table's rows against the manifest" }, function()
  local problems = {}
  for name, rows in pairs(chosen.tables) do
    -- MySQL backups carry a second count taken after the dump: the dumped rows lie between.
    local after = (chosen.tables_after or {})[name] or rows
    local got = restored.tables[name]
    if got == nil or got < math.min(rows, after) or got > math.max(rows, after) then
      problems[#problems + 1] = name .. ": " .. rows .. " in the backup, " .. tostring(got) .. " restored"
    end
  end
  if #problems > 0 then fail(table.concat(problems, "; ")) end
  return restored.tables
end)

step("what to switch", function()
  log.info("restore complete: point the application at the new database", {
    backup = chosen.key, taken = chosen.created_at, source_was = chosen.source })
  print("Next: set DATABASE_URL of the application to the target database, restart it, and watch its health checks.")
  return { backup = chosen.key, taken = chosen.created_at }
end)
