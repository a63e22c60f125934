---@meta
-- LuaLS type stubs for the globals every runbook has. Point your editor at stdlib/types/
-- (e.g. .luarc.json: { "workspace.library": ["path/to/runbook/stdlib/types"] }).

---@alias Duration string|number A duration such as "500ms", "30s", "5m", "2h", "1h30m", or seconds.

---@class ParamSpec
---@field type? "string"|"integer"|"number"|"boolean"|"duration"|"enum"|"list"|"secret" Defaults to "string".
---@field required? boolean The run does not start without it.
---@field default? any Used when no value is given (not for secrets).
---@field env? string Environment variable to read the value from.
---@field min? number|Duration Lower bound (number, duration, string length, list length).
---@field max? number|Duration Upper bound.
---@field pattern? string Regular expression the whole value must match.
---@field choices? string[] The allowed values of an enum.
---@field description? string Shown by `runbook plan`.

---@class RunbookDeclaration
---@field name string The runbook's name, as `runbook history --runbook` filters it.
---@field description? string
---@field params? table<string, ParamSpec>
---@field lock? string One run at a time holding this name, across every runner of the journal.
---@field rollback? "auto"|"manual" "auto" runs the undo of completed steps, newest first, when a step fails.

--- Declares the runbook. Must come before the first step. Validates every param at once.
--- Example: `runbook { name = "pg-vacuum", params = { table = { type = "string", required = true } }, lock = "db" }`
---@param decl RunbookDeclaration
function runbook(decl) end

--- The validated param values, by name. Secrets are `Secret` values.
---@type table<string, any>
params = {}

--- JSON null: a table keeps a key whose value is `null` (db rows, step results).
---@type lightuserdata
null = nil

---@class StepBackoff
---@field base? Duration First delay (default 1s); doubles per attempt, with jitter.
---@field max? Duration Longest delay (default 60s).

---@class StepOptions
---@field description? string Shown by `runbook plan` and in the docs.
---@field retries? integer Extra attempts after a failure (0 to 100).
---@field backoff? Duration|StepBackoff Delay between attempts.
---@field timeout? Duration Each attempt is stopped after this long.
---@field when? boolean|fun(): boolean false records the step as skipped.
---@field continue_on_error? boolean A final failure is recorded and the run goes on (step returns nil).
---@field undo? fun(result: any) Run on rollback with the step's recorded result.

--- Runs `fn` as a checkpointed step and returns its result. On resume a completed step does not
--- run again: `step` returns the recorded result. Results must be plain data (nil, boolean,
--- number, string, `null`, tables of those). `fn` receives the attempt number (1, 2, ...).
--- Example: `local dump = step("dump", { retries = 3, timeout = "10m" }, function() return { key = "x" } end)`
---@generic T
---@param name string Unique in the run; steps made in a loop carry the loop key.
---@param opts_or_fn StepOptions|fun(attempt: integer): T
---@param fn? fun(attempt: integer): T
---@return T
function step(name, opts_or_fn, fn) end

---@class ApprovalPolicy
---@field approvers? string[] Who may decide: user names and "group:NAME" (runbook.toml [serve.users]). Default: anyone but the requester.
---@field quorum? integer Distinct people who must approve (default 1).
---@field self_approval? boolean Whether the person who started or enqueued the run may approve it (default false).
---@field timeout? string How long the gate waits ("30m", "4h"); default forever.
---@field on_timeout? "cancel"|"fail" What a timeout does: cancel (rolled back with rollback = "auto"; the default) or fail (resumable).
---@field via? ("cli"|"repl"|"web"|"api"|"local")[] Where decisions may come from (default: all). `{ "web", "api" }` takes only logged-in decisions: at the command line a person is whoever their OS account says.

--- An approval gate. Without a policy: asks y/N on a terminal, passes with --yes, and otherwise
--- stops the run in `waiting_approval` until `runbook approve RUN`. With a policy, only the people
--- it names decide (never the requester unless `self_approval = true`), `quorum` of them, from
--- `runbook approve`, the REPL or the console; a worker then resumes the run. A rejection cancels.
--- Example: `approve("drop the old tables on production?", { approvers = { "group:dba" }, quorum = 2, timeout = "4h" })`
---@param message string
---@param policy? ApprovalPolicy
---@return boolean approved
function approve(message, policy) end

---@class Secret
--- A value that prints as `<secret:NAME>` everywhere; primitives receive the real value.
--- Concatenating a secret with a string gives a secret.
local Secret = {}

--- The secret's name.
--- Example: `pw:name()`
---@return string
function Secret:name() end

