-- A first runbook: check a service, then record that it was checked. Run it with
--   runbook run hello.lua -p url=https://example.com/
-- and its tests with `runbook test` (hello_test.lua, beside it).
runbook {
  name = "hello",
  description = "Check a service's health, then record the check",
  params = {
    url = { type = "string", default = "https://example.com/", description = "the service to check" },
    record = { type = "string", default = "checks.log", description = "where the check is recorded" },
  },
}

step("health", { retries = 3, backoff = { base = "5s" } }, function()
  local r = http.get(params.url, { timeout = "10s", readonly = true })
  return r.status
end)

step("record", function()
  exec{ "sh", "-c", 'printf "%s %s\n" "$1" "$2" >> "$3"', "_", now(), params.url, params.record }
  return params.record
end)
