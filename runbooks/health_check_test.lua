-- health_check.lua: services, the database and the buckets; fail when one is down.
local params = { services = { "api=https://api.example.com/health", "web=https://www.example.com/" },
                 database_url = "postgres://app:pw@db.internal/app", buckets = { "s3://assets", "s3://backups/app" },
                 webhook = "https://chat.example.com/hook" }

local function world(extra)
  local f = { http = { { match = "GET https://api.example.com/health" }, { match = "GET https://www.example.com/" },
                       { match = "POST https://chat.example.com/hook" } },
              db = { { match = "version() as version", rows = { { user = "app", database = "app", version = "16" } } } } }
  return with_fakes(f, extra)
end

describe("health_check", function()
  test("everything up is healthy", function()
    local r = run("health_check.lua", { params = params, fakes = world() })
    expect(r.status).to_be("succeeded")
    expect(r.steps.verdict.result).to_be("healthy")
    expect(r.steps.buckets.result).to_equal({ ok = true, problems = {} })
    expect_calls(r, "storage", { "open s3://assets", "list s3://assets/.runbook-probe/", "open s3://backups/app",
                                 "list s3://backups/app/.runbook-probe/" })
  end)

  test("a service answering 503 fails the verdict and posts once", function()
    local r = run("health_check.lua", { params = params,
      fakes = world({ http = { { match = "GET https://api.example.com/health", status = 503 } } }) })
    expect(r.status).to_be("failed")
    expect(r.steps.verdict.error).to_contain("api")
    expect_calls(r, "http", { "POST https://chat.example.com/hook", in_order = true })
  end)

  test("a database that is down and a bucket that is gone are both named", function()
    local r = run("health_check.lua", { params = params, fakes = world({
      db = { { match = "version() as version", error = "connection refused" } },
      storage = { { match = "list s3://assets/", error = "NoSuchBucket" } } }) })
    expect(r.status).to_be("failed")
    expect(r.steps.verdict.error).to_contain("database unreachable")
    expect(r.steps.verdict.error).to_contain("NoSuchBucket")
  end)

  test("without a database or buckets those checks are skipped", function()
    local r = run("health_check.lua", { params = { services = params.services }, fakes = world() })
    expect(r.status).to_be("succeeded")
    expect(r.steps.database.status).to_be("skipped")
    expect_calls(r, "db", { count = 0 })
  end)

  test("survives a crash at any point", function()
    local proof = crash_everywhere("health_check.lua", { params = params,
      fakes = world({ http = { { match = "GET https://api.example.com/health", status = 503 } } }) })
    expect(proof.outcome).to_be("failed")
  end)
end)
