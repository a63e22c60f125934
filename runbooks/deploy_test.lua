-- deploy.lua: pre-flight, backup, migration, schema check, a canary release, health and smoke;
-- and each failure the guides fear, with what the rollback puts back.
local params = {
  version = "1.1.0", from = "build/app-1.1.0.tar.gz", hosts = "web", health_url = "http://{host}:8080/health",
  database_url = "postgres://app:pw@db.internal:5432/app", migration = "migrations/0042_up.sql",
  down_migration = "migrations/0042_down.sql", expect_tables = { "media_assets" }, smoke = { "/", "/api/status" },
  restart = "systemctl restart app",
}
local HOSTS = { "web-1", "web-2", "web-3" }

local function with(base, extra)
  local t = {}
  for k, v in pairs(base) do t[k] = v end
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

-- Hosts on 1.0.0, a healthy service, a database that takes the migration.
local function world(extra)
  local f = {
    db = { { match = "version() as version", rows = { { user = "app", database = "app", version = "PostgreSQL 16" } } },
           { match = "file migrations/0042_up.sql", count = 3 },
           { match = "file migrations/0042_down.sql", count = 2 },
           { match = "from information_schema.tables", value = 1 } },
    backup = { { match = "create", tables = { users = 10 } } },
    ssh = { { group = "web", hosts = HOSTS },
            { match = "test -e", code = 1 },
            { match = "mkdir -p" },
            { match = "ln -sfn 'releases/1.1.0' current.next" },
            { match = "systemctl restart app" },
            { match = "cat '/srv/app/previous'", stdout = "1.0.0\n" },
            { match = "ln -sfn 'releases/1.0.0' current.next" } },
    http = { { pattern = "^GET http://web%-%d:8080/health$", status = 200 },
             { pattern = "^GET http://web%-%d:8080/", status = 200 } },
  }
  -- `current` on each host: 1.0.0 until the release switches it to 1.1.0.
  for _, host in ipairs(HOSTS) do
    table.insert(f.ssh, { host = host, match = "readlink '/srv/app/current'",
                          answers = { { stdout = "/srv/app/releases/1.0.0\n" }, { stdout = "/srv/app/releases/1.1.0\n" } } })
  end
  return with_fakes(f, extra)
end

describe("deploy", function()
  test("releases to a canary, then the other hosts, and checks them", function()
    local r = run("deploy.lua", { params = params, fakes = world() })
    expect(r.status).to_be("succeeded")
    expect(r.steps.migrate.result).to_be(3)
    expect(r.steps.release.result).to_equal({ ["web-1"] = "ok", ["web-2"] = "ok", ["web-3"] = "ok" })
    expect(r.steps.smoke.result).to_be(6)
    -- The canary first: web-1 switched before web-2 and web-3 were touched.
    expect_calls(r, "ssh", { "web-1: cd '/srv/app' && test -d 'releases/1.1.0'", "web-2: mkdir -p",
                             "web-3: mkdir -p", in_order = true })
    expect_calls(r, "ssh", { "web-1: upload", "web-2: upload", "web-3: upload", in_order = true })
  end)

  test("a migration that fails changes nothing and releases nothing", function()
    local r = run("deploy.lua", { params = params, fakes = world({
      db = { { match = "file migrations/0042_up.sql", error = "relation \"media_assets\" already exists", sqlstate = "42P07" } } }) })
    expect(r.status).to_be("rolled_back")
    expect(r.steps.migrate.error).to_contain("42P07")
    expect(r.steps.release).to_be(nil)
    expect_calls(r, "ssh", { count = 0 })
  end)

  test("a canary that is not healthy is rolled back, the others are never touched, the migration reverted", function()
    local r = run("deploy.lua", { params = params, fakes = world({
      http = { { match = "GET http://web-1:8080/health", status = 503 } } }) })
    expect(r.status).to_be("rolled_back")
    expect(r.steps.release.error).to_contain("web-1")
    expect(r.steps.migrate.undo_status).to_be("done")
    expect_calls(r, "db", { "file migrations/0042_down.sql", in_order = true })
    expect_calls(r, "ssh", { "web-1: cat '/srv/app/previous'", "web-1: cd '/srv/app' && ln -sfn 'releases/1.0.0'",
                             in_order = true })
    for _, c in ipairs(r.calls) do
      if c.primitive == "ssh" then expect(c.call:match("^web%-[23]: .*1%.1%.0") == nil).to_be_truthy() end
    end
  end)

  test("a host down mid-rollout halts it and rolls back the hosts already on the release", function()
    local r = run("deploy.lua", { params = params, fakes = world({ ssh = { { host = "web-3", down = true } } }) })
    expect(r.status).to_be("rolled_back")
    expect(r.steps.release.error).to_contain("web-3")
    expect(r.steps.release.error).to_contain("the host is down")
    expect_calls(r, "ssh", { "web-1: cat '/srv/app/previous'", "web-2: cat '/srv/app/previous'", in_order = true })
    expect(r.steps.migrate.undo_status).to_be("done")
  end)

  test("a smoke request that fails rolls back every host's release and the database", function()
    local r = run("deploy.lua", { params = params, fakes = world({
      http = { { match = "GET http://web-2:8080/api/status", status = 500 } } }) })
    expect(r.status).to_be("rolled_back")
    expect(r.steps.smoke.error).to_contain("answered 500")
    expect(r.steps.release.undo_status).to_be("done")
    expect(r.steps.migrate.undo_status).to_be("done")
    expect_calls(r, "ssh", { "web-1: cd '/srv/app' && ln -sfn 'releases/1.0.0'", "web-2: cd '/srv/app' && ln -sfn 'releases/1.0.0'",
                             "web-3: cd '/srv/app' && ln -sfn 'releases/1.0.0'", in_order = true })
  end)

  test("without a down migration the rollback restores the pre-deploy backup", function()
    local without = with(params)
    without.down_migration = nil
    local r = run("deploy.lua", { params = without, fakes = world({
      db = { { match = "schema" } },
      http = { { match = "GET http://web-2:8080/api/status", status = 500 } } }) })
    expect(r.status).to_be("rolled_back")
    expect(r.steps.migrate.undo_status).to_be("done")
    expect_calls(r, "backup", { "create", "restore postgres-app-", in_order = true })
    expect_calls(r, "db", { "alter schema public rename to public_before_rollback_1_1_0", "create schema public",
                            "drop schema public_before_rollback_1_1_0 cascade", in_order = true })
  end)

  test("survives a crash at any point of a release", function()
    local proof = crash_everywhere("deploy.lua", { params = params, fakes = world() })
    expect(proof.outcome).to_be("succeeded")
  end)

  test("survives a crash at any point of a rollback", function()
    local proof = crash_everywhere("deploy.lua", { params = params, fakes = world({
      http = { { match = "GET http://web-2:8080/api/status", status = 500 } } }) })
    expect(proof.outcome).to_be("rolled_back")
  end)
end)
