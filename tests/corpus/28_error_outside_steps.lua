-- exit: 1
-- stderr: 28_error_outside_steps.lua:5: attempt to perform arithmetic on a nil value
runbook { name = "a" }
step("ok", function() end)
local x = nothing + 1
