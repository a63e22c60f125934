-- What `runbook test`'s fakes must hold to as the real primitives do: a step timeout on the
-- virtual clock, health checks that read the body, secrets and the environment from the test,
-- a secret refused on a command line, the time the runbook reads.
runbook { name = "checks", params = { wait = { type = "duration", default = "30m" } } }
step("ready", { timeout = "5m" }, function()
  http.wait_healthy("https://app.example.com/ready", { timeout = params.wait, interval = "1m", json_path = "state", equals = "up" })
  return true
end)
step("token", function()
  local t = secret("API_TOKEN")
  local r = exec{ "curl", "https://app.example.com/api", env = { TOKEN = t }, check = false }
  return { code = r.code, name = t:name() }
end)
step("region", function()
  return { region = env("REGION", "none"), year = os.date("!%Y", os.time()) }
end)
step("argv", function()
  local ok, e = pcall(exec, { "psql", secret("API_TOKEN") })
  return tostring(e)
end)
step("specific", function()
  return { health = http.get("https://app.example.com/api/health"):json().status, home = http.get("https://app.example.com/").body }
end)
