-- args: run {file} -p justakey
-- exit: 2
-- stderr: expected KEY=VALUE
runbook { name = "a" }
