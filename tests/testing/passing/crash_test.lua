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
  -- Real calls would be made again at every crash point: refused.
  expect(function() crash_everywhere("release.lua", { fakes = { real = { "exec" } } }) end)
    .to_fail_with("`real` lets calls through to real systems")
end)

test("so does its rollback", function()
  local failing = { exec = fakes.exec, http = fakes.http, faults = { { step = "smoke", error = "smoke failed" } } }
  local report = crash_everywhere("release.lua", { params = { version = "1.2.0" }, fakes = failing })
  expect(report.outcome).to_be("rolled_back")
end)
