-- maintenance_weekly.lua: the report, and connections judged against max_connections.
local params = { database_url = "postgres://dba:pw@db.internal/app", top = 2 }

local function fakes(connections)
  return { db = {
    { match = "pg_database_size", rows = { { database = "app", bytes = 5368709120, pretty = "5120 MB" } } },
    { match = "from pg_tables", rows = { { schema = "public", table = "orders", bytes = 4e9, pretty = "3815 MB" },
                                         { schema = "public", table = "users", bytes = 1e9, pretty = "954 MB" } } },
    { match = "from pg_stat_activity", rows = connections },
    { match = "max_connections", value = "100" } } }
end

describe("maintenance_weekly", function()
  test("reports size, the largest tables and connections under the threshold", function()
    local r = run("maintenance_weekly.lua", { params = params,
      fakes = fakes({ { state = "active", n = 10 }, { state = "idle", n = 30 } }) })
    expect(r.status).to_be("succeeded")
    expect(r.steps["database size"].result.pretty).to_be("5120 MB")
    expect(#r.steps["table sizes"].result).to_be(2)
    expect(r.steps.connections.result).to_equal({ total = 40, max = 100, by_state = { active = 10, idle = 30 },
                                                  percent = 40.0, level = "ok" })
    -- A report: nothing it ran changes the database.
    for _, c in ipairs(r.calls) do expect(c.mutating).to_be(false) end
  end)

  test("connections past the threshold are a warning", function()
    local r = run("maintenance_weekly.lua", { params = params,
      fakes = fakes({ { state = "active", n = 50 }, { state = "idle", n = 35 } }) })
    expect(r.status).to_be("succeeded")
    expect(r.steps.connections.result.level).to_be("warning")
  end)

  test("survives a crash at any point", function()
    local proof = crash_everywhere("maintenance_weekly.lua", { params = params, fakes = fakes({ { state = "idle", n = 3 } }) })
    expect(proof.outcome).to_be("succeeded")
  end)
end)
