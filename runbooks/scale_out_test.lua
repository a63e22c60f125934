-- scale_out.lua: a new host gets the pool's release, joins with a small share, is watched, then
-- takes its peers' weight; a host that fails its watch leaves the pool again.
local haproxy = require "runbook.fake_haproxy"
local params = { host = "web-3", lb = "haproxy", health_url = "http://{host}:8080/health", hold = "10m" }

local function world(extra)
  local lb = haproxy.new { backend = "app", servers = { ["web-1:3000"] = 100, ["web-2:3000"] = 100 } }
  local f = {
    exec = { lb.exec() },
    ssh = { { group = "web", hosts = { "web-1", "web-2" } },
            { host = "web-1", match = "readlink '/srv/app/current'", stdout = "/srv/app/releases/1.1.0\n" },
            { host = "web-1", match = "tar -czf" }, { host = "web-1", match = "rm -f '/tmp/runbook-scale-" },
            { host = "web-3", match = "test -e", code = 1 }, { host = "web-3", match = "mkdir -p" },
            { host = "web-3", match = "readlink '/srv/app/current'", code = 1 },
            { host = "web-3", match = "ln -sfn 'releases/1.1.0' current.next" } },
    http = { { match = "GET http://web-3:8080/health" } },
  }
  return with_fakes(f, extra)
end

describe("scale_out", function()
  test("joins at a tenth of the requests, is watched, then takes its peers' weight", function()
    local r = run("scale_out.lua", { params = params, fakes = world() })
    expect(r.status).to_be("succeeded")
    expect(r.steps["release on web-3"].result.id).to_be("1.1.0")
    expect(r.steps["release on web-3"].result.weight).to_be(22)
    expect(r.steps["full weight"].result).to_equal({ id = "1.1.0", weight = 100 })
    expect_calls(r, "exec", { "add server app/web-3:3000 web-3:3000 weight 22; enable server app/web-3:3000",
                              "set weight app/web-3:3000 100", in_order = true })
    -- Watched for the hold (after the 90s warmup) on the virtual clock.
    local watched = time_of(r.steps["watch web-3"].finished_at) - time_of(r.steps["watch web-3"].started_at)
    expect(watched >= 11 * 60).to_be_truthy()
  end)

  test("a host already in the pool is refused before anything is installed", function()
    local lb = haproxy.new { backend = "app", servers = { ["web-1:3000"] = 100, ["web-3:3000"] = 100 } }
    local r = run("scale_out.lua", { params = params, fakes = { exec = { lb.exec() },
      ssh = { { group = "web", hosts = { "web-1" } } } } })
    expect(r.status).to_be("rolled_back")
    expect(r.steps["release on web-3"].error).to_contain("is in haproxy app already")
    expect_calls(r, "ssh", { "group web" })
  end)

  test("a host that falls ill while watched leaves the pool again", function()
    local r = run("scale_out.lua", { params = params, fakes = world({
      http = { { match = "GET http://web-3:8080/health", answers = { {}, {}, { status = 503 } } } } }) })
    expect(r.status).to_be("rolled_back")
    expect(r.steps["join pool"].undo_status).to_be("done")
    expect_calls(r, "exec", { "add server app/web-3:3000", "set weight app/web-3:3000 0",
                              "disable server app/web-3:3000; del server app/web-3:3000", in_order = true })
  end)

  test("survives a crash at any point", function()
    local proof = crash_everywhere("scale_out.lua", { params = params, fakes = world() })
    expect(proof.outcome).to_be("succeeded")
  end)
end)
