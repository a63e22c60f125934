-- exit: 2
-- stderr: 34_approve_inside_when.lua:4: approve() inside step 'a'
runbook { name = "a" }
step("a", { when = function() return approve("go?") end }, function() end)
