-- args: run {file} --state redis://localhost/0
-- exit: 2
-- stderr: unknown journal scheme
runbook { name = "a" }
