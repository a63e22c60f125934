-- exit: 2
-- stderr: param 'n': unknown key `requird`
runbook { name = "a", params = { n = { type = "integer", requird = true } } }
