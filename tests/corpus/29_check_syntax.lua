-- args: check {file}
-- exit: 2
-- stderr: 29_check_syntax.lua:6: syntax error
runbook { name = "a" }
step("a", function() end
