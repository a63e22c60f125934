-- exit: 2
-- stderr: runbook{}: `name` is required
runbook { description = "no name" }
