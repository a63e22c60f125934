-- exit: 2
-- stderr: step 'a' before runbook{...}
step("a", function() end)
