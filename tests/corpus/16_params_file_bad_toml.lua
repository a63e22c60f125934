-- args: run {file} --params-file {dir}/bad_params.toml
-- exit: 2
-- stderr: bad_params.toml
-- stderr: line 2
runbook { name = "a", params = { n = { type = "integer" } } }
