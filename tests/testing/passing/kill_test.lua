-- A kill at a chosen point: the process stops dead there, and the resume goes on as after a
-- real crash.
local fakes = {
  exec = { { match = "git fetch" }, { match = "psql -f up.sql" }, { match = "psql -f down.sql" } },
  http = { { match = "GET https://app.example.com/api/health", json = { status = "ok" } },
           { match = "GET https://app.example.com/ready" }, { match = "GET https://app.example.com/" } },
}

test("killed inside a step, the resume runs that step again and nothing before it", function()
  local r = run("release.lua", { params = { version = "1.2.0" }, fakes = fakes, kill = { inside = "migrate" } })
  expect(r.killed).to_be("step 'migrate' succeeded")
  expect(r.status).to_be("interrupted")
  expect_calls(r, "exec", { "git fetch", "psql -f up.sql" })
  local again = resume(r)
  expect(again.status).to_be("succeeded")
  -- The migration ran again (its end was not recorded: at least once); the fetch did not.
  expect_calls(again, "exec", { "psql -f up.sql" })
end)

test("killed right after a step, the resume goes on from the next one", function()
  local r = run("release.lua", { params = { version = "1.2.0" }, fakes = fakes, kill = { after = "migrate" } })
  expect(r.status).to_be("interrupted")
  local again = resume(r)
  expect(again.status).to_be("succeeded")
  expect_calls(again, "exec", { count = 0 })
end)
