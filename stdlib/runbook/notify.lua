--- runbook.notify: webhook notifications from runbooks, as JSON with a Slack-compatible `text`
--- and the run's id, runbook, status, failed step and duration.
---   local notify = require "runbook.notify"
---   notify.on_failure(params.webhook, function() ... the runbook's steps ... end)
local M = {}

--- Posts `{ text, runbook, run_id, ... }` (plus `fields`) to a webhook; a failure to post is
--- logged, never raised (a notification must not fail the run). Returns whether it was posted.
function M.post(url, text, fields)
  local run = current_run() or {}
  local body = { text = text, runbook = run.runbook, run_id = run.id }
  for k, v in pairs(fields or {}) do body[k] = v end
  local ok, err = pcall(http.post, url, { json = body, timeout = "10s", retries = 2 })
  if not ok then
    log.warn("notification not posted", { error = tostring(err) })
  end
  return ok
end

--- The name of the failed step in an error raised by `step`, if it is one.
function M.failed_step(err)
  return tostring(err):match("step '(.-)'")
end

--- Runs `fn` (the runbook's steps); when a step fails for good (its retries spent), posts one
--- failure notification naming the step, with the error's first line and the time since `fn`
--- started, then raises the error again so the run fails as it would have. A run stopped at an
--- approval gate, cancelled or interrupted is not a failure and posts nothing. The post is a
--- step of its own ("notify: STEP failed"), so it is made once per run and failed step: a
--- crash before the run recorded its end, or a resume that fails at the same step again, does
--- not post it twice.
function M.on_failure(url, fn)
  local started = os.time()
  local ok, err = pcall(fn)
  if ok then return err end
  local step_name = M.failed_step(err)
  if url and url ~= "" and step_name and not tostring(err):find("waiting for approval", 1, true) then
    local run = current_run() or {}
    local first = tostring(err):match("[^\n]*")
    local duration_ms = (os.time() - started) * 1000
    -- (A long step name is cut: the notification's step must not fail on its name's length.)
    step("notify: " .. step_name:sub(1, 120) .. " failed", { description = "The failure posted to the webhook" }, function()
      return M.post(url, string.format("runbook %s: run %s failed at step '%s': %s", run.runbook or "?", run.id or "?",
        step_name, first), {
        status = "failed",
        failed_step = step_name,
        error = first,
        duration_ms = duration_ms,
        resume = run.id and ("runbook resume " .. run.id) or nil,
      })
    end)
  end
  error(err, 0)
end

return M
