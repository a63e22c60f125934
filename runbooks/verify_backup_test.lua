-- verify_backup.lua: the restore drill on the latest backup, found by db_backup.lua.
local URL = "postgres://app:pw@db.internal:5432/app"
local params = { database_url = URL, store = "s3://backups/app" }

local function backed_up(answer)
  local b = run("db_backup.lua", { params = params, fakes = { backup = { answer } } })
  expect(b.status).to_be("succeeded")
  return b
end

describe("verify_backup", function()
  test("restores the latest backup and lists its tables", function()
    local b = backed_up({ match = "create", tables = { users = 10, orders = 42 } })
    local r = run("verify_backup.lua", { params = params, world = b })
    expect(r.status).to_be("succeeded")
    expect(r.steps["restore drill"].result.ok).to_be(true)
    expect(r.steps["restore drill"].result.tables).to_equal({ users = 10, orders = 42 })
    expect(r.steps["find the latest backup"].result.key).to_be(r.steps["restore drill"].result.key)
  end)

  test("an empty store fails the drill at once", function()
    local r = run("verify_backup.lua", { params = params })
    expect(r.status).to_be("failed")
    expect(r.steps["find the latest backup"].error).to_contain("no complete backup in s3://backups/app")
    expect_calls(r, "backup", { "latest s3://backups/app" })
  end)

  test("a restore that finds fewer rows fails the drill", function()
    local b = backed_up({ match = "create", tables = { users = 10 } })
    local r = run("verify_backup.lua", { params = params, world = b,
      fakes = { backup = { { match = "verify", problems = { "users: 9 rows restored, 10 in the backup" } } } } })
    expect(r.status).to_be("failed")
    expect(r.steps["restore drill"].error).to_contain("9 rows restored")
  end)

  test("a corrupt object fails the drill by its checksum", function()
    -- The night's own verification failed on it, and the drill finds the same.
    local b = run("db_backup.lua", { params = params, fakes = { backup = { { match = "create", corrupt = true } } } })
    expect(b.status).to_be("failed")
    local r = run("verify_backup.lua", { params = params, world = b })
    expect(r.status).to_be("failed")
    expect(r.steps["restore drill"].error).to_contain("checksum mismatch")
  end)

  test("survives a crash at any point", function()
    local b = backed_up({ match = "create", tables = { users = 10 } })
    local proof = crash_everywhere("verify_backup.lua", { params = params, world = b })
    expect(proof.outcome).to_be("succeeded")
  end)
end)
