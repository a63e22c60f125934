-- args: run {file} --max-memory lots
-- exit: 2
-- stderr: expected a size such as 64MB
runbook { name = "a" }
