---@meta runbook.checks
-- local checks = require "runbook.checks"

---@class CheckResult
---@field ok boolean Whether the check passed (a warning still passes).
---@field level "ok"|"warning"|"critical"
---@field summary string One line for people (never a secret's value).

---@class runbook.checks
local checks = {}

--- "ok", "warning" or "critical" for a value against two thresholds (value >= threshold).
--- Example: `checks.level(85, 80, 95) --> "warning"`
---@param value number
---@param warn? number
---@param critical? number
---@return "ok"|"warning"|"critical"
function checks.level(value, warn, critical) end

--- Required environment variables; only names are reported (`missing`, `present`).
--- Example: `checks.assert(checks.env{ "DATABASE_URL", "SUPABASE_URL" })`
---@param names string[]
---@return CheckResult
function checks.env(names) end

--- A file that must not mention any of `names` (no service-role key in the frontend env file);
--- offending lines are reported by number (`found = { {name, line} }`), never their text.
--- Example: `checks.file_without("frontend/.env.production", { "SUPABASE_SERVICE_ROLE_KEY" })`
---@param path string
---@param names string[]
---@return CheckResult
function checks.file_without(path, names) end

--- HTTP health of named services, each a URL or `{ url, expect?, json_path?, equals?, timeout? }`;
--- `services[name] = { ok, status, ms, error }`.
--- Example: `checks.http({ api = "http://10.0.0.5:3000/api/health", edge = { url = edge_url, json_path = "status", equals = "ok" } })`
---@param services table<string, string|table>
---@param opts? { timeout?: Duration }
---@return CheckResult
function checks.http(services, opts) end

--- Database connectivity: `select current_user, current_database(), version()` (PostgreSQL).
--- Example: `checks.database(db.connect(secret("DATABASE_URL")))`
---@param conn DbConnection
---@return CheckResult
function checks.database(conn) end

--- PostgreSQL: client connections against max_connections (warn 80%, critical 95%).
--- Example: `checks.pg_connections(conn, { warn = 0.7 })`
---@param conn DbConnection
---@param opts? { warn?: number, critical?: number }
---@return CheckResult
function checks.pg_connections(conn, opts) end

--- PostgreSQL: the oldest open transaction (warn past 5m, critical past 1h).
--- Example: `checks.pg_long_transactions(conn, { warn = "10m" })`
---@param conn DbConnection
---@param opts? { warn?: Duration, critical?: Duration }
---@return CheckResult
function checks.pg_long_transactions(conn, opts) end

--- PostgreSQL: worst replica lag in seconds (warn 30, critical 300); ok without replication.
--- Example: `checks.pg_replication_lag(conn)`
---@param conn DbConnection
---@param opts? { warn?: number, critical?: number }
---@return CheckResult
function checks.pg_replication_lag(conn, opts) end

--- PostgreSQL: estimated table and btree bloat (warn 30%, critical 60%) of objects wasting 10 MiB+.
--- Example: `checks.pg_bloat(conn, { min_bytes = 1048576 })`
---@param conn DbConnection
---@param opts? { warn?: number, critical?: number, min_bytes?: integer }
---@return CheckResult
function checks.pg_bloat(conn, opts) end

--- PostgreSQL: transaction ID wraparound age against the 2^31 limit (warn 50%, critical 75%).
--- Example: `checks.pg_wraparound(conn)`
---@param conn DbConnection
---@param opts? { warn?: number, critical?: number }
---@return CheckResult
function checks.pg_wraparound(conn, opts) end

--- A bucket reachable with the store's credentials.
--- Example: `checks.bucket(storage.open("s3://mam-staging-prod"))`
---@param store Store
---@return CheckResult
function checks.bucket(store) end

--- Disk usage over SSH (`df -P -k`): warning at 80%, critical at 90% used by default.
--- Example: `checks.disk(ssh.connect("web-1"), { path = "/srv", warn = 80, critical = 90 })`
---@param session SshSession
---@param opts? { path?: string, warn?: number, critical?: number }
---@return CheckResult
function checks.disk(session, opts) end

--- TLS certificates: warning under warn_days (30), critical under critical_days (7) or when the
--- chain does not verify; `hosts[host] = { level, days_left, not_after, valid, error }`.
--- Example: `checks.tls({ "app.example.com", "api.example.com:8443" }, { warn_days = 30, critical_days = 7 })`
---@param hosts string[]
---@param opts? { warn_days?: integer, critical_days?: integer, ca?: string, server_name?: string }
---@return CheckResult
function checks.tls(hosts, opts) end

--- Storage quota: warning at 80%, critical at 95% of the limit by default.
--- Example: `checks.quota(row.used_bytes, row.limit_bytes)`
---@param used number bytes
---@param limit number bytes
---@param opts? { warn?: number, critical?: number }
---@return CheckResult
function checks.quota(used, limit, opts) end

--- Fails the step with the summaries of the results that are not ok; returns them otherwise.
--- Example: `checks.assert(checks.env{ "DATABASE_URL" }, checks.database(conn))`
---@param ... CheckResult
---@return CheckResult ...
function checks.assert(...) end
