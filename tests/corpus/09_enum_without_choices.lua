-- exit: 2
-- stderr: an enum needs `choices
runbook { name = "a", params = { mode = { type = "enum" } } }
