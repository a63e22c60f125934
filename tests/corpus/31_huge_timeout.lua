-- exit: 2
-- stderr: step option `timeout`: invalid duration
runbook { name = "a" }
step("a", { timeout = 1e20 }, function() end)
