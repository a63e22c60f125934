-- Bloated btree indexes rebuilt without blocking writes, as DBA teams run it: refresh the
-- statistics, estimate each index's bloat, and REINDEX CONCURRENTLY those past the limits, one
-- step per index. A run killed mid-REINDEX leaves an invalid `_ccnew` index behind; the resumed
-- step drops it before it reindexes again, and a lock timeout is retried.
--   runbook run runbooks/reindex_bloated.lua -p min_bloat_pct=30 -p min_bloat_bytes=104857600
runbook {
  name = "reindex_bloated",
  description = "Estimate btree index bloat and REINDEX CONCURRENTLY the indexes past the limits, one step each",
  params = {
    database_url = { type = "secret", env = "DATABASE_URL", required = true, description = "the PostgreSQL server" },
    schema = { type = "string", description = "only indexes of this schema" },
    min_bloat_pct = { type = "number", default = 30, description = "reindex when at least this share is waste" },
    min_bloat_bytes = { type = "integer", default = 10485760, description = "and at least this many bytes" },
    lock_timeout = { type = "duration", default = "5s", description = "give up waiting for a lock after this (then retry)" },
    max_indexes = { type = "integer", default = 20, description = "reindex at most this many, largest waste first" },
  },
  lock = "reindex_bloated",
}

local pg = require "runbook.pg"
local conn = db.connect(params.database_url)

step("analyze", { description = "Fresh statistics for the estimates" }, function()
  conn:execute("analyze")
end)

local bloated = step("estimate", { description = "Btree indexes past both limits, largest waste first" }, function()
  local out = {}
  for _, ix in ipairs(pg.btree_bloat(conn, { schema = params.schema, min_bytes = params.min_bloat_bytes })) do
    if ix.bloat_pct >= params.min_bloat_pct and #out < params.max_indexes then
      out[#out + 1] = { index = ix.schema .. "." .. ix.index, table = ix.table, bloat_bytes = ix.bloat_bytes,
                        bloat_pct = ix.bloat_pct }
    end
  end
  return out
end)

for _, ix in ipairs(bloated) do
  step("reindex " .. ix.index, { description = "REINDEX INDEX CONCURRENTLY, leftovers of an interrupted run dropped first" }, function()
    local before = conn:scalar("select pg_relation_size($1::regclass)", ix.index)
    local r = pg.reindex_concurrently(conn, ix.index, { lock_timeout = params.lock_timeout })
    local after = conn:scalar("select pg_relation_size($1::regclass)", ix.index)
    return { before = before, after = after, attempts = r.attempts, dropped = r.dropped }
  end)
end
