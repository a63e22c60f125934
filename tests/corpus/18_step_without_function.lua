-- exit: 2
-- stderr: 18_step_without_function.lua:4: step 'a': expected step(name, [options], function() ... end)
runbook { name = "a" }
step("a", "not a function")
