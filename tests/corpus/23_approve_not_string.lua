-- exit: 2
-- stderr: approve expects a message string, got a table
runbook { name = "a" }
approve({ "yes?" })
