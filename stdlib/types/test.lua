---@meta runbook-test
-- The globals of a `runbook test` file (*_test.lua), besides the sandbox's Lua. A test file runs
-- runbooks through the real engine with fakes in place of the primitives:
--
--   test("a failing smoke request rolls back", function()
--     local r = run("deploy.lua", { params = { version = "1.2.0" }, fakes = { exec = {...}, http = {...} } })
--     expect(r.status).to_be("rolled_back")
--   end)

---@class TestFake
---@field match? string Text the call contains (exec: its argv as shown, then " <<< stdin"; http: "METHOD URL"; db: the SQL; ssh: "HOST: command"; storage: "put URL/KEY"; backup: "create SOURCE to STORE"; tls: "host:port"; metrics: "query PROMQL").
---@field pattern? string A Lua pattern the call matches, instead of `match` (it weighs its literal characters).
---@field host? string ssh: only this host's calls (or, with down/down_after/host_key_changed, the host's state).
---@field url? string db, storage, metrics, http: only calls to a target whose URL contains this.
---@field times? integer Matches this many calls, then lets later fakes answer.
---@field answers? table[] Answers given in turn, the last repeating.
---@field respond? fun(call: string, args: string[], n: integer, state: table): table? Answers with a function of the test file: `n` the how-manieth call this fake answers, `state` a table of the fake's world (kept across a crash and its resume, fresh for each crash pass). Keep what it remembers in `state`: --crash and --coverage call it again (each crash pass, the plan).
---@field error? string The call raises this.
---@field delay? Duration The answer comes after this long, on the virtual clock.
---@field code? integer exec, ssh: the exit code (default 0; not 0 raises unless `check = false`).
---@field stdout? string exec, ssh
---@field stderr? string exec, ssh
---@field status? integer http: the status (default 200; outside 2xx raises unless `expect` accepts it).
---@field json? any http: what `r:json()` returns.
---@field body? string http
---@field headers? table<string, string> http
---@field requests? integer http.load: the report's numbers (also errors, rps, latency = {p50, p95, ...}, statuses).
---@field rows? table[] db: the rows of a query.
---@field count? integer db: the rows an execute affected.
---@field value? any db: what `scalar` returns; metrics: the one number (nil: no data).
---@field sqlstate? string db: the SQLSTATE of `error`.
---@field down? boolean|string db: the connection refused (the text: its cause); ssh: the host down.
---@field down_after? integer ssh: the host goes down after this many commands.
---@field host_key_changed? boolean ssh: the host key check fails.
---@field sqlite? boolean db: a real SQLite database in the test's world for this `url`.
---@field schema? string db, with sqlite: SQL run when the database is new.
---@field group? string ssh: an inventory group, with `hosts`.
---@field hosts? string[] ssh: the group's hosts.
---@field objects? table<string, string> storage: objects in the store at `url` before the run.
---@field tables? table<string, integer> backup: the rows per table of a dump (create) or a restore (verify, restore).
---@field corrupt? boolean backup create: the object is damaged on its way to the store.
---@field problems? string[] backup verify: what the verification finds wrong.
---@field days_left? integer tls: the certificate's days left (`valid = false` with `reason`: one that does not verify).
---@field samples? table[] metrics query: the samples.

---@type lightuserdata SQL NULL, in a fake's rows.
null = nil

---@class TestFakes
---@field exec? TestFake[]
---@field http? TestFake[]
---@field db? TestFake[]
---@field ssh? TestFake[]
---@field storage? TestFake[]
---@field backup? TestFake[]
---@field tls? TestFake[]
---@field metrics? TestFake[]
---@field secrets? table<string, string> What `secret("NAME")` (and secret params) return.
---@field env? table<string, string> What `env("NAME")` and params declared with `env` read.
---@field steps? table<string, {result?: any, error?: string}> Steps whose body does not run: they return `result` or fail with `error`.
---@field faults? {step: string, attempt?: integer, error?: string}[] One attempt of a step (every attempt without `attempt`) fails.
---@field real? string[] Primitives let through to real systems ("db", "ssh", ...); the others' calls must be faked.

