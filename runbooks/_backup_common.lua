-- Shared by the backup runbooks: the store the params name, and steps whose failure is also
-- posted to a webhook.
local M = {}

--- `p`: the runbook's params; `name`: the runbook's name, for the webhook's message.
function M.new(p, name)
  local self = {}

  --- The store: file:///path, file://./dir (relative to the runbook) or s3://bucket/prefix
  --- (S3_ENDPOINT and the AWS_* variables for an S3-compatible service).
  function self.store()
    if p.store:match("^s3://") then
      local opts = { region = p.s3_region }
      if p.s3_endpoint then
        opts.endpoint = p.s3_endpoint
        opts.allow_http = p.s3_endpoint:match("^http://") ~= nil
      end
      return storage.open(p.store, opts)
    end
    return storage.open(p.store)
  end

  --- A step whose failure is posted to `notify_url` (when set), then raised as usual.
  function self.step(step_name, opts, fn)
    return step(step_name, opts, function(...)
      local ok, result = pcall(fn, ...)
      if not ok then
        if p.notify_url then
          pcall(http.post, p.notify_url, { timeout = "10s", json = {
            text = "runbook " .. name .. ": step '" .. step_name .. "' failed: " .. tostring(result):match("[^\n]*"),
            runbook = name, step = step_name, status = "failed" } })
        end
        error(result, 0)
      end
      return result
    end)
  end

  return self
end

return M
