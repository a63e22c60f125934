-- Tests of hello.lua: `runbook test` runs them through the real engine, with fakes in place of
-- the network and the commands, in milliseconds.
local fakes = {
  http = { { match = "GET https://example.com/", status = 200 } },
  exec = { { match = "sh -c" } },
}

test("a healthy service is checked and recorded", function()
  local r = run("hello.lua", { fakes = fakes })
  expect(r.status).to_be("succeeded")
  expect(r.steps.health.result).to_be(200)
  expect_calls(r, "exec", { "checks.log" })
end)

test("a service that answers 503 is retried, then recorded", function()
  local flaky = { { match = "GET https://example.com/", answers = { { status = 503 }, { status = 200 } } } }
  local r = run("hello.lua", { fakes = { http = flaky, exec = fakes.exec } })
  expect(r.status).to_be("succeeded")
  expect(r.steps.health.attempts).to_be(2)
end)

test("a service that stays down fails the run before anything is recorded", function()
  local r = run("hello.lua", { fakes = { http = { { match = "GET", status = 503 } }, exec = fakes.exec } })
  expect(r.status).to_be("failed")
  expect(r.steps.health.error).to_contain("503")
  expect_calls(r, "exec", { count = 0 })
end)

test("it is safe to resume after a crash anywhere", function()
  crash_everywhere("hello.lua", { fakes = fakes })
end)
