-- exit: 2
-- stderr: 07_unknown_param_type.lua:3: param 'n': unknown type 'int64'
runbook { name = "a", params = { n = { type = "int64" } } }
