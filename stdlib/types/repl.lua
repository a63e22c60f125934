---@meta repl
-- Globals that only `runbook repl` has (besides everything a runbook has).

---@class ReplStep
---@field status string "succeeded", "failed", "skipped", "running", ...
---@field attempts integer
---@field result any What the step returned (its recorded JSON, as Lua).
---@field error? string
---@field started_at? string
---@field finished_at? string
---@field duration_ms? integer
---@field actor? string Who retried or skipped it from a REPL.

---@class ReplRun
---@field id string
---@field runbook string
---@field status string The run's status (a run whose process is gone is "interrupted").
---@field error? string
---@field path string The runbook file.
---@field params table<string, any> The params the run was started with (secrets redacted).
---@field steps table<string, ReplStep> Its journaled steps, by name.

--- The attached run (`runbook repl --run RUN`, `:attach RUN`); refreshed after :retry, :skip
--- and :resume.
---@type ReplRun?
run = nil

--- The step functions of the runbook `:load` read, by name: `steps["dump"]()` runs one by hand
--- (not journaled).
---@type table<string, fun(): any>?
steps = nil

--- The host groups of runbook.toml: `inventory.web` is `{ "10.0.0.5", "web-2:2222" }`.
---@type table<string, string[]>
inventory = {}

--- The embedded stdlib, loaded: `stdlib.pg.table_sizes(pg)` (also `require "runbook.pg"`).
---@type table<string, table>
stdlib = {}

--- What `:result STEP` bound (unless given another name).
---@type any
result = nil

--- The first value the last expression printed.
---@type any
_ = nil
