-- reindex_bloated.lua: estimate, then REINDEX CONCURRENTLY each bloated index in a step of its own.
local params = { database_url = "postgres://dba:pw@db.internal/app", min_bloat_pct = 30 }
local bloat = { rows = {
  { schema = "public", index = "orders_pkey", table = "orders", bloat_bytes = 500000000, bloat_pct = 62.5 },
  { schema = "public", index = "users_email", table = "users", bloat_bytes = 20000000, bloat_pct = 12.0 } } }

local function fakes(extra)
  local f = { db = {
    { match = "analyze" },
    { match = "with bs as", rows = bloat.rows },
    { match = "pg_relation_size", answers = { { value = 800000000 }, { value = 300000000 } } },
    { match = "as table_name", rows = { { table_name = "public.orders" } } },
    { match = "not i.indisvalid", rows = {} },
    { match = "select format('%I.%I', $1::text, $2::text)", value = "public.orders_pkey" },
    { match = "set_config('lock_timeout'" },
    { match = "reindex index concurrently public.orders_pkey" } } }
  return with_fakes(f, { db = extra })
end

describe("reindex_bloated", function()
  test("reindexes only the index past both limits", function()
    local r = run("reindex_bloated.lua", { params = params, fakes = fakes() })
    expect(r.status).to_be("succeeded")
    expect(#r.steps.estimate.result).to_be(1)
    expect(r.steps["reindex public.orders_pkey"].result).to_equal({ before = 800000000, after = 300000000, attempts = 1,
                                                                  dropped = {} })
    expect(r.steps["reindex public.users_email"]).to_be(nil)
  end)

  test("a lock timeout is retried after a pause", function()
    local r = run("reindex_bloated.lua", { params = params, fakes = fakes({
      { match = "reindex index concurrently public.orders_pkey",
        answers = { { error = "canceling statement due to lock timeout", sqlstate = "55P03" }, {} } } }) })
    expect(r.status).to_be("succeeded")
    expect(r.steps["reindex public.orders_pkey"].result.attempts).to_be(2)
  end)

  test("another error fails the index's step", function()
    local r = run("reindex_bloated.lua", { params = params, fakes = fakes({
      { match = "reindex index concurrently public.orders_pkey", error = "could not create unique index", sqlstate = "23505" } }) })
    expect(r.status).to_be("failed")
    expect(r.steps["reindex public.orders_pkey"].error).to_contain("23505")
  end)

  test("survives a crash at any point", function()
    local proof = crash_everywhere("reindex_bloated.lua", { params = params, fakes = fakes() })
    expect(proof.outcome).to_be("succeeded")
  end)
end)
