-- exit: 2
-- stderr: param 'n': unknown type 'int64'
runbook { name = "a", params = { n = { type = "int64" } } }
