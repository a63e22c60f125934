-- db_backup.lua: back up, verify by restore, prune; and what happens when a step fails.
local URL = "postgres://app:s3cret@db.internal:5432/app"
local params = { database_url = URL, store = "s3://backups/app", notify_url = "https://chat.example.com/hook" }

describe("db_backup", function()
  test("backs up, verifies the backup by restoring it, and prunes", function()
    local r = run("db_backup.lua", { params = params,
      fakes = { backup = { { match = "create", tables = { users = 10, orders = 42 } } } } })
    expect(r.status).to_be("succeeded")
    expect(r.steps["verify by restore"].result).to_equal({ ok = true, tables = { users = 10, orders = 42 } })
    expect(r.steps.prune.result).to_equal({ kept = 1, removed = 0, incomplete_removed = 0 })
    expect_calls(r, "backup", { "create postgres://app@db.internal:5432/app to s3://backups/app", "verify postgres-app-",
                                "prune s3://backups/app" })
    -- The password is in no call.
    for _, c in ipairs(r.calls) do expect(c.call:find("s3cret", 1, true)).to_be(nil) end
  end)

  test("a verification that finds a difference fails the run and posts to the webhook", function()
    local r = run("db_backup.lua", { params = params, fakes = {
      backup = { { match = "create", tables = { users = 10 } },
                 { match = "verify", problems = { "users: 9 rows restored, the manifest says 10" } } },
      http = { { match = "POST https://chat.example.com/hook", status = 200 } } } })
    expect(r.status).to_be("failed")
    expect(r.steps["verify by restore"].error).to_contain("users: 9 rows restored")
    expect(r.steps.prune).to_be(nil)
    expect_calls(r, "http", { "POST https://chat.example.com/hook" })
  end)

  test("a backup that cannot be written is retried, then fails the run", function()
    local r = run("db_backup.lua", { params = params, fakes = {
      backup = { { match = "create", error = "pg_dump: error: connection to server failed" } },
      http = { { match = "POST https://chat.example.com/hook" } } } })
    expect(r.status).to_be("failed")
    expect(r.steps["back up"].attempts).to_be(3)
    expect(r.steps["back up"].error).to_contain("connection to server failed")
  end)

  test("an object damaged on its way to the store fails the verification by its checksum", function()
    local r = run("db_backup.lua", { params = params, fakes = {
      backup = { { match = "create", corrupt = true } },
      http = { { match = "POST https://chat.example.com/hook" } } } })
    expect(r.status).to_be("failed")
    expect(r.steps["verify by restore"].error).to_contain("checksum mismatch")
  end)

  test("the next night's backup is pruned with the first by the real retention rules", function()
    local first = run("db_backup.lua", { params = params, fakes = { backup = { { match = "create" } } } })
    advance("24h")
    local second = run("db_backup.lua", { params = params, world = first, fakes = { backup = { { match = "create" } } } })
    expect(second.status).to_be("succeeded")
    expect(second.steps.prune.result).to_equal({ kept = 2, removed = 0, incomplete_removed = 0 })
    -- A second backup the same day replaces the first: the newest of each day is kept.
    local again = run("db_backup.lua", { params = params, world = first, fakes = { backup = { { match = "create" } } } })
    expect(again.steps.prune.result).to_equal({ kept = 2, removed = 1, incomplete_removed = 0 })
  end)

  test("survives a crash at any point", function()
    local proof = crash_everywhere("db_backup.lua", { params = params,
      fakes = { backup = { { match = "create", tables = { users = 10 } } } } })
    expect(proof.outcome).to_be("succeeded")
    expect(proof.points > 5).to_be_truthy()
  end)
end)
