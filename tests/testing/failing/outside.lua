-- A mutating call at the top level, outside any step: it runs again on every resume.
runbook { name = "outside" }
exec{ "notify", "deploy started" }
step("deploy", function() exec{ "deploy" } return true end)
step("verify", function() exec{ "verify", readonly = true } return true end)
