-- A change behind a gate: what `resume` is for.
runbook { name = "gated" }
step("prepare", function() return exec{ "prepare" }.code end)
approve("Switch traffic to the new release?")
step("switch", function()
  exec{ "switch" }
  return "switched"
end)
step("verify", function() return http.get("https://app.example.com/api/health"):json().status end)
