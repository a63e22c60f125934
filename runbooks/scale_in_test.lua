-- scale_in.lua: the host stops taking requests, those in flight finish, it leaves, its service stops.
local haproxy = require "runbook.fake_haproxy"
local params = { host = "web-2", lb = "haproxy", deadline = "1m", stop = "systemctl stop app", start = "systemctl start app" }

local function world(scur, extra)
  local lb = haproxy.new { backend = "app",
    servers = { ["web-1:3000"] = 100, ["web-2:3000"] = { weight = 100, scur = scur or 0 } } }
  local f = { exec = { lb.exec() },
              ssh = { { host = "web-2", match = "systemctl stop app" }, { host = "web-2", match = "systemctl start app" } } }
  return with_fakes(f, extra)
end

describe("scale_in", function()
  test("drains the requests in flight, removes the host and stops it", function()
    local r = run("scale_in.lua", { params = params, fakes = world(3) })
    expect(r.status).to_be("succeeded")
    expect(r.steps["note web-2"].result.weight).to_be(100)
    expect_calls(r, "exec", { "set weight app/web-2:3000 0", "disable server app/web-2:3000; del server app/web-2:3000",
                              in_order = true })
    expect_calls(r, "ssh", { "web-2: cd '/srv/app' && systemctl stop app", mutating = true })
  end)

  test("the last server taking requests is never drained", function()
    local lb = haproxy.new { backend = "app", servers = { ["web-1:3000"] = 0, ["web-2:3000"] = 100 } }
    local r = run("scale_in.lua", { params = params, fakes = { exec = { lb.exec() } } })
    expect(r.status).to_be("rolled_back")
    expect(r.steps["note web-2"].error).to_contain("would leave none")
    expect_calls(r, "exec", { count = 0, mutating = true })
  end)

  test("a service that will not stop puts the host back in the pool", function()
    local r = run("scale_in.lua", { params = params, fakes = world(0, {
      ssh = { { host = "web-2", match = "systemctl stop app", code = 1, stderr = "Job for app.service failed" } } }) })
    expect(r.status).to_be("rolled_back")
    expect(r.steps["remove web-2"].undo_status).to_be("done")
    expect(r.steps["drain web-2"].undo_status).to_be("done")
    expect_calls(r, "exec", { "add server app/web-2:3000 web-2:3000 weight 0", "set weight app/web-2:3000 100",
                              in_order = true })
  end)

  test("survives a crash at any point", function()
    local proof = crash_everywhere("scale_in.lua", { params = params, fakes = world(2) })
    expect(proof.outcome).to_be("succeeded")
  end)
end)
