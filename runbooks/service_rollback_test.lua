-- service_rollback.lua: stop in order, switch each service back, start in order, health-checked.
local HOSTS = { "web-1", "web-2" }
local params = { services = { "worker", "backend" }, health = { "backend=http://{host}:8080/health" } }

local function world(extra)
  local f = { ssh = { { group = "web", hosts = HOSTS },
                      { match = "systemctl stop" }, { match = "systemctl start" },
                      { match = "readlink", stdout = "/srv/x/releases/2.0.0\n" },
                      { match = "cat '/srv/worker/previous'", stdout = "1.9.0\n" },
                      { match = "cat '/srv/backend/previous'", stdout = "1.9.0\n" },
                      { match = "ln -sfn 'releases/1.9.0' current.next" } },
              http = { { pattern = "^GET http://web%-%d:8080/health$" } } }
  return with_fakes(f, extra)
end

describe("service_rollback", function()
  test("stops every service, switches each back, starts them in order", function()
    local r = run("service_rollback.lua", { params = params, fakes = world() })
    expect(r.status).to_be("succeeded")
    expect(r.steps["restore worker"].result["web-1"]).to_equal({ from = "2.0.0", to = "1.9.0" })
    expect_calls(r, "ssh", { "systemctl stop worker", "systemctl stop backend", "releases/1.9.0", "systemctl start worker",
                             "systemctl start backend", in_order = true, mutating = true })
    expect_calls(r, "http", { "GET http://web-1:8080/health", "GET http://web-2:8080/health" })
  end)

  test("a service with no release before stops the run before anything starts", function()
    local r = run("service_rollback.lua", { params = params,
      fakes = world({ ssh = { { match = "cat '/srv/backend/previous'", code = 1 } } }) })
    expect(r.status).to_be("failed")
    expect(r.steps["restore backend"].error).to_contain("no release before 2.0.0")
    expect(r.steps["start worker"]).to_be(nil)
  end)

  test("a host that went down after stopping is reported by name", function()
    local r = run("service_rollback.lua", { params = params,
      fakes = world({ ssh = { { host = "web-2", down_after = 2 } } }) })
    expect(r.status).to_be("failed")
    expect(r.error).to_contain("web-2")
  end)

  test("survives a crash at any point", function()
    local proof = crash_everywhere("service_rollback.lua", { params = params, fakes = world() })
    expect(proof.outcome).to_be("succeeded")
  end)
end)
