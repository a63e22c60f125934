-- scaling_check.lua: the triggers measured on the hosts and the database; a fired trigger hands
-- a spare to scale out, idle hosts hand one to scale in, each behind an approval.
local haproxy = require "runbook.fake_haproxy"
local HOSTS = { "web-1", "web-2" }

-- /proc/stat's first line, `busy` percent of each second busy; /proc/meminfo with `used` percent.
local function host(name, busy, used)
  return {
    { host = name, match = "head -1 /proc/stat", respond = function(_, _, n)
        return { stdout = string.format("cpu  %d 0 0 %d 0 0 0 0 0 0\n", busy * n, (100 - busy) * n) }
      end },
    { host = name, match = "cat /proc/meminfo",
      stdout = string.format("MemTotal:       1000 kB\nMemAvailable:   %d kB\n", 1000 - used * 10) },
  }
end

local function world(busy, used, extra)
  local lb = haproxy.new { backend = "app", servers = { ["web-1:3000"] = 100, ["web-2:3000"] = 100 } }
  local f = { ssh = { { group = "web", hosts = HOSTS } }, exec = { lb.exec() },
              http = { { match = "POST https://chat.example.com/hook" } } }
  for _, h in ipairs(HOSTS) do
    for _, e in ipairs(host(h, busy, used)) do table.insert(f.ssh, e) end
  end
  return with_fakes(f, extra)
end

local spare_fakes = {
  ssh = { { host = "web-1", match = "readlink '/srv/app/current'", stdout = "/srv/app/releases/1.1.0\n" },
          { host = "web-1", match = "tar -czf" }, { host = "web-1", match = "rm -f '/tmp/runbook-scale-" },
          { host = "web-9", match = "test -e", code = 1 }, { host = "web-9", match = "mkdir -p" },
          { host = "web-9", match = "readlink '/srv/app/current'", code = 1 },
          { host = "web-9", match = "ln -sfn 'releases/1.1.0' current.next" } },
  http = { { match = "GET http://web-9:8080/health" } } }

local params = { hosts = { "web" }, lb = "haproxy", webhook = "https://chat.example.com/hook" }
local function with(extra)
  local t = {}
  for k, v in pairs(params) do t[k] = v end
  for k, v in pairs(extra) do t[k] = v end
  return t
end

describe("scaling_check", function()
  test("hosts under the thresholds fire nothing and post nothing", function()
    local r = run("scaling_check.lua", { params = params, fakes = world(50, 40) })
    expect(r.status).to_be("succeeded")
    expect(r.steps.hosts.result["web-1"]).to_equal({ cpu = { 50, 50, 50 }, memory = 40 })
    expect(r.steps.triggers.result.fired).to_equal({})
    expect_calls(r, "http", { count = 0 })
  end)

  test("sustained CPU and memory fire, are posted, and hand the spare to scale out after an approval", function()
    local p = with({ spare = "web-9", health_url = "http://{host}:8080/health" })
    local r = run("scaling_check.lua", { params = p, fakes = world(95, 93, spare_fakes) })
    expect(r.status).to_be("waiting_approval")
    expect(r.steps.triggers.result.fired).to_contain("web-1: CPU over 80% in 3 samples")
    expect(r.steps.triggers.result.fired).to_contain("web-2: memory 93.0% used")
    expect_calls(r, "http", { "POST https://chat.example.com/hook" })
    local done = resume(r, { approve = true })
    expect(done.status).to_be("succeeded")
    expect(done.steps["full weight"].result.weight).to_be(100)
  end)

  test("idle hosts hand the one to retire to scale in after an approval", function()
    local p = with({ retire = "web-2", idle_percent = 10 })
    local r = run("scaling_check.lua", { params = p, fakes = world(5, 30), approve = true })
    expect(r.status).to_be("succeeded")
    expect(r.steps.triggers.result.idle).to_be(true)
    expect_calls(r, "exec", { "set weight app/web-2:3000 0", "del server app/web-2:3000", in_order = true })
  end)

  test("a host that cannot be reached fails the check, naming it", function()
    local r = run("scaling_check.lua", { params = params, fakes = world(50, 40, { ssh = { { host = "web-2", down = true } } }) })
    expect(r.status).to_be("rolled_back")
    expect(r.steps.hosts.error).to_contain("web-2")
  end)

  test("survives a crash at any point, the scale out included", function()
    local p = with({ spare = "web-9", health_url = "http://{host}:8080/health" })
    local proof = crash_everywhere("scaling_check.lua", { params = p, fakes = world(95, 93, spare_fakes), approve = true })
    expect(proof.outcome).to_be("succeeded")
  end)
end)
