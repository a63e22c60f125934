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

--- Seconds in an interval as PostgreSQL prints it ("1 day 02:03:04.5" -> 93784.5).
---@param interval string|number
---@return number
function pg.seconds(interval) end

--- Sessions whose transaction is older than `older_than`, oldest first: { pid, user, database,
--- application, client, backend_start, xact_start, state, wait_event, xact_seconds, query, ... }.
---@param c DbConnection
---@param opts? { older_than?: Duration, state?: string }
---@return table[]
function pg.long_running(c, opts) end

--- Sessions idle in a transaction longer than `older_than` (default "1m"), as `long_running`.
---@param c DbConnection
---@param opts? { older_than?: Duration }
---@return table[]
function pg.idle_in_transaction(c, opts) end

--- Who blocks whom: `waiting` (each with `blocked_by` pids) and `roots` (blockers waiting on nobody).
---@param c DbConnection
---@param opts? { database?: string }
---@return { waiting: table[], roots: table[] }
function pg.blocking(c, opts) end

--- Cancels a session's statement if it is still the session looked at (pid, backend_start,
--- xact_start of a row from long_running/idle_in_transaction/blocking). Returns whether it was sent.
---@param c DbConnection
---@param session table
---@return boolean
function pg.cancel(c, session) end

--- Terminates a session, with the same guard as `cancel`. Returns whether it was terminated.
---@param c DbConnection
---@param session table
---@return boolean
function pg.terminate(c, session) end

--- Terminates every session of a role but this one; returns their pids.
---@param c DbConnection
---@param role string
---@return integer[]
function pg.terminate_sessions(c, role) end

--- Whether a role exists.
---@param c DbConnection
---@param role string
---@return boolean
function pg.role_exists(c, role) end

--- Sets a role's password from a secret, sending only its SCRAM-SHA-256 verifier.
---@param c DbConnection
---@param role string
---@param password Secret
function pg.set_password(c, role, password) end

--- Whether the server is a primary (not in recovery).
---@param c DbConnection
---@return boolean
function pg.is_primary(c) end

--- Waits until every replica (or this replica) has replayed `lsn` (default: the primary's
--- current WAL position); fails after `timeout` (default "30s"). Returns the seconds waited.
---@param c DbConnection
---@param lsn? string
---@param timeout? Duration
---@return number
function pg.wait_for_replication(c, lsn, timeout) end

--- Estimated table bloat from the planner's statistics, largest first: { schema, table, pages,
--- expected_pages, bloat_bytes, bloat_pct }.
---@param c DbConnection
---@param opts? { min_bytes?: integer, schema?: string }
---@return table[]
function pg.table_bloat(c, opts) end

--- Estimated btree index bloat, largest first: { schema, index, table, pages, expected_pages,
--- bloat_bytes, bloat_pct }.
---@param c DbConnection
---@param opts? { min_bytes?: integer, schema?: string }
---@return table[]
function pg.btree_bloat(c, opts) end

--- REINDEX INDEX CONCURRENTLY that first drops an interrupted run's leftovers and retries a
--- lock timeout. Returns { index, attempts, dropped }.
---@param c DbConnection
---@param index string
---@param opts? { lock_timeout?: Duration, retries?: integer }
---@return { index: string, attempts: integer, dropped: string[] }
function pg.reindex_concurrently(c, index, opts) end

return pg
