-- exit: 1
-- stderr: 27_exec_string.lua:5: step 'a': exec: expects a table
runbook { name = "a" }
step("a", function()
  exec("rm -rf /")
end)
