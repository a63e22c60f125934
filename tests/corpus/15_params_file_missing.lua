-- args: run {file} --params-file {dir}/does-not-exist.toml
-- exit: 2
-- stderr: params file
-- stderr: No such file or directory
runbook { name = "a" }
