local function fakes(extra)
  local f = {
    http = {
      { match = "GET https://app.example.com/ready", answers = { { json = { state = "starting" } }, { json = { state = "up" } } } },
      -- The longest match answers: the health check is not caught by the home page's fake.
      { match = "GET https://app.example.com/", body = "home" },
      { match = "GET https://app.example.com/api/health", json = { status = "ok" } },
    },
    exec = { { match = "curl", code = 7 } },
    secrets = { API_TOKEN = "t0k3n" },
    env = { REGION = "eu-west-1" },
  }
  for k, v in pairs(extra or {}) do f[k] = v end
  return f
end

test("fakes hold to what the real primitives check", function()
  local r = run("checks.lua", { fakes = fakes() })
  expect(r.status).to_be("succeeded")
  -- Polled a minute apart until the body said "up".
  expect(time_of(r.steps.ready.finished_at) - time_of(r.steps.ready.started_at) >= 60).to_be_truthy()
  expect(r.steps.token.result).to_equal({ code = 7, name = "API_TOKEN" })
  expect(r.steps.region.result.region).to_be("eu-west-1")
  expect(tonumber(r.steps.region.result.year) >= 2026).to_be_truthy()
  expect(r.steps.argv.result).to_contain("is the secret 'API_TOKEN'")
  expect(r.steps.specific.result).to_equal({ health = "ok", home = "home" })
end)

test("a step's timeout is kept on the virtual clock", function()
  local never = { match = "GET https://app.example.com/ready", json = { state = "starting" } }
  local r = run("checks.lua", { fakes = fakes({ http = { never } }) })
  expect(r.status).to_be("failed")
  expect(r.steps.ready.error).to_contain("timed out after 5m")
  local took = time_of(r.steps.ready.finished_at) - time_of(r.steps.ready.started_at)
  expect(took >= 300 and took < 301).to_be_truthy()
end)

test("a secret the test does not give is an unfaked call", function()
  expect(function()
    run("checks.lua", { fakes = fakes({ secrets = {} }) })
  end).to_fail_with("unfaked call: secret API_TOKEN")
end)
