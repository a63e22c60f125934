-- The weekly maintenance report of the guides: database and table sizes, connections by state
-- and how close they are to max_connections:
--   runbook run runbooks/maintenance_weekly.lua            (DATABASE_URL in the env)
runbook {
  name = "maintenance_weekly",
  description = "Report the database's size, its largest tables and its connections against max_connections",
  params = {
    database_url = { type = "secret", env = "DATABASE_URL", required = true, description = "the PostgreSQL database" },
    top = { type = "integer", default = 10, min = 1, max = 1000, description = "largest tables listed" },
    connections_warn = { type = "integer", default = 80, min = 1, max = 100,
                         description = "warn when connections pass this percent of max_connections" },
  },
}

local pg = require "runbook.pg"
local checks = require "runbook.checks"
local conn = db.connect(params.database_url)

step("database size", function()
  local s = pg.database_size(conn)
  log.info("database size", { database = s.database, size = s.pretty })
  return s
end)

step("table sizes", { description = "The largest tables, indexes and toast included" }, function()
  local rows = pg.table_sizes(conn, { limit = params.top })
  for _, t in ipairs(rows) do log.info("table", { table = t.schema .. "." .. t.table, size = t.pretty }) end
  return rows
end)

step("connections", { description = "Connections by state, and the share of max_connections in use" }, function()
  local c = pg.connections(conn)
  local percent = c.used * 100
  local level = checks.level(percent, params.connections_warn, 100)
  local fields = { total = c.total, max = c.max, percent = string.format("%.1f", percent) }
  if level == "ok" then log.info("connections", fields) else log.warn("connections near max_connections", fields) end
  return { total = c.total, max = c.max, by_state = c.by_state, percent = percent, level = level }
end)
