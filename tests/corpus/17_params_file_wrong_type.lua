-- args: run {file} --params-file {dir}/wrong_type.toml
-- exit: 2
-- stderr: param 'n' from the params file: expected an integer
-- stderr: unknown param 'zzz' in the params file
runbook { name = "a", params = { n = { type = "integer" } } }
