-- exit: 2
-- stderr: pattern is not a valid regular expression
runbook { name = "a", params = { h = { type = "string", pattern = "[a-" } } }
