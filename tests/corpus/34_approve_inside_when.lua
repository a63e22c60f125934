-- exit: 2
-- stderr: approve() inside step 'a'
runbook { name = "a" }
step("a", { when = function() return approve("go?") end }, function() end)
