-- maintenance_monthly.lua: REINDEX and VACUUM ANALYZE each table in a step of its own.
local params = { database_url = "postgres://dba:pw@db.internal/app", tables = { "orders", "users" } }

local function fakes(extra)
  local f = { db = {
    { match = "from information_schema.tables", value = 1 },
    { match = "not i.indisvalid", rows = {} },
    { match = "pg_total_relation_size", answers = { { value = 1000 }, { value = 600 }, { value = 500 }, { value = 450 } } },
    { match = "format('REINDEX TABLE CONCURRENTLY %s'", answers = { { value = "REINDEX TABLE CONCURRENTLY orders" },
                                                                    { value = "REINDEX TABLE CONCURRENTLY users" } } },
    { match = "REINDEX TABLE CONCURRENTLY orders" }, { match = "REINDEX TABLE CONCURRENTLY users" },
    { match = "format('VACUUM ANALYZE %I.%I'", answers = { { value = "VACUUM ANALYZE public.orders" },
                                                           { value = "VACUUM ANALYZE public.users" } } },
    { match = "VACUUM ANALYZE public." } } }
  return with_fakes(f, { db = extra })
end

describe("maintenance_monthly", function()
  test("maintains each table and reports what it saved", function()
    local r = run("maintenance_monthly.lua", { params = params, fakes = fakes() })
    expect(r.status).to_be("succeeded")
    expect(r.steps["maintain orders"].result).to_equal({ before = 1000, after = 600 })
    expect(r.steps["maintain users"].result).to_equal({ before = 500, after = 450 })
    expect(r.steps.report.result.before).to_be(1500)
    expect(r.steps.report.result.after).to_be(1050)
    expect_calls(r, "db", { "REINDEX TABLE CONCURRENTLY orders", "VACUUM ANALYZE public.orders",
                            "REINDEX TABLE CONCURRENTLY users", "VACUUM ANALYZE public.users", mutating = true })
  end)

  test("a table that does not exist stops the run before anything is done", function()
    local r = run("maintenance_monthly.lua", { params = params,
      fakes = { db = { { match = "from information_schema.tables", answers = { { value = 1 }, { value = 0 } } } } } })
    expect(r.status).to_be("failed")
    expect(r.steps["check tables"].error).to_contain("no such table(s): users")
  end)

  test("what an interrupted REINDEX left is dropped first", function()
    local r = run("maintenance_monthly.lua", { params = params, fakes = fakes({
      { match = "not i.indisvalid", answers = { { rows = { { name = "public.orders_pkey_ccnew" } } }, { rows = {} } } },
      { match = "drop index concurrently if exists public.orders_pkey_ccnew" } }) })
    expect(r.status).to_be("succeeded")
    expect_calls(r, "db", { "drop index concurrently if exists public.orders_pkey_ccnew", "REINDEX TABLE CONCURRENTLY orders", in_order = true })
  end)

  test("a REINDEX that fails stops the run at that table", function()
    local r = run("maintenance_monthly.lua", { params = params, fakes = fakes({
      { match = "REINDEX TABLE CONCURRENTLY users", error = "could not obtain lock on relation \"users\"", sqlstate = "55P03" } }) })
    expect(r.status).to_be("failed")
    expect(r.steps["maintain orders"].status).to_be("succeeded")
    expect(r.steps["maintain users"].error).to_contain("SQLSTATE 55P03")
  end)

  test("survives a crash at any point", function()
    local proof = crash_everywhere("maintenance_monthly.lua", { params = params, fakes = fakes() })
    expect(proof.outcome).to_be("succeeded")
  end)
end)
