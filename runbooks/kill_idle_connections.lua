-- Terminate PostgreSQL connections left idle (the guides' "Too many connections" fix: kill
-- connections idle for over an hour), after listing them and an approval:
--   runbook run runbooks/kill_idle_connections.lua -p idle_for="30 minutes"   (DATABASE_URL in the env)
--   runbook run runbooks/kill_idle_connections.lua --dry-run                  (the list only)
runbook {
  name = "kill_idle_connections",
  description = "List PostgreSQL connections idle longer than a limit, ask, then terminate exactly those",
  params = {
    database_url = { type = "secret", env = "DATABASE_URL", required = true, description = "the PostgreSQL server" },
    idle_for = { type = "string", default = "1 hour", description = "a PostgreSQL interval: idle longer than this" },
    database = { type = "string", description = "only connections to this database" },
    user = { type = "string", description = "only connections of this role" },
    application = { type = "string", description = "only connections with this application_name" },
  },
  lock = "kill_idle_connections",
}

local pg = require "runbook.pg"
local conn = db.connect(params.database_url)

local idle = step("list idle connections", { description = "Idle connections past the limit, never this one" }, function()
  return pg.idle_connections(conn, { older_than = params.idle_for, database = params.database, user = params.user,
                                    application = params.application })
end)

for _, c in ipairs(idle) do
  log.info("idle connection", { pid = c.pid, user = c.user, database = c.database, application = c.application,
                                idle_seconds = c.idle_seconds })
end

-- (Without a run, in plan and doc, the gate and the step are listed too.)
if #idle > 0 or current_run() == nil then
  approve("terminate the " .. (current_run() and tostring(#idle) or "N") .. " connection(s) listed, idle for more than "
    .. params.idle_for .. "?")
  step("terminate", { description = "pg_terminate_backend of the listed connections that are still idle" }, function()
    local pids = {}
    for _, c in ipairs(idle) do pids[#pids + 1] = c.pid end
    -- Only those listed and approved, and only if still idle: one that woke up meanwhile is spared.
    -- `execute`, not `query`: under --dry-run it terminates nothing.
    local terminated = conn:execute([[select pg_terminate_backend(pid) from pg_stat_activity
                                      where pid = any($1::int[]) and state = 'idle'
                                        and state_change < now() - ($2::text)::interval]], pids, params.idle_for)
    return { listed = #idle, terminated = terminated }
  end)
end
