-- exit: 2
-- stderr: step names cannot start with "approve: "
runbook { name = "a" }
step("approve: X", function() end)
