-- exit: 2
-- stderr: unknown step option 'retry' (known: description, retries
runbook { name = "a" }
step("a", { retry = 3 }, function() end)
