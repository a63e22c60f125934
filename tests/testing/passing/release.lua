-- A release as `runbook test`'s own tests run it: fetch, wait for health (retried with a long
-- backoff), migrate with an undo, a smoke request, a maintenance pause.
runbook {
  name = "release",
  params = { version = { type = "string", required = true }, pause = { type = "duration", default = "30m" } },
  rollback = "auto",
}
step("fetch", function()
  return exec{ "git", "fetch", "origin", "v" .. params.version }.code
end)
step("health", { retries = 5, backoff = { base = "10m", max = "1h" } }, function()
  return http.get("https://app.example.com/api/health"):json().status
end)
step("wait", function()
  http.wait_healthy("https://app.example.com/ready", { timeout = "30m", interval = "1m" })
  sleep(params.pause)
  return true
end)
step("migrate", { undo = function() exec{ "psql", "-f", "down.sql" } end }, function()
  exec{ "psql", "-f", "up.sql" }
  return "migrated"
end)
step("smoke", function()
  -- A failure the runbook catches itself is still a call the test must fake.
  local ok = pcall(http.get, "https://app.example.com/")
  return ok
end)
