-- kill_idle_connections.lua: the list, the approval, and only the listed sessions terminated.
local params = { database_url = "postgres://dba:pw@db.internal/app", idle_for = "30 minutes" }
local idle = { rows = { { pid = 101, user = "app", database = "app", application = "worker", idle_seconds = 4000 },
                        { pid = 102, user = "app", database = "app", application = "web", idle_seconds = 2500 } } }

local function fakes(listed, terminated)
  return { db = { { match = "from pg_stat_activity", rows = listed.rows },
                  { match = "select pg_terminate_backend(pid)", count = terminated } } }
end

describe("kill_idle_connections", function()
  test("waits for an approval before terminating anything", function()
    local r = run("kill_idle_connections.lua", { params = params, fakes = fakes(idle, 2) })
    expect(r.status).to_be("waiting_approval")
    expect(r.steps["list idle connections"].result[2].pid).to_be(102)
    expect_calls(r, "db", { count = 1 })
  end)

  test("terminates exactly the listed sessions once approved", function()
    local r = run("kill_idle_connections.lua", { params = params, fakes = fakes(idle, 2), approve = true })
    expect(r.status).to_be("succeeded")
    expect(r.steps.terminate.result).to_equal({ listed = 2, terminated = 2 })
    expect_calls(r, "db", { "pg_stat_activity", "pg_terminate_backend" })
    -- The pids listed are bound as the statement's first parameter.
    local terminate ---@type TestCall
    for _, c in ipairs(r.calls) do if c.call:find("pg_terminate_backend", 1, true) then terminate = c end end
    expect(terminate.args[1]).to_contain("101")
    expect(terminate.args[1]).to_contain("102")
  end)

  test("a session that woke up meanwhile is spared", function()
    local r = run("kill_idle_connections.lua", { params = params, fakes = fakes(idle, 1), approve = true })
    expect(r.steps.terminate.result).to_equal({ listed = 2, terminated = 1 })
  end)

  test("with nothing idle there is no gate and nothing to terminate", function()
    local r = run("kill_idle_connections.lua", { params = params, fakes = fakes({ rows = {} }, 0) })
    expect(r.status).to_be("succeeded")
    expect(r.steps.terminate).to_be(nil)
  end)

  test("a server that refuses the connection fails the run before any step", function()
    local r = run("kill_idle_connections.lua", { params = params,
      fakes = { db = { { url = "db.internal", down = "too many connections for role \"dba\"" } } } })
    expect(r.status).to_be("failed")
    expect(r.error).to_contain("too many connections")
  end)

  test("survives a crash at any point", function()
    local proof = crash_everywhere("kill_idle_connections.lua", { params = params, fakes = fakes(idle, 2), approve = true })
    expect(proof.outcome).to_be("succeeded")
  end)
end)
