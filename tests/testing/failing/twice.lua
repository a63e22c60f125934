-- Two steps that are not safe to run twice: an insert without a guard, an undo that fails once
-- what it removes is gone. The crash proof must find both.
runbook { name = "twice", rollback = "auto",
          params = { fail = { type = "boolean", default = false }, guarded = { type = "boolean", default = false } } }
local conn = db.connect("postgres://app@db.internal/app")
step("order", function()
  conn:execute((params.guarded and "insert or ignore" or "insert") .. " into orders (id, state) values (?, ?)", 1, "paid")
  return true
end)
step("feature flag", {
  undo = function() exec{ "flagctl", "delete", "new-checkout" } end,
}, function()
  exec{ "flagctl", "create", "new-checkout" }
end)
step("smoke", function()
  if params.fail then error("the smoke test failed") end
end)
