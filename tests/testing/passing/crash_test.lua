-- The crash proof of the release runbook: stopped dead before every journal write, resumed.
local fakes = {
  exec = { { match = "git fetch" }, { match = "psql -f up.sql" }, { match = "psql -f down.sql" } },
  http = { { match = "GET https://app.example.com/api/health", json = { status = "ok" } },
           { match = "GET https://app.example.com/ready" }, { match = "GET https://app.example.com/" } },
}

test("the release ends the same wherever it crashes, and never repeats a completed step", function()
  local report = crash_everywhere("release.lua", { params = { version = "1.2.0" }, fakes = fakes })
  expect(report.outcome).to_be("succeeded")
  expect(report.points >= 10).to_be_truthy()
  -- A step in flight at a crash runs again (at-least-once): shown, not a failure.
  expect(report.repeated).to_contain("migrate")
end)

test("so does its rollback", function()
  local failing = { exec = fakes.exec, http = fakes.http, faults = { { step = "smoke", error = "smoke failed" } } }
  local report = crash_everywhere("release.lua", { params = { version = "1.2.0" }, fakes = failing })
  expect(report.outcome).to_be("rolled_back")
end)
