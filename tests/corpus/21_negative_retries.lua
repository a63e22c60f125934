-- exit: 2
-- stderr: `retries` is a whole number from 0 to 100, got -1
runbook { name = "a" }
step("a", { retries = -1 }, function() end)
