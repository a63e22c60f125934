-- exit: 2
-- stderr: `rollback` is "auto" or "manual", got "sometimes"
runbook { name = "a", rollback = "sometimes" }
