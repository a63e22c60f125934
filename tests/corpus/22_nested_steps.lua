-- exit: 2
-- stderr: 22_nested_steps.lua:5: step 'inner' inside step 'outer': steps and approvals cannot be nested
runbook { name = "a" }
step("outer", function()
  step("inner", function() end)
end)
