-- Tests that must fail: `runbook test`'s own tests check that each one does, and how.
test("an unfaked call fails the test", function()
  -- No http fakes: the health check's request reaches no system.
  run("../passing/release.lua", { params = { version = "1.2.0" }, fakes = { exec = { { match = "git fetch" } } } })
end)

test("a call the runbook catches itself still fails the test", function()
  run("../passing/release.lua", { params = { version = "1.2.0" }, fakes = {
    exec = { { match = "git" }, { match = "psql" } },
    http = { { match = "/api/health", json = { status = "ok" } }, { match = "/ready" } },
  } })
end)

test("a wrong expectation shows the difference", function()
  local r = run("../passing/release.lua", { params = { version = "1.2.0" }, fakes = {
    exec = { { match = "git" }, { match = "psql" } },
    http = { { match = "/api/health", json = { status = "ok" } }, { match = "https://app.example.com/" } },
  } })
  expect(r.steps.fetch).to_equal({ status = "failed" })
end)
