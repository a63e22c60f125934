-- exit: 2
-- stderr: step option `timeout`: invalid duration 'soon'
runbook { name = "a" }
step("a", { timeout = "soon" }, function() end)
