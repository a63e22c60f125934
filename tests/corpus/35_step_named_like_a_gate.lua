-- exit: 2
-- stderr: 35_step_named_like_a_gate.lua:4: step names cannot start with "approve: "
runbook { name = "a" }
step("approve: X", function() end)
