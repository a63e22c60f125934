---@meta runbook.notify
-- local notify = require "runbook.notify"

---@class runbook.notify
local notify = {}

--- Posts `{ text, runbook, run_id, ...fields }` as JSON (Slack-compatible `text`); a failure is
--- logged, never raised. Returns whether it was posted.
--- Example: `notify.post(params.webhook, "deploy of " .. params.version .. " done", { status = "succeeded" })`
---@param url string|Secret
---@param text string
---@param fields? table
---@return boolean
function notify.post(url, text, fields) end

--- The failed step's name in an error raised by `step`, or nil.
--- Example: `notify.failed_step(err)`
---@param err any
---@return string?
function notify.failed_step(err) end

--- Runs fn (the runbook's steps); when a step fails for good, posts one notification (status,
--- failed_step, error, duration_ms, run id, how to resume) and raises the error again. Gates,
--- cancels and interrupts post nothing.
--- Example: `notify.on_failure(params.webhook, function() step("migrate", migrate) end)`
---@generic T
---@param url string|Secret|nil
---@param fn fun(): T
---@return T
function notify.on_failure(url, fn) end
