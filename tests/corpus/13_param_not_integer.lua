-- args: run {file} -p n=lots
-- exit: 2
-- stderr: param 'n' from -p: expected an integer, got 'lots'
runbook { name = "a", params = { n = { type = "integer" } } }
step("x", function() end)
