-- cert_expiry.lua: fine, a warning, and a failed run (posted once) for what is critical.
local params = { hosts = { "app.example.com", "api.example.com:8443" }, webhook = "https://chat.example.com/hook" }

local function certs(app, api)
  return { { match = "app.example.com:443", days_left = app }, { match = "api.example.com:8443", days_left = api } }
end

describe("cert_expiry", function()
  test("certificates far from expiry pass", function()
    local r = run("cert_expiry.lua", { params = params, fakes = { tls = certs(200, 90) } })
    expect(r.status).to_be("succeeded")
    expect(r.steps["check certificates"].result.level).to_be("ok")
    expect_calls(r, "tls", { "app.example.com:443", "api.example.com:8443" })
    expect_calls(r, "http", { count = 0 })
  end)

  test("one under warn_days is a warning, and the run still succeeds", function()
    local r = run("cert_expiry.lua", { params = params, fakes = { tls = certs(200, 20) } })
    expect(r.status).to_be("succeeded")
    expect(r.steps["check certificates"].result.level).to_be("warning")
    expect(r.steps["check certificates"].result.hosts["api.example.com:8443"].days_left).to_be(20)
  end)

  test("one under critical_days fails the run and posts to the webhook once", function()
    local r = run("cert_expiry.lua", { params = params, fakes = { tls = certs(3, 90),
      http = { { match = "POST https://chat.example.com/hook" } } } })
    expect(r.status).to_be("failed")
    expect(r.error).to_contain("app.example.com expires in 3 days")
    expect(#r.notifications).to_be(1)
    expect(r.notifications[1].url).to_be("https://chat.example.com/hook")
    expect(r.notifications[1].json.failed_step).to_be("check certificates")
    expect(r.notifications[1].json.error).to_contain("expires in 3 days")
  end)

  test("a certificate that does not verify is critical", function()
    local r = run("cert_expiry.lua", { params = params, fakes = {
      tls = { { match = "app.example.com", days_left = 200, valid = false, reason = "self-signed certificate" },
              { match = "api.example.com", days_left = 90 } },
      http = { { match = "POST https://chat.example.com/hook" } } } })
    expect(r.status).to_be("failed")
    expect(r.error).to_contain("self-signed certificate")
  end)

  test("a host that cannot be reached is critical", function()
    local r = run("cert_expiry.lua", { params = params, fakes = {
      tls = { { match = "app.example.com", error = "connect: connection refused" }, { match = "api.example.com", days_left = 90 } },
      http = { { match = "POST https://chat.example.com/hook" } } } })
    expect(r.status).to_be("failed")
    expect(r.error).to_contain("connection refused")
  end)

  test("survives a crash at any point", function()
    local proof = crash_everywhere("cert_expiry.lua", { params = params, fakes = { tls = certs(200, 20) } })
    expect(proof.outcome).to_be("succeeded")
  end)

  test("the failure path survives a crash at any point and posts the webhook once", function()
    local proof = crash_everywhere("cert_expiry.lua", { params = params, fakes = { tls = certs(3, 90),
      http = { { match = "POST https://chat.example.com/hook" } } } })
    expect(proof.outcome).to_be("failed")
  end)
end)
