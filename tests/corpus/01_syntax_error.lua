-- exit: 2
-- stderr: 01_syntax_error.lua:5: syntax error
runbook { name = "broken" }
step("a", function()
  local x = = 1
end)
