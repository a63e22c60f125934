-- The monthly maintenance of the guides: REINDEX and VACUUM ANALYZE of the listed tables, one
-- step per table (a resumed run does not redo a table), with the sizes before and after:
--   runbook run runbooks/maintenance_monthly.lua -p tables=media_assets,media_usage_logs
runbook {
  name = "maintenance_monthly",
  description = "REINDEX and VACUUM ANALYZE the listed tables, reporting each table's size before and after",
  params = {
    database_url = { type = "secret", env = "DATABASE_URL", required = true, description = "the PostgreSQL database" },
    tables = { type = "list", required = true, description = "tables (schema.table or table), comma-separated" },
  },
  lock = "maintenance_monthly",
}

local pg = require "runbook.pg"
local util = require "runbook.util"
local conn = db.connect(params.database_url)

local function size(name)
  return conn:scalar("select pg_total_relation_size($1::text::regclass)::bigint", name)
end

step("check tables", { description = "Every listed table exists" }, function()
  local missing = pg.missing_tables(conn, params.tables)
  if #missing > 0 then fail("no such table(s): " .. table.concat(missing, ", ")) end
  return #params.tables
end)

local total_before, total_after = 0, 0
for _, name in ipairs(params.tables) do
  local r = step("maintain " .. name, { description = "REINDEX TABLE, then VACUUM ANALYZE" }, function()
    -- A run cut off during this step (a kill, a timeout) left invalid indexes behind: drop them
    -- first, so the step ends the same however often it ran.
    local leftovers = pg.drop_reindex_leftovers(conn, name)
    if #leftovers > 0 then
      log.warn("dropped what an interrupted REINDEX left", { table = name, indexes = table.concat(leftovers, ", ") })
    end
    local before = size(name)
    -- CONCURRENTLY: reads and writes go on meanwhile (each statement is its own transaction here).
    conn:execute(conn:scalar("select format('REINDEX TABLE CONCURRENTLY %s', $1::text::regclass)", name))
    pg.vacuum_analyze(conn, { name })
    local after = size(name)
    log.info("table maintained", { table = name, before = util.format_bytes(before), after = util.format_bytes(after) })
    return { before = before, after = after }
  end)
  if r then -- nil when the step was skipped by hand
    total_before, total_after = total_before + r.before, total_after + r.after
  end
end

step("report", function()
  return { tables = #params.tables, before = total_before, after = total_after,
           saved = util.format_bytes(total_before - total_after) }
end)
