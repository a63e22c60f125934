-- exit: 2
-- stderr: 20_bad_timeout.lua:4: step 'a': step option `timeout`: invalid duration 'soon'
runbook { name = "a" }
step("a", { timeout = "soon" }, function() end)
