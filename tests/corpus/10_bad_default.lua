-- exit: 2
-- stderr: param 'n': default: expected an integer
runbook { name = "a", params = { n = { type = "integer", default = "three" } } }
