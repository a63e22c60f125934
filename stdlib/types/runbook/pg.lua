---@meta runbook.pg
-- local pg = require "runbook.pg"

---@class runbook.pg
local pg = {}

--- Size of the current database: { database, bytes, pretty }.
---@param c DbConnection
---@return { database: string, bytes: integer, pretty: string }
function pg.database_size(c) end

--- Tables with their total size, largest first: { schema, table, bytes, pretty }.
---@param c DbConnection
---@param opts? { limit?: integer, schema?: string }
---@return table[]
function pg.table_sizes(c, opts) end

--- Indexes, optionally of the given tables: { schema, table, index, definition }.
---@param c DbConnection
---@param tables? string[]
---@return table[]
function pg.indexes(c, tables) end

--- Row-level security of the given tables: name -> { exists, enabled, forced, policies }.
---@param c DbConnection
---@param tables string[]
---@return table<string, table>
function pg.rls(c, tables) end

--- The tables of `expected` that do not exist in `schema` (default public).
---@param c DbConnection
---@param expected string[]
---@param schema? string
---@return string[]
function pg.missing_tables(c, expected, schema) end

--- Client connections by state, with max_connections: { total, by_state, max, used }.
---@param c DbConnection
---@return table
function pg.connections(c) end

--- Connections idle longer than `older_than` (never this one), longest idle first:
--- { pid, user, database, application, idle_seconds }.
---@param c DbConnection
---@param opts? { older_than?: string, database?: string, user?: string, application?: string }
---@return table[]
function pg.idle_connections(c, opts) end

--- Terminates connections idle longer than `older_than` (never this one); under --dry-run only
--- lists them. Returns { pid, user, database, application, idle_seconds } for each.
---@param c DbConnection
---@param opts? { older_than?: string, database?: string, user?: string, application?: string }
---@return table[]
function pg.kill_idle(c, opts) end

--- VACUUM ANALYZE each table; returns the tables done.
---@param c DbConnection
---@param tables string[]
---@return string[]
function pg.vacuum_analyze(c, tables) end

--- Drops the invalid `_ccnew`/`_ccold` indexes an interrupted REINDEX CONCURRENTLY left on a
--- table; returns the indexes dropped.
---@param c DbConnection
---@param table_name string
---@return string[]
function pg.drop_reindex_leftovers(c, table_name) end

--- REINDEX each index; returns the indexes done.
---@param c DbConnection
---@param indexes string[]
---@return string[]
function pg.reindex(c, indexes) end

--- Replication lag per replica (on a primary) or the replay delay (on a replica); empty
--- without replication.
---@param c DbConnection
---@return table[]
function pg.replication_lag(c) end

--- Slowest statements from pg_stat_statements, or nil and the reason it is unavailable.
---@param c DbConnection
---@param opts? { limit?: integer }
---@return table[]|nil, string|nil
function pg.slow_queries(c, opts) end

return pg
