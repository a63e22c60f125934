-- exit: 2
-- stderr: min (10) is greater than max (1)
runbook { name = "a", params = { n = { type = "integer", min = 10, max = 1 } } }
