-- exit: 2
-- stderr: 03_declared_twice.lua:4: runbook{} is declared twice (first at line 3)
runbook { name = "a" }
runbook { name = "b" }
