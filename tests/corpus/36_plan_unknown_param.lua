-- args: plan {file} -p nope=1
-- exit: 2
-- stderr: unknown param 'nope' given with -p
runbook { name = "a", params = { n = { type = "integer" } } }
step("x", function() end)
