local exec_fakes = { { match = "git fetch" }, { match = "psql -f up.sql" }, { match = "psql -f down.sql" } }
local function http_fakes(health, ready, home)
  return {
    { match = "GET https://app.example.com/api/health", answers = health or { { json = { status = "ok" } } } },
    { match = "GET https://app.example.com/ready", answers = ready or { { status = 200 } } },
    { match = "GET https://app.example.com/", status = home or 200 },
  }
end

describe("release", function()
  test("goes through every step with the calls it needs", function()
    local r = run("release.lua", { params = { version = "1.2.0" }, fakes = { exec = exec_fakes, http = http_fakes() } })
    expect(r.status).to_be("succeeded")
    expect(r.exit_code).to_be(0)
    expect(r.steps.health.result).to_be("ok")
    expect(r.steps.smoke.result).to_be(true)
    expect_calls(r, "exec", { "git fetch origin v1.2.0", "psql -f up.sql" })
    expect_calls(r, "http", { count = 3 })
  end)

  test("a failed step rolls the migration back", function()
    local r = run("release.lua", { params = { version = "1.2.0" }, fakes = { exec = exec_fakes, http = http_fakes(),
      faults = { { step = "smoke", error = "the smoke request timed out" } } } })
    expect(r.status).to_be("rolled_back")
    expect(r.exit_code).to_be(1)
    expect(r.steps.migrate.undo_status).to_be("done")
    expect(r.steps.smoke.error).to_match("the smoke request timed out")
    expect_calls(r, "exec", { "git fetch", "psql -f up.sql", "psql -f down.sql" })
  end)

  test("retries back off and waits on the virtual clock", function()
    local unhealthy = { status = 503 }
    local r = run("release.lua", { params = { version = "1.2.0" }, fakes = { exec = exec_fakes,
      http = http_fakes({ unhealthy, unhealthy, unhealthy, unhealthy, { json = { status = "ok" } } },
                        { unhealthy, unhealthy, { status = 200 } }) } })
    expect(r.status).to_be("succeeded")
    expect(r.steps.health.attempts).to_be(5)
    -- Four backoffs from 10 minutes (doubling, at most an hour, with jitter): well over an hour.
    local health = time_of(r.steps.health.finished_at) - time_of(r.steps.fetch.finished_at)
    expect(health > 3600).to_be_truthy()
    -- Two polls a minute apart, then the 30 minute pause.
    local wait = time_of(r.steps.wait.finished_at) - time_of(r.steps.wait.started_at)
    expect(wait >= 32 * 60 and wait < 33 * 60).to_be_truthy()
  end)

  test("a step can be faked whole", function()
    local r = run("release.lua", { params = { version = "1.2.0" }, fakes = { exec = exec_fakes, http = http_fakes(),
      steps = { fetch = { result = 42 }, health = { error = "the load balancer says no" } } } })
    expect(r.steps.fetch.result).to_be(42)
    expect(r.steps.health.error).to_contain("the load balancer says no")
    expect_calls(r, "exec", { count = 0 })
  end)

  test("bad params are the run's outcome, not a crash of the test", function()
    local r = run("release.lua", { params = {} })
    expect(r.status).to_be("not_started")
    expect(r.exit_code).to_be(2)
    expect(r.error).to_contain("version")
  end)
end)

test("expectations say what they expected", function()
  expect(function() expect(1).to_be(2) end).to_fail_with("expected 2, got 1")
  expect(function() expect({ a = { b = 1 } }).to_equal({ a = { b = 2 } }) end).to_fail_with("at %.a%.b: got 1, want 2")
  expect(function() expect("abc").to_match("^b") end).to_fail_with("does not match")
  expect({ 1, { x = 2 } }).to_contain({ x = 2 })
  expect(function() error("boom") end).to_fail_with("boom")
end)
