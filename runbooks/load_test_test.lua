-- load_test.lua: healthy before, the load held to its thresholds, healthy after.
local params = { url = "https://staging.example.com/" }

local function world(report)
  return { http = { { match = "GET https://staging.example.com/" },
                    { match = "LOAD https://staging.example.com/", requests = report.requests or 50000,
                      errors = report.errors or 0, latency = report.latency } } }
end

describe("load_test", function()
  test("a site within its thresholds passes, and the stages take their time", function()
    local r = run("load_test.lua", { params = params, fakes = world({ latency = { p50 = 0.2, p95 = 0.9, p99 = 1.5 } }) })
    expect(r.status).to_be("succeeded")
    expect(r.steps.load.result.requests).to_be(50000)
    -- Ramp up 2m, hold 5m, ramp down 2m on the virtual clock.
    local took = time_of(r.steps.load.finished_at) - time_of(r.steps.load.started_at)
    expect(took >= 9 * 60 and took < 10 * 60).to_be_truthy()
  end)

  test("a p95 over 2s fails the load step with the numbers", function()
    local r = run("load_test.lua", { params = params, fakes = world({ latency = { p50 = 0.5, p95 = 2.4, p99 = 3 } }) })
    expect(r.status).to_be("failed")
    expect(r.steps.load.error).to_contain("p95 2.4s > 2s")
  end)

  test("more than 1% errors fails it", function()
    local r = run("load_test.lua", { params = params,
      fakes = world({ errors = 1000, latency = { p50 = 0.2, p95 = 0.9 } }) })
    expect(r.status).to_be("failed")
    expect(r.steps.load.error).to_contain("error_rate 0.02 > 0.01")
  end)

  test("a site that is down before the test is never loaded", function()
    local r = run("load_test.lua", { params = params, fakes = { http = { { match = "GET https://staging.example.com/", status = 502 } } } })
    expect(r.status).to_be("failed")
    expect(r.steps.load).to_be(nil)
  end)

  test("survives a crash at any point", function()
    local proof = crash_everywhere("load_test.lua", { params = params, fakes = world({ latency = { p95 = 0.9 } }) })
    expect(proof.outcome).to_be("succeeded")
  end)
end)
