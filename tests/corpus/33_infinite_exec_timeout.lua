-- exit: 1
-- stderr: exec: timeout: invalid duration
runbook { name = "a" }
step("a", function() exec{"true", timeout = math.huge} end)
