-- args: plan {file} -p n=lots
-- exit: 2
-- stderr: param 'n' from -p: expected an integer, got 'lots'
runbook { name = "a", params = { n = { type = "integer", required = true } } }
step("x", function() end)
