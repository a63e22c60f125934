local function world()
  return {
    db = { { url = "db.internal", sqlite = true, schema = "create table orders (id integer primary key, state text)" } },
    storage = { { url = "s3://archive/app", objects = { ["seed.txt"] = "seeded" } } },
    ssh = { { match = "uptime", stdout = "up 3 days" }, { host = "web-2", down = true },
            { host = "web-3", host_key_changed = true } },
    tls = { { match = "db.internal:5432", days_left = 12 } },
    metrics = { { match = "sum(rate(errors[1m]))", answers = { { value = 0.01 }, { value = 0.09 }, { value = 0.09 }, { value = 0.09 } } } },
    -- A counter kept in the world's state: 1, 2, 3 in one run; again from 1 in the next.
    exec = { { match = "next-ticket", respond = function(_, _, _, state)
      state.n = (state.n or 0) + 1
      return { stdout = tostring(state.n) }
    end } },
  }
end

test("the fakes of a world behave as the world would", function()
  local r = run("world.lua", { fakes = world() })
  expect(r.status).to_be("succeeded")
  expect(r.steps.orders.result).to_be(1)
  -- os.getenv reads the test's env (none given), not the process's.
  expect(r.steps.archive.result).to_equal({ keys = { "orders/1.json" }, seeded = "seeded", copied = 8, tmp = "unset" })
  expect(r.steps.hosts.result.ok).to_be(true)
  expect(r.steps.hosts.result.down).to_contain("the host is down")
  expect(r.steps.hosts.result.key).to_contain("host key verification failed")
  expect(r.steps.certificate.result).to_be(12)
  -- The real analysis on the fake numbers: broken from the second sample, failed after 2m.
  expect(r.steps.canary.result).to_equal({ outcome = "failed", worst = 0.09 })
  expect(r.steps.counter.result).to_be(3)
  -- A param's `env` is read from the test's env, never the process's (the harness sets it there).
  expect(r.steps.token.result).to_be("none")
  local given = run("world.lua", { fakes = (function() local f = world(); f.env = { WORLD_API_TOKEN = "t0k3n-for-test" }; return f end)() })
  expect(given.steps.token.result).to_be("api_token")
  expect_calls(r, "db", { "insert or ignore into orders", "select count(*) from orders" })
  expect_calls(r, "storage", { "open s3://archive/app", "put s3://archive/app/orders/1.json",
                               "get s3://archive/app/orders/1.json into /tmp/runbook-world-test-must-not-exist.json",
                               in_order = true })
end)

test("a run on an earlier run's world finds what it left", function()
  local first = run("world.lua", { fakes = world() })
  local second = run("world.lua", { world = first, params = { order = 2 }, fakes = world() })
  expect(second.steps.orders.result).to_be(2)
  -- The seeded object is not seeded again over the world's.
  expect(second.steps.archive.result.seeded).to_be("seeded")
  expect(second.steps.counter.result).to_be(6)
end)

test("a store's call can be failed by a fake", function()
  local f = world()
  table.insert(f.storage, { match = "put s3://archive/app/orders/", error = "SlowDown: reduce your request rate" })
  local r = run("world.lua", { fakes = f })
  expect(r.status).to_be("failed")
  expect(r.steps.archive.error).to_contain("SlowDown")
end)

test("the world survives a crash, and each crash pass starts from a fresh one", function()
  local proof = crash_everywhere("world.lua", { fakes = world() })
  expect(proof.outcome).to_be("succeeded")
end)

