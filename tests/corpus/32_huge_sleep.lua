-- exit: 1
-- stderr: sleep: invalid duration
runbook { name = "a" }
step("a", function() sleep(1e20) end)
