-- exit: 2
-- stderr: runbook{}: unknown key 'parms'
runbook { name = "a", parms = {} }
