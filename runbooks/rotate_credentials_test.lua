-- rotate_credentials.lua: the new password set by verifier, handed over, proven, old sessions ended.
local params = { database_url = "postgres://admin:pw@db.internal/postgres", role = "app", write_to = "/etc/app/db_password" }

local function fakes(extra)
  local f = {
    db = { { url = "admin@db.internal", match = "select exists (select 1 from pg_roles", value = true },
           { url = "admin@db.internal", match = "rolcanlogin as can_login", rows = { { can_login = true, valid_until = null } } },
           { url = "admin@db.internal", match = "set_password app" },
           { url = "app@127.0.0.1:5432/postgres", match = "select current_user", value = "app" },
           { url = "admin@db.internal", match = "pg_terminate_backend(pid) as done",
             rows = { { pid = 11, done = true }, { pid = 12, done = true } } } },
    exec = { { match = "sh -c" } } }
  for k, v in pairs(extra or {}) do f[k] = v end
  return f
end

describe("rotate_credentials", function()
  test("sets, hands over and proves the new password, then ends the old sessions", function()
    local r = run("rotate_credentials.lua", { params = params, fakes = fakes() })
    expect(r.status).to_be("succeeded")
    expect(r.steps.rotate.result).to_equal({ logged_in_as = "app", written = "/etc/app/db_password" })
    expect(r.steps["end old sessions"].result).to_equal({ terminated = { 11, 12 } })
    expect_calls(r, "db", { "set_password app", "select current_user", "pg_terminate_backend", in_order = true })
    -- The new password is in no call: it went by stdin and by verifier.
    for _, c in ipairs(r.calls) do
      expect(c.call:find("app:", 1, true)).to_be(nil)
    end
  end)

  test("a role that does not exist stops the run before anything changes", function()
    local r = run("rotate_credentials.lua", { params = params,
      fakes = fakes({ db = { { match = "select exists (select 1 from pg_roles", value = false } } }) })
    expect(r.status).to_be("failed")
    expect(r.steps["check role"].error).to_contain("role app does not exist")
    expect_calls(r, "exec", { count = 0 })
  end)

  test("a login that fails with the new password fails the rotation", function()
    local f = fakes()
    table.insert(f.db, { url = "app@127.0.0.1:5432/postgres", match = "select current_user",
                         error = "password authentication failed for user \"app\"", sqlstate = "28P01" })
    local r = run("rotate_credentials.lua", { params = params, fakes = f })
    expect(r.status).to_be("failed")
    expect(r.steps.rotate.error).to_contain("28P01")
    expect(r.steps["end old sessions"]).to_be(nil)
  end)

  test("survives a crash at any point", function()
    local proof = crash_everywhere("rotate_credentials.lua", { params = params, fakes = fakes() })
    expect(proof.outcome).to_be("succeeded")
  end)
end)
