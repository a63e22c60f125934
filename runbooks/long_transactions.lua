-- Long-running transaction triage, as PostgreSQL teams publish it: list the transactions open
-- too long and those idle in a transaction (holding locks and the xmin horizon), show who they
-- block, then, after an approval, cancel or terminate exactly the sessions listed, each only if
-- it is still the same session in the same transaction.
--   runbook run runbooks/long_transactions.lua -p older_than=10m -p action=terminate   (DATABASE_URL in the env)
--   runbook run runbooks/long_transactions.lua --dry-run                               (the report only)
runbook {
  name = "long_transactions",
  description = "Find transactions open too long or idle in a transaction, show what they block, then cancel or terminate them",
  params = {
    database_url = { type = "secret", env = "DATABASE_URL", required = true, description = "the PostgreSQL server" },
    older_than = { type = "duration", default = "5m", description = "an active transaction open longer than this" },
    idle_for = { type = "duration", default = "1m", description = "idle in a transaction longer than this" },
    database = { type = "string", description = "only sessions of this database (default: every database)" },
    action = { type = "enum", choices = { "report", "cancel", "terminate" }, default = "report",
               description = "report only, cancel the statement, or terminate the session" },
  },
  lock = "long_transactions",
}

local pg = require "runbook.pg"
local conn = db.connect(params.database_url, { application_name = "runbook long_transactions" })

local found = step("list", { description = "Transactions open too long, or idle in a transaction too long" }, function()
  return conn:query_file("sql/long_transactions.sql", params.older_than, params.idle_for, params.database or null)
end)

local blocking = step("blocking tree", { description = "Who waits on whom (pg_blocking_pids)" }, function()
  local tree = pg.blocking(conn, { database = params.database })
  for _, w in ipairs(tree.waiting) do
    log.warn("waiting on a lock", { pid = w.pid, blocked_by = table.concat(w.blocked_by, ","), query = w.query })
  end
  return { waiting = #tree.waiting, roots = tree.roots }
end)

for _, s in ipairs(found) do
  log.info("long transaction", { pid = s.pid, user = s.user, client = s.client_addr, state = s.state,
                                 age = s.xact_age, query = s.query })
end

if params.action ~= "report" and (#found > 0 or current_run() == nil) then
  approve(string.format("%s the %s session(s) listed (%d blocking others)?", params.action,
    current_run() and tostring(#found) or "N", current_run() and #blocking.roots or 0))
  step(params.action, { description = "pg_" .. params.action .. "_backend of each listed session still in the same transaction" }, function()
    local done, spared = {}, {}
    for _, s in ipairs(found) do
      if pg[params.action](conn, s) then done[#done + 1] = s.pid else spared[#spared + 1] = s.pid end
    end
    return { done = done, spared = spared }
  end)
end
