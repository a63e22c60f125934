-- storage_quota.lua: each quota against the warning and critical thresholds.
local params = { database_url = "postgres://app:pw@db.internal/app", webhook = "https://chat.example.com/hook" }

local function quotas(rows)
  return { db = { { match = "from storage_quotas", rows = rows } },
           http = { { match = "POST https://chat.example.com/hook" } } }
end

describe("storage_quota", function()
  test("quotas under the thresholds pass, one past the warning is listed", function()
    local r = run("storage_quota.lua", { params = params, fakes = quotas({
      { name = "acme", used = 10, quota = 100 }, { name = "globex", used = 85, quota = 100 },
      { name = "initech", used = 5, quota = null } }) })
    expect(r.status).to_be("succeeded")
    expect(r.steps["check quotas"].result.warnings).to_equal({ "globex" })
    expect(#r.steps["check quotas"].result.quotas).to_be(2)
    expect_calls(r, "http", { count = 0 })
  end)

  test("one past the critical threshold fails the run and posts once", function()
    local r = run("storage_quota.lua", { params = params, fakes = quotas({ { name = "acme", used = 99, quota = 100 } }) })
    expect(r.status).to_be("failed")
    expect(r.error).to_contain("storage quota critical: acme 99.0% of quota used")
    expect_calls(r, "http", { "POST https://chat.example.com/hook" })
  end)

  test("survives a crash at any point", function()
    local proof = crash_everywhere("storage_quota.lua", { params = params,
      fakes = quotas({ { name = "acme", used = 99, quota = 100 } }) })
    expect(proof.outcome).to_be("failed")
  end)
end)
