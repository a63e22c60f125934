-- long_transactions.lua: the report, the blocking tree, and the guarded cancel or terminate.
local URL = "postgres://dba:pw@db.internal/app"
local old = { pid = 4242, user = "app", client_addr = "10.0.0.7", state = "idle in transaction",
              backend_start = "2026-12-03T08:00:00Z", xact_start = "2026-12-03T08:10:00Z", xact_age = "00:40:00",
              query = "update orders set state = 'paid' where id = 17" }
local waiter = { pid = 5151, user = "app", state = "active", blocked_by = { 4242 }, query = "update orders set ..." }

local function fakes(signalled)
  return { db = {
    { match = "file sql/long_transactions.sql", rows = { old } },
    { match = "pg_blocking_pids(a.pid) as blocked_by", rows = { waiter } },
    { pattern = "from pg_stat_activity%s+where pid = %$1$", rows = { old } },
    { match = "pg_terminate_backend(pid) as done", rows = signalled and { { done = true } } or {} },
    { match = "pg_cancel_backend(pid) as done", rows = signalled and { { done = true } } or {} } } }
end

describe("long_transactions", function()
  test("reports the sessions and who they block, and changes nothing", function()
    local r = run("long_transactions.lua", { params = { database_url = URL }, fakes = fakes(true) })
    expect(r.status).to_be("succeeded")
    expect(r.steps.list.result[1].pid).to_be(4242)
    expect(r.steps["blocking tree"].result.waiting).to_be(1)
    expect(r.steps["blocking tree"].result.roots[1].pid).to_be(4242)
    expect(r.steps.cancel).to_be(nil)
    for _, c in ipairs(r.calls) do expect(c.mutating).to_be(false) end
  end)

  test("terminates after an approval, only the session still in the same transaction", function()
    local r = run("long_transactions.lua", { params = { database_url = URL, action = "terminate" }, fakes = fakes(true) })
    expect(r.status).to_be("waiting_approval")
    local done = run("long_transactions.lua", { params = { database_url = URL, action = "terminate" }, fakes = fakes(true),
                                                 approve = true })
    expect(done.steps.terminate.result).to_equal({ done = { 4242 }, spared = {} })
    local terminate ---@type TestCall
    for _, c in ipairs(done.calls) do if c.call:find("pg_terminate_backend", 1, true) then terminate = c end end
    -- Guarded by the pid, its backend_start and its transaction's start.
    expect(terminate.args).to_equal({ "4242", "2026-12-03T08:00:00Z", "2026-12-03T08:10:00Z" })
  end)

  test("a session that moved on is spared", function()
    local r = run("long_transactions.lua", { params = { database_url = URL, action = "cancel" }, fakes = fakes(false),
                                             approve = true })
    expect(r.steps.cancel.result).to_equal({ done = {}, spared = { 4242 } })
  end)

  test("survives a crash at any point", function()
    local proof = crash_everywhere("long_transactions.lua", { params = { database_url = URL, action = "terminate" },
      fakes = fakes(true), approve = true })
    expect(proof.outcome).to_be("succeeded")
  end)
end)