---@class SecretSpec
---@field env? string Environment variable holding the value.
---@field file? string File holding the value (relative to the runbook's folder).
---@field value? string|Secret A value the runbook made (a generated password); `name` is then required.
---@field name? string Name shown as `<secret:NAME>`.

--- Reads a secret from an environment variable (`secret("DB_PASSWORD")`) or a file
--- (`secret{file = "pw.txt", name = "db"}`), or makes one of a value the runbook generated
--- (`secret{ value = runbook.util.random_password(), name = "new_pw" }`).
--- Example: `local pw = secret{ env = "PGPASSWORD", name = "pg" }`
---@param spec string|SecretSpec
---@return Secret
function secret(spec) end

--- An environment variable, or `default` when it is unset or empty.
--- Example: `local region = env("AWS_REGION", "eu-west-1")`
---@param name string
---@param default? any
---@return string|any
function env(name, default) end

--- Waits for a duration.
--- Example: `sleep("5s")`
---@param d Duration
function sleep(d) end

--- The current time, UTC, RFC 3339 ("2026-11-22T03:15:02Z").
--- Example: `log.info("started", { at = now() })`
---@return string
function now() end

---@class CurrentRun
---@field id string The run id, as `runbook show` takes it.
---@field runbook string The declared name.
---@field trigger string "cli", "enqueue", "schedule:NAME", ...
---@field resumed boolean Whether this process resumed the run (a step may have run before).
---@field dry_run boolean Whether this is a dry run (`--dry-run`): primitives that change the world only say what they would do.

--- The run being executed; nil before `runbook{}` and in `plan`/`check`.
--- Example: `local r = current_run(); if r and r.resumed then log.warn("resumed run " .. r.id) end`
---@return CurrentRun?
function current_run() end

--- Fails the running step (or the run) with a message.
--- Example: `if lag > 30 then fail("replica lag " .. lag .. "s is over 30s") end`
---@param message string
function fail(message) end

--- Logs a line into the run's event stream (same as log.info).
--- Example: `print("rows:", #rows)`
---@param ... any
function print(...) end

---@class ExecOptions
---@field [integer] string The command and its arguments (argv form, no shell). Never a secret.
---@field shell? string An explicit shell command line, run with /bin/sh -c. Never a secret.
---@field env? table<string, string|Secret> Extra environment variables (secrets allowed).
---@field cwd? string Working directory.
---@field stdin? string|Secret Bytes written to the command's standard input.
---@field timeout? Duration Kill the command's process group after this long.
---@field check? boolean Raise on a non-zero exit (default true).
---@field readonly? boolean The command changes nothing: it runs under --dry-run too.
---@field echo? boolean Stream output lines to the log (default true).

---@class ExecResult
---@field code integer
---@field stdout string
---@field stderr string
---@field ms integer

--- Runs a local command: `exec{"pg_dump", "-Fc", "app"}` or `exec{shell = "a | b"}`.
--- Example: `local r = exec{ "pg_isready", "-h", "127.0.0.1", check = false }`
---@param opts ExecOptions
---@return ExecResult
function exec(opts) end

---@class log
log = {}

--- Logs at debug level (shown with -v or RUNBOOK_DEBUG=1).
--- Example: `log.debug("plan", { tables = 3 })`
---@param message string
---@param fields? table
function log.debug(message, fields) end

--- Logs at info level.
--- Example: `log.info("backup written", { key = m.key, bytes = m.bytes })`
---@param message string
---@param fields? table
function log.info(message, fields) end

--- Logs at warn level.
--- Example: `log.warn("certificate expires soon", { host = h, days = d })`
---@param message string
---@param fields? table
function log.warn(message, fields) end

--- Logs at error level.
--- Example: `log.error("health check failed", { host = h })`
---@param message string
---@param fields? table
function log.error(message, fields) end

---@class DbOptions
---@field pool_size? integer Connections in the pool (default 4; 1 for sqlite::memory:).
---@field connect_timeout? Duration Give up connecting after this long (default 10s).
---@field statement_timeout? Duration PostgreSQL: cancel statements running longer.
---@field ssl_mode? "disable"|"allow"|"prefer"|"require"|"verify-ca"|"verify-full" PostgreSQL TLS mode.
---@field ssl_root_cert? string PostgreSQL: CA certificate file for verify-ca / verify-full.
---@field lock_timeout? Duration PostgreSQL: give up waiting for a lock after this long (every connection).
---@field idle_in_transaction_session_timeout? Duration PostgreSQL: end sessions idle in a transaction this long.
---@field search_path? string PostgreSQL: the schemas to look in, as `SET search_path` takes them.
---@field role? string PostgreSQL: `SET ROLE` for every connection.
---@field application_name? string PostgreSQL: shown in pg_stat_activity (default `runbook/<run>/<step>#<attempt>`).

---@class DbConnection
--- A database connection (a pool underneath), or a transaction on one. Parameters are bound
--- ($1, $2 ... for PostgreSQL, ? for SQLite), never interpolated.
local DbConnection = {}

--- Runs a statement and returns its rows, each a table keyed by column name (NULL is `null`).
--- Example: `pg:query("select pid, state from pg_stat_activity where state = $1", "idle")`
---@param sql string
---@param ... any parameters
---@return table[]
function DbConnection:query(sql, ...) end

--- Exactly one row, or an error saying how many there were.
--- Example: `local row = pg:query_one("select count(*) as n from users")`
---@param sql string
---@param ... any parameters
---@return table
function DbConnection:query_one(sql, ...) end

--- The first column of the one row.
--- Example: `local size = pg:scalar("select pg_database_size(current_database())")`
---@param sql string
---@param ... any parameters
---@return any
function DbConnection:scalar(sql, ...) end

--- Runs a statement and returns the number of rows it affected. Under --dry-run it does nothing.
--- Example: `pg:execute("vacuum analyze orders")`
---@param sql string
---@param ... any parameters
---@return integer
function DbConnection:execute(sql, ...) end

--- Runs fn(tx) in a transaction: committed when fn returns, rolled back when it raises.
--- Example: `pg:transaction(function(tx) tx:execute("update jobs set state = $1", "paused") end)`
---@generic T
---@param fn fun(tx: DbConnection): T
---@return T
function DbConnection:transaction(fn) end

--- Streams the rows of a statement to fn, one at a time, without holding the result set;
--- fn returning false stops early. Returns the number of rows seen. The callback must not use
--- the same transaction (or a one-connection sqlite::memory: pool).
--- Example: `pg:each("select id from big_table", function(row) n = n + 1 end)`
---@param sql string
---@param ... any parameters, then fun(row: table): boolean|nil
---@return integer
function DbConnection:each(sql, ...) end

--- Runs a file of SQL statements (a migration) in one transaction; relative paths are from
--- the runbook's folder. An error names the failing statement's line and nothing is applied.
--- Example: `pg:execute_file("migrations/0042_media.sql")`
---@param path string
---@return integer statements
function DbConnection:execute_file(path) end

--- Runs fn(s) with one connection of the pool pinned: SET, temporary tables, advisory locks
--- and BEGIN/COMMIT all reach the same server session. The connection is closed afterwards,
--- so nothing the session set reaches another statement (a transaction left open rolls back).
--- Example: `pg:session(function(s) s:execute("set lock_timeout = '2s'"); s:execute("alter table t add c int") end)`
---@generic T
---@param fn fun(s: DbConnection): T
---@return T
function DbConnection:session(fn) end

--- Runs a statement that changes things and returns rows (INSERT ... RETURNING,
--- `select pg_terminate_backend(pid)`). A change: under --dry-run it does nothing and returns no rows.
--- Example: `local r = pg:execute_returning("delete from jobs where state = $1 returning id", "dead")`
---@param sql string
---@param ... any parameters
---@return table[]
function DbConnection:execute_returning(sql, ...) end

--- Runs the one query of a .sql file (relative to the runbook's folder) with parameters.
--- Example: `pg:query_file("sql/long_transactions.sql", "5 minutes")`
---@param path string
---@param ... any parameters
---@return table[]
function DbConnection:query_file(path, ...) end

--- PostgreSQL: sets a role's password from a secret, sending only its SCRAM-SHA-256 verifier
--- (computed here): the password never reaches the server log, pg_stat_activity or the journal.
--- Example: `pg:set_password("app", secret{ value = runbook.util.random_password(), name = "app_pw" })`
---@param role string
---@param password Secret
function DbConnection:set_password(role, password) end

--- Closes the pool.
--- Example: `pg:close()`
function DbConnection:close() end

---@class db
db = {}

--- JSON null, as in rows (same as the global `null`).
---@type lightuserdata
db.null = nil

--- Connects to postgres://user:pw@host:port/db, mysql://user:pw@host:port/db, sqlite://PATH
--- or sqlite::memory:.
--- The URL may be a secret; connection errors name host, port and database, never the password.
--- Example: `local pg = db.connect(secret{ env = "DATABASE_URL" })`
---@param url string|Secret
---@param opts? DbOptions
---@return DbConnection
function db.connect(url, opts) end

---@class HttpOptions
---@field method? string "GET" (default), "POST", ... (`http.request` only).
---@field url? string|Secret The URL (`http.request` only; the shorthands take it first).
---@field headers? table<string, string|Secret> Secret values never show in logs or errors.
---@field bearer? string|Secret Sends `Authorization: Bearer <token>`.
---@field query? table<string, string|number|boolean|Secret> Appended to the URL, encoded.
---@field json? any A body sent as JSON (Content-Type: application/json); secrets inside are sent as their values.
---@field body? string|Secret A raw body.
---@field form? table<string, string|number|Secret> A form-encoded body.
---@field timeout? Duration The whole request, each attempt (default 30s).
---@field retries? integer More attempts after a transport error or a 429/502/503/504 (default 0). POST and PATCH are repeated only when they were not sent, or after a 429/503.
---@field retry_delay? Duration First delay between attempts, doubling (default 1s, at most 30s).
---@field expect? integer|integer[]|"any" Accepted statuses (default: 2xx, and 3xx when follow_redirects = false); another raises.
---@field follow_redirects? boolean Default true (at most 10; never to another origin when the request carries secrets other than Authorization).
---@field insecure? boolean Do not verify the TLS certificate (logged as a warning).
---@field ca? string A PEM file of a private CA to trust besides the system's (relative to the runbook).
---@field readonly? boolean The request changes nothing: it runs in --dry-run even when not GET/HEAD/OPTIONS.

---@class HttpResponse
---@field status integer
---@field headers table<string, string> Lowercase names; repeated headers joined with ", ".
---@field body string
---@field ms integer Time of the final attempt, in milliseconds.
---@field url string The final URL, after redirects, without credentials.
local HttpResponse = {}

--- The body parsed as JSON (null as `null`, arrays as arrays); an error if it is not JSON.
--- Example: `local body = http.get("https://api.example.com/health"):json()`
---@return any
function HttpResponse:json() end

---@class HealthOptions
---@field timeout? Duration Give up after this long (default 2m); the last attempt lands on it.
---@field interval? Duration Between attempts (default 5s).
---@field attempt_timeout? Duration Each attempt (default 10s).
---@field expect? integer|integer[]|"any" Healthy statuses (default 2xx).
---@field body_contains? string The body must contain this text.
---@field json_path? string Dotted path into a JSON body: "status", "checks.db.status", "items.1.state" (1-based).
---@field equals? any The value at json_path; without it the value must exist and be neither false nor null.
---@field headers? table<string, string|Secret>
---@field bearer? string|Secret
---@field query? table<string, string|number|boolean|Secret>
---@field follow_redirects? boolean
---@field insecure? boolean
---@field ca? string

---@class http
http = {}

--- Sends a request. Verifies TLS; raises on a transport error or an unexpected status, with the
--- method, URL (credentials stripped), status and the start of the body. Under --dry-run only
--- GET, HEAD, OPTIONS and `readonly` requests are sent.
--- Example: `http.request{ method = "POST", url = hook, json = { text = "deployed" } }`
---@param opts HttpOptions
---@return HttpResponse
function http.request(opts) end

--- Example: `local r = http.get("https://app.example.com/api/health", { timeout = "5s" })`
---@param url string|Secret
---@param opts? HttpOptions
---@return HttpResponse
function http.get(url, opts) end

--- Example: `http.post(webhook, { json = { text = "backup done" } })`
---@param url string|Secret
---@param opts? HttpOptions
---@return HttpResponse
function http.post(url, opts) end

--- Example: `http.put(url, { body = "{}" })`
---@param url string|Secret
---@param opts? HttpOptions
---@return HttpResponse
function http.put(url, opts) end

--- Example: `http.patch(url, { json = { paused = true } })`
---@param url string|Secret
---@param opts? HttpOptions
---@return HttpResponse
function http.patch(url, opts) end

--- Example: `http.delete(url .. "/cache")`
---@param url string|Secret
---@param opts? HttpOptions
---@return HttpResponse
function http.delete(url, opts) end

--- Polls `url` until it answers with an expected status (default 2xx) and the body checks hold,
--- logging each attempt; returns the healthy response, or raises after `timeout` with the last
--- answer.
--- Example: `http.wait_healthy("http://10.0.0.5:8080/api/health", { timeout = "2m", json_path = "status", equals = "ok" })`
---@param url string|Secret
---@param opts? HealthOptions
---@return HttpResponse
function http.wait_healthy(url, opts) end

--- A load test as a step: virtual users (`stages` or `vus`) or a constant `rate`, against the one
--- request described (method, headers, body as in `http.request`; each sent once, never
--- retried). Fails when a threshold is crossed, naming it and the numbers; logs a progress line
--- every few seconds. Under `--dry-run` nothing is sent.
--- Example: `http.load{ url = base .. "/api/health", stages = { { duration = "2m", target = 100 } }, thresholds = { p95 = "2s", error_rate = 0.01 } }`
---@param opts LoadOptions
---@return LoadReport
function http.load(opts) end

---@class LoadStage
---@field duration Duration
---@field target integer Virtual users at the end of the stage (ramping linearly from the stage before, or 0).

---@class LoadOptions: HttpOptions
---@field url string|Secret What to load (only this).
---@field stages? LoadStage[] Virtual users ramping: each sends its next request when its last is answered, over reused connections.
---@field vus? integer A constant number of virtual users, for `duration`.
---@field think? Duration With virtual users: each pauses this long between its requests (k6's `sleep(1)`).
---@field rate? number Or a constant arrival rate: requests started per second, for `duration`.
---@field duration? Duration With `vus` or `rate`.
---@field max_vus? integer With `rate`: requests in flight at most (default 100); one due when none is free is counted as dropped.
---@field thresholds? {p50?: Duration, p90?: Duration, p95?: Duration, p99?: Duration, max?: Duration, error_rate?: number} Crossing one fails the call with the numbers.
---@field report_every? Duration A one-line progress summary this often (default 5s).

---@class LoadReport
---@field requests integer
---@field errors integer Transport errors and unexpected statuses.
---@field dropped integer `rate` only: requests not started because `max_vus` were in flight (they count as errors in error_rate).
---@field error_rate number (errors + dropped) / (requests + dropped).
---@field rps number Requests per second.
---@field duration number Seconds.
---@field peak_vus integer
---@field statuses table<string, integer> By status code.
---@field latency {min?: number, mean?: number, p50?: number, p90?: number, p95?: number, p99?: number, max?: number} Seconds, failed requests included (an HDR histogram, 3 significant digits).
---@field causes string[] The first few distinct causes of errors.

---@class TlsCertificate
---@field host string "host:port" as connected to.
---@field subject string e.g. "CN=db.example.com, O=Example"
---@field issuer string
---@field sans string[] DNS names and IP addresses the certificate is for.
---@field not_before string RFC 3339, UTC.
---@field not_after string RFC 3339, UTC.
---@field days_left integer Whole days until not_after; negative once expired.
---@field serial string Lowercase hex.
---@field chain_length integer Certificates the server sent, its own included.
---@field valid boolean The chain verifies against the trusted roots, for this name, now.
---@field error? string Why not, when `valid` is false.

---@class TlsOptions
---@field timeout? Duration Connect and handshake (default 10s).
---@field server_name? string The name to ask for (SNI) and verify, when it differs from the host.
---@field ca? string A PEM file of a private CA to trust besides the system's.
---@field warn_days? integer `check_expiry` only: the horizon (default 30).

---@class tls
tls = {}

--- Connects to "host:port" (or "host", port 443) and describes its certificate, whether or not
--- it validates: an expired or self-signed certificate is reported with `valid = false`.
--- Example: `tls.certificate("db.example.com:5432").days_left`
---@param target string
---@param opts? TlsOptions
---@return TlsCertificate
function tls.certificate(target, opts) end

--- The certificates of `hosts` that expire within `warn_days` (expired ones included), soonest
--- first; empty when none. A host that cannot be reached is an error naming it.
--- Example: `tls.check_expiry({ "example.com", "api.example.com" }, { warn_days = 21 })`
---@param hosts string[]
---@param opts? TlsOptions
---@return {host: string, days_left: integer, not_after: string}[]
function tls.check_expiry(hosts, opts) end

---@class PrometheusOptions
---@field token? string|Secret A bearer token (Authorization: Bearer).
---@field user? string Basic auth user, with `password`.
---@field password? string|Secret Basic auth password.
---@field headers? table<string, string|Secret> More headers (a tenant header of Cortex or Mimir, say).
---@field timeout? Duration Per request (default 30s).
---@field ca? string A PEM file of a private CA to trust besides the system's.
---@field insecure? boolean Skip TLS verification (never in production).

---@class MetricSample
---@field labels table<string, string> The series' labels (`__name__` included when Prometheus gives it).
---@field value number|string The sample's value (a whole number as an integer; NaN and ±Inf as Lua numbers); text for a string result.
---@field time number Unix seconds.

---@class MetricSeries
---@field labels table<string, string>
---@field values {[1]: number, [2]: number}[] (time, value) points, oldest first.

---@class Prometheus
local Prometheus = {}

--- An instant query: one sample per series (a scalar result is one sample without labels).
--- Example: `prom:query('sum by (status) (rate(http_requests_total[5m]))')`
---@param promql string
---@param opts? {at?: number} Evaluate at this Unix time instead of now.
---@return MetricSample[]
function Prometheus:query(promql, opts) end

--- The one number an instant query returns, or nil when it has no samples or its value is NaN
--- (a ratio without traffic, 0/0): no data is not zero. More than one series is an error naming
--- how many and the first one's labels. Warnings Prometheus sends (a partial answer) are logged.
--- Example: `local rate = prom:value('sum(rate(http_requests_total{status=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))')`
---@param promql string
---@param opts? {at?: number}
---@return number?
function Prometheus:value(promql, opts) end

--- A range query: the series over the last `last` (or from `start` to `stop`, Unix seconds;
--- `["end"]` works too), every `step` (default: about 100 points, at least 1s apart).
--- Example: `prom:range('up{job="api"}', { last = "10m", step = "30s" })`
---@param promql string
---@param opts {last?: Duration, start?: number, stop?: number, step?: Duration}
---@return MetricSeries[]
function Prometheus:range(promql, opts) end

---@class AnalysisCheck
---@field name string
---@field query? string PromQL giving one number (or give `fn`).
---@field fn? fun(): number? A function giving one number, or nil for no data (a health endpoint, a log count ...).
---@field below? number|string The value must stay below this: a number, "5%" or a duration in seconds ("2s").
---@field above? number|string Or above this.
---@field for? Duration How long it must be broken before the check fails (like an alert rule's `for`; default: at once).

---@class AnalysisOptions
---@field prometheus? Prometheus Where `query` checks are asked.
---@field checks (string|AnalysisCheck)[] Rules as alert rules are written ("error_rate < 0.05 for 5m", "p95_latency < 2s for 2m"), or tables.
---@field queries? table<string, string|fun(): number?> The query (or function) of each rule's name.
---@field duration Duration How long the stage is watched; it passes when this goes by with no check failed.
---@field interval? Duration Between samples (default 15s).
---@field on_no_data? "fail"|"pause"|"continue" A sample without data: an error (default), return `no_data` for the caller to decide, or count for nothing.
---@field raise? boolean Raise when the analysis fails (default true); false returns the outcome instead.

---@class AnalysisCheckResult
---@field rule string As read, e.g. "error_rate < 0.05 for 5m0s".
---@field last? number The last value seen (NaN left out).
---@field worst? number The value furthest on the wrong side.
---@field samples integer
---@field no_data integer Samples without data.
---@field verdict "ok"|"breaking"|"failed"|"no_data"

---@class AnalysisResult
---@field outcome "passed"|"failed"|"no_data"
---@field elapsed number Seconds.
---@field rounds integer Samples of every check taken.
---@field checks table<string, AnalysisCheckResult>

---@class metrics
metrics = {}

--- Watches a stage (a canary's traffic weight, a scaled-out host) for `duration`, sampling every
--- check each `interval`, and fails as soon as a check has broken its threshold for its `for`,
--- with the numbers that broke it in the error. Each round is logged on one line. Under
--- `--dry-run` it samples once and returns without waiting.
--- Example: `metrics.analyze{ prometheus = prom, duration = "5m", interval = "30s", queries = { error_rate = q }, checks = { "error_rate < 0.05 for 5m" } }`
---@param opts AnalysisOptions
---@return AnalysisResult
function metrics.analyze(opts) end

--- A Prometheus server (or anything with its HTTP query API: Thanos, Mimir, VictoriaMetrics).
--- A PromQL error is an error naming its kind, the query and Prometheus' message.
--- Example: `local prom = metrics.prometheus("http://prometheus:9090", { token = secret("PROM_TOKEN") })`
---@param url string|Secret
---@param opts? PrometheusOptions
---@return Prometheus
function metrics.prometheus(url, opts) end

---@class SshConnectOptions
---@field host? string "host", "host:port" or "user@host:port" (or give it as the first argument).
---@field user? string Default: the inventory's, else $USER.
---@field port? integer Default 22.
---@field key? string|Secret A private key file (relative to the runbook, `~` expands), or a key's text as a secret.
---@field passphrase? string|Secret The key's passphrase.
---@field password? string|Secret Password authentication.
---@field agent? boolean Try the ssh-agent (also tried when no key or password is given).
---@field known_hosts? string Default ~/.ssh/known_hosts.
---@field host_key? "strict"|"accept-new"|"off" Default "strict": only keys known_hosts vouches for.
---@field timeout? Duration Connecting and authenticating (default 10s).

---@class SshExecOptions
---@field timeout? Duration Kill the remote command's process group after this long.
---@field env? table<string, string|Secret> Sent through the channel's stdin, not the protocol: works with any sshd.
---@field cwd? string Remote working directory.
---@field stdin? string|Secret
---@field sudo? boolean Run through `sudo -n` (fails rather than prompting).
---@field check? boolean A non-zero exit raises (default true).
---@field readonly? boolean The command changes nothing: it runs under --dry-run.
---@field echo? boolean Stream output lines to the log with the host (default true).

---@class SshExecResult
---@field code integer
---@field stdout string
---@field stderr string
---@field ms integer
---@field host string

---@class SshTransfer
---@field bytes integer
---@field sha256 string Of what was sent or received.
---@field ms integer

---@class SshSession
---@field host string The host spec as given.
local SshSession = {}

--- Runs a shell command on the host. Secrets go through `env` or `stdin`, never in the command.
--- Example: `s:exec("systemctl restart app", { sudo = true })`
---@param command string
---@param opts? SshExecOptions
---@return SshExecResult
function SshSession:exec(command, opts) end

--- Uploads a file over SFTP (streamed), to a temporary name moved into place once its SHA-256
--- matches (`verify`, default true; needs sha256sum on the host).
--- Example: `s:upload("build/app.tar.gz", "/srv/app/releases/app.tar.gz")`
---@param local_path string
---@param remote_path string
---@param opts? {mode?: string|integer, verify?: boolean} mode: octal text such as "0644".
---@return SshTransfer
function SshSession:upload(local_path, remote_path, opts) end

--- Downloads a file over SFTP (streamed) to a temporary name renamed once complete (and its
--- SHA-256 checked when `verify`, default true).
--- Example: `s:download("/var/log/app.log", "app.log")`
---@param remote_path string
---@param local_path string
---@param opts? {verify?: boolean}
---@return SshTransfer
function SshSession:download(remote_path, local_path, opts) end

--- Forgets the session (the next connect to the host opens a new one).
--- Example: `s:close()`
function SshSession:close() end

---@class SshHostOutcome
---@field ok boolean
---@field status "ok"|"failed"|"not_run"
---@field result? any What fn returned.
---@field error? string

---@class SshEachOptions
---@field concurrency? integer Hosts at a time (default 20).
---@field max_failures? integer|string Failures tolerated, a count or "10%" (default 0); past it no host starts and the call raises.
---@field connect? SshConnectOptions Options for every host's connection.

---@class SshRollingOptions
---@field batch? integer|string Hosts per batch, a count or "25%" (default 1).
---@field first? integer A canary: this many hosts alone first, with their health check, before the rest.
---@field pause? Duration Between batches.
---@field health? fun(host: string): boolean? Run for each host after its batch; raising or returning false fails the host.
---@field max_failures? integer|string As for ssh.each; past it the rollout halts.
---@field connect? SshConnectOptions

---@class ssh
ssh = {}

--- Opens (or reuses, within the run) a session: host key checked, then authenticated.
--- Example: `local s = ssh.connect("deploy@10.0.0.5")`
---@param opts_or_host SshConnectOptions|string
---@param opts? SshConnectOptions
---@return SshSession
function ssh.connect(opts_or_host, opts) end

--- The host specs of an inventory group of runbook.toml (`[hosts.NAME]`).
--- Example: `ssh.group("web")`
---@param name string
---@return string[]
function ssh.group(name) end

--- Runs fn(session, host) on every host, `concurrency` at a time. Inside a step each host's
--- outcome is journaled: a resumed or retried step runs only the hosts without a success.
--- Returns {[host] = SshHostOutcome}; raises when failures pass max_failures.
--- Example: `ssh.each("web", function(s) return s:exec("uptime").stdout end, { concurrency = 10 })`
---@param hosts string[]|string Host specs, or an inventory group's name.
---@param fn fun(session: SshSession, host: string): any
---@param opts? SshEachOptions
---@return table<string, SshHostOutcome>
function ssh.each(hosts, fn, opts) end

--- Runs fn(session, host) batch by batch (a canary first with `first`), then `health(host)` for
--- each host of the batch; halts, with what was done per host, when failures pass max_failures.
--- Example: `ssh.rolling("web", deploy, { first = 1, batch = "25%", health = check })`
---@param hosts string[]|string
---@param fn fun(session: SshSession, host: string): any
---@param opts? SshRollingOptions
---@return table<string, SshHostOutcome>
function ssh.rolling(hosts, fn, opts) end

---@class StorageOpenOptions
---@field endpoint? string An S3-compatible service, e.g. "http://127.0.0.1:9000" (AWS itself without it).
---@field region? string
---@field path_style? boolean `endpoint/bucket/key` requests (default: true with an endpoint).
---@field allow_http? boolean Allow a plain-HTTP endpoint.
---@field access_key_id? string|Secret Default: AWS_ACCESS_KEY_ID and the usual AWS environment.
---@field secret_access_key? string|Secret Default: AWS_SECRET_ACCESS_KEY.

---@class StorageObject
---@field key string Relative to the store's prefix.
---@field size integer Bytes.
---@field modified string RFC 3339, UTC.
---@field etag? string

---@class Store
---@field url string The store's URL as given.
local Store = {}

--- Stores a string, or a file streamed in 8 MiB parts (`{file = "path"}`, relative to the runbook).
--- Example: `store:put("reports/today.txt", "ok")`
---@param key string
---@param data string|{file: string}
---@return StorageObject
function Store:put(key, data) end

--- An object's bytes as a string, or streamed into a file with `{to = "path"}` (written to a
--- temporary name, renamed when complete; folders created).
--- Example: `local text = store:get("reports/today.txt")`
---@param key string
---@param opts? {to?: string}
---@return string|StorageObject
function Store:get(key, opts) end

--- The objects under a prefix (all of them without one), sorted by key.
--- Example: `for _, o in ipairs(store:list("db/")) do print(o.key, o.size) end`
---@param prefix? string
---@return StorageObject[]
function Store:list(prefix) end

--- An object's size and time, or nil when there is none.
--- Example: `store:stat("db/latest.dump")`
---@param key string
---@return StorageObject?
function Store:stat(key) end

--- Example: `store:exists("db/latest.dump")`
---@param key string
---@return boolean
function Store:exists(key) end

--- Deletes an object (no error when it is already gone).
--- Example: `store:delete("tmp/old.dump")`
---@param key string
---@return boolean
function Store:delete(key) end

--- Copies an object within the store.
--- Example: `store:copy("db/latest.dump", "db/keep/2026-11-22.dump")`
---@param from string
---@param to string
---@return boolean
function Store:copy(from, to) end

---@class storage
storage = {}

--- Opens `file:///abs/path`, `file://./relative` (to the runbook; created when missing) or
--- `s3://bucket/prefix`.
--- Example: `local store = storage.open("s3://backups/app", { endpoint = "http://127.0.0.1:9000" })`
---@param url string
---@param opts? StorageOpenOptions
---@return Store
function storage.open(url, opts) end

---@class BackupManifest
---@field id string
---@field store string The store's URL (no credentials).
---@field key string The object's key; its manifest is `key .. ".manifest.json"`, written last.
---@field created_at string RFC 3339, UTC.
---@field engine "postgres"|"mysql"|"sqlite"
---@field server_version string
---@field tool string pg_dump, mysqldump, or sqlite vacuum into.
---@field tool_version string
---@field source string The database, without its password.
---@field format "custom"|"plain"|"sqlite"
---@field compress "zstd"|"gzip"|"none"
---@field bytes_raw integer The dump's size.
---@field bytes_stored integer The object's size.
---@field sha256 string Of the stored object.
---@field duration_ms integer
---@field label? string
---@field tables table<string, integer> Rows per table, counted in the dump's snapshot (PostgreSQL, SQLite) or just before the dump (MySQL).
---@field tables_after? table<string, integer> MySQL: rows counted again after the dump.
---@field verified_at? string
---@field verification? table {ok, tables, checks, problems, duration_ms, scratch}

---@class BackupCreateOptions
---@field source string|Secret postgres://, mysql:// or sqlite://PATH.
---@field to Store Where the object and its manifest go.
---@field prefix? string Folder of the object in the store.
---@field compress? "zstd"|"gzip"|"none" Default "zstd".
---@field level? integer Compression level.
---@field format? "custom"|"plain" PostgreSQL: pg_restore's custom format (default) or SQL.
---@field tables? string[] Only these tables.
---@field label? string Shown by backup.list and usable as a filter.

---@class BackupCheck
---@field sql string A query returning one value.
---@field params? any[] Bound parameters ($1 or ?).
---@field expect any

---@class BackupVerifyOptions
---@field store? Store Needed when the backup is given by key (or its store was not opened in this run).
---@field server? string|Secret The server for the scratch database (created, then dropped); credentials are never in the manifest.
---@field into? string|Secret Restore into this database instead of a scratch one.
---@field checks? BackupCheck[]

---@class BackupRestoreOptions
---@field into string|Secret The target database (SQLite: the file).
---@field store? Store
---@field clean? boolean Replace a database that has tables (refused otherwise).

---@class BackupPruneOptions
---@field keep_last? integer
---@field keep_daily? integer The newest backup of each of the last N days that have one.
---@field keep_weekly? integer Per ISO week.
---@field keep_monthly? integer
---@field keep_within? Duration Everything within this long of the newest backup.
---@field dry_run? boolean Report only.
---@field prefix? string
---@field label? string

---@class backup
backup = {}

--- Dumps a database, streamed through compression and SHA-256 into a store (never staged whole),
--- then writes its manifest beside it, last. Passwords reach the tools by environment, never argv.
--- Example: `local m = backup.create{ source = secret{ env = "DATABASE_URL" }, to = store, prefix = "db" }`
---@param opts BackupCreateOptions
---@return BackupManifest
function backup.create(opts) end

--- The complete backups (with a manifest) in a store, newest first.
--- Example: `backup.list(store, { prefix = "db" })`
---@param store Store
---@param opts? {prefix?: string, label?: string}
---@return BackupManifest[]
function backup.list(store, opts) end

--- The newest complete backup, or nil.
--- Example: `local m = backup.latest(store, { prefix = "db" })`
---@param store Store
---@param opts? {prefix?: string, label?: string}
---@return BackupManifest?
function backup.latest(store, opts) end

--- Checks the SHA-256, restores into a scratch database, compares every table's rows with the
--- manifest, runs the checks, and records the outcome in the manifest. Raises when anything differs.
--- Example: `backup.verify(m, { server = secret{ env = "SCRATCH_URL" } })`
---@param manifest_or_key BackupManifest|string
---@param opts? BackupVerifyOptions
---@return table verification {ok, tables, checks, problems, warnings, duration_ms, scratch}
function backup.verify(manifest_or_key, opts) end

--- Restores a backup (checksum first); refuses a database that has tables unless clean = true.
--- Example: `backup.restore(m, { into = secret{ env = "RESTORE_URL" } })`
---@param manifest_or_key BackupManifest|string
---@param opts BackupRestoreOptions
---@return table report {key, into, tables, duration_ms}
function backup.restore(manifest_or_key, opts) end

--- Applies a retention policy: returns what it kept (with the reasons), removed, and the
--- incomplete backups (no manifest) older than a day it removed. Never removes the newest
--- verified backup.
--- Example: `backup.prune(store, { keep_daily = 7, keep_weekly = 4, prefix = "db" })`
---@param store Store
---@param policy BackupPruneOptions
---@return table report {kept, removed, incomplete_removed, dry_run}
function backup.prune(store, policy) end
