-- dr_restore.lua: the newest verified backup restored after an approval, counts compared.
local params = { database_url = "postgres://app:pw@db.internal:5432/app", store = "s3://backups/app" }
local dr = { target_url = "postgres://app:pw@db-new.internal:5432/app", store = "s3://backups/app" }

local function backed_up()
  local b = run("db_backup.lua", { params = params, fakes = { backup = { { match = "create", tables = { users = 10 } } } } })
  expect(b.status).to_be("succeeded")
  return b
end

describe("dr_restore", function()
  test("waits for an approval naming the backup before restoring", function()
    local r = run("dr_restore.lua", { params = dr, world = backed_up() })
    expect(r.status).to_be("waiting_approval")
    expect_calls(r, "backup", { "list s3://backups/app" })
  end)

  test("restores the newest verified backup and compares its counts", function()
    local r = run("dr_restore.lua", { params = dr, world = backed_up(), approve = true })
    expect(r.status).to_be("succeeded")
    expect(r.steps["compare counts"].result).to_equal({ users = 10 })
    expect_calls(r, "backup", { "list", "restore postgres-app-" })
  end)

  test("a restore with missing rows fails the comparison", function()
    local r = run("dr_restore.lua", { params = dr, world = backed_up(), approve = true,
      fakes = { backup = { { match = "restore", tables = { users = 7 } } } } })
    expect(r.status).to_be("failed")
    expect(r.steps["compare counts"].error).to_contain("users: 10 in the backup, 7 restored")
  end)

  test("with no backup there is nothing to restore", function()
    local r = run("dr_restore.lua", { params = dr, approve = true })
    expect(r.status).to_be("failed")
    expect(r.steps["choose the backup"].error).to_contain("no complete backup")
  end)

  test("survives a crash at any point", function()
    local proof = crash_everywhere("dr_restore.lua", { params = dr, world = backed_up(), approve = true })
    expect(proof.outcome).to_be("succeeded")
  end)
end)
