-- exit: 2
-- stderr: 19_unknown_step_option.lua:4: step 'a': unknown step option 'retry' (known: description, retries
runbook { name = "a" }
step("a", { retry = 3 }, function() end)
