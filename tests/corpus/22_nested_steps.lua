-- exit: 2
-- stderr: step 'inner' inside step 'outer': steps and approvals cannot be nested
runbook { name = "a" }
step("outer", function()
  step("inner", function() end)
end)
