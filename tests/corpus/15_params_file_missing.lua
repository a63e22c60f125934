-- args: run {file} --params-file {dir}/does-not-exist.toml
-- exit: 2
-- stderr: params file
-- stderr: does-not-exist.toml
runbook { name = "a" }
