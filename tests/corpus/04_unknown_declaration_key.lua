-- exit: 2
-- stderr: 04_unknown_declaration_key.lua:3: runbook{}: unknown key 'parms'
runbook { name = "a", parms = {} }