---@class TestRunSpec
---@field params? table<string, any> The runbook's params, as a params file gives them.
---@field fakes? TestFakes
---@field approve? boolean Every gate approved (default: gates wait, and the run's status is "waiting_approval").
---@field world? TestRun An earlier run whose world (stores, SQLite files, `state` tables) this run shares.
---@field kill? {inside?: string, after?: string} The process stops dead inside a step (its body ran, its end was not recorded) or right after it; `resume` goes on as after a real crash.

---@class TestStep
---@field status string
---@field attempts integer
---@field result any
---@field error? string
---@field undo_status? string "done", "failed", ... when the step has an undo.
---@field started_at string A journal timestamp (virtual clock): see `time_of`.
---@field finished_at? string

---@class TestCall
---@field primitive string "exec", "db", "http", ...
---@field call string The call as fakes match it ("GET https://...", the SQL, "web-1: uptime").
---@field faked boolean Whether a fake (or the fake's world) answered it.
---@field mutating boolean Whether it changes something.
---@field step? string The step it was made in ("undo NAME" in an undo; none at the top level).
---@field args string[] Its parameters as shown (db).
---@field json? table http: the JSON body sent.

---@class TestRun
---@field status string "succeeded", "failed", "rolled_back", "waiting_approval", ..., or "not_started" (bad params, a runbook that does not load).
---@field exit_code integer As `runbook run` would exit.
---@field error? string
---@field run_id? string
---@field steps table<string, TestStep>
---@field calls TestCall[] Every primitive call, in order (secrets as `<secret:NAME>`).
---@field notifications {url: string, json: table}[] The webhooks posted: each POST with a JSON body.
---@field killed? string With `kill`: the journal write the process stopped before.

--- A test. Names are prefixed by the enclosing `describe`s.
---@param name string
---@param fn fun()
function test(name, fn) end

--- A group of tests.
---@param name string
---@param fn fun()
function describe(name, fn) end

--- Runs a runbook (a path from the test file's folder) through the real engine, on a journal of
--- its own, with `fakes` in place of the primitives and time on a virtual clock (sleeps and
--- retry backoffs pass at once). A primitive call no fake answers fails the test, even when the
--- runbook caught its error.
---@param path string
---@param spec? TestRunSpec
---@return TestRun
function run(path, spec) end

---@class Expectation
---@field to_be fun(want: any) The same value (==).
---@field to_equal fun(want: any) The same content, tables compared deeply; the first difference is shown.
---@field to_match fun(pattern: string) A string matching a Lua pattern.
---@field to_contain fun(x: any) A string containing text, or a table with a value equal to `x`.
---@field to_be_nil fun()
---@field to_be_truthy fun()
---@field to_fail_with fun(pattern: string) A function that raises an error matching the pattern.

--- An expectation on a value; a failed one fails the test at the caller's line.
---@param actual any
---@return Expectation
function expect(actual) end

--- The calls a run made of one primitive: exactly these, in order, each containing its text;
--- with `in_order = true` these in this order among others; `mutating = true` (or false) looks
--- only at the calls that change something (or those that do not); `count = n` checks how many.
--- Example: `expect_calls(r, "db", { "REINDEX TABLE", "VACUUM ANALYZE", mutating = true })`
---@param r TestRun
---@param primitive string
---@param want {[integer]: string, count?: integer, mutating?: boolean, in_order?: boolean}
function expect_calls(r, primitive, want) end

--- Fakes made of a shared set and a test's own: each primitive's list (and `faults`, `real`)
--- with the test's after the shared ones, so they win a tie; `secrets`, `env` and `steps`
--- merged, the test's over the shared. Neither argument is changed.
--- Example: `run("deploy.lua", { fakes = with_fakes(world, { http = { { match = "GET http://web-1:8080/health", status = 503 } } }) })`
---@param base TestFakes
---@param extra? TestFakes
---@return TestFakes
function with_fakes(base, extra) end

--- Seconds since the epoch of a journal timestamp, to compare the (virtual) times of steps.
--- Example: `expect(time_of(r.steps.wait.finished_at) - time_of(r.steps.wait.started_at) >= 1800).to_be_truthy()`
---@param ts string
---@return number
function time_of(ts) end

--- Resumes the run of `r` on its journal, as `runbook resume` would, with a fresh Lua state:
--- completed steps return their recorded results. Its fakes are the first run's unless `spec`
--- gives others; `approve = true` passes the gate it waits at.
---@param r TestRun
---@param spec? TestRunSpec
---@return TestRun
function resume(r, spec) end

--- Moves the virtual clock, as time passing between a run and its resume.
---@param d Duration
function advance(d) end

---@class CrashReport
---@field points integer The crash points tried: one before each journal write of the run.
---@field outcome string The outcome without a crash, which every crashed and resumed run reached.
---@field repeated string[] Steps run again because they were in flight at a crash (at-least-once).

--- The crash proof: the scenario once, then once per crash point (before each journal write of
--- the run: its steps, undos, gates and its own records), each time stopping the process dead
--- there and resuming on the same journal with a fresh Lua state. Fails naming the crash point
--- when the outcome differs from the uncrashed one, when a call of a step that had completed
--- (or an undo that was done) ran again, or when a mutating call outside any step ran again.
--- Example: `local report = crash_everywhere("deploy.lua", { params = p, fakes = f, approve = true })`
---@param path string
---@param spec? TestRunSpec
---@return CrashReport
function crash_everywhere(path, spec) end
