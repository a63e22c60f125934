-- quickstart: a tour of runbook with nothing installed (commands, a SQLite database, retries,
-- a backup verified by restoring it, an approval gate, undo).
--   cargo run --release -- run examples/quickstart.lua
-- Kill it at any moment (Ctrl-C, or kill -9) and `runbook resume --last`: completed steps are
-- not run again. Approve the gate at the prompt, with --yes, or later with `runbook approve`.
runbook {
  name = "quickstart",
  description = "Prepare a work folder, build a release, pass a flaky check, ship after approval",
  params = {
    release  = { type = "string", default = "v1.0.0", pattern = "v[0-9]+\\.[0-9]+\\.[0-9]+",
                 description = "release to ship" },
    workdir  = { type = "string", default = "/tmp/runbook-quickstart", description = "scratch folder" },
    pause    = { type = "duration", default = "300ms", description = "how long the build takes" },
  },
  rollback = "auto",
}

local dir = params.workdir .. "/" .. params.release

step("prepare work folder", {
  description = "Create the release folder",
  undo = function(r) exec{"rm", "-rf", r.dir} end,
}, function()
  exec{"mkdir", "-p", dir}
  return { dir = dir }
end)

local build = step("build release", { description = "Write the release manifest", timeout = "1m" }, function()
  sleep(params.pause)
  local r = exec{shell = "echo 'release " .. params.release .. "' > manifest.txt && sha256sum manifest.txt", cwd = dir}
  return { manifest = dir .. "/manifest.txt", sha256 = r.stdout:match("^(%x+)") }
end)

-- A SQLite database beside the release (nothing to install): record the build, verify it.
local function releases() return db.connect("sqlite://" .. params.workdir .. "/releases.db") end

step("record release", {
  description = "Record the build in the releases database and read it back",
  undo = function() local c = releases(); c:execute("delete from releases where version = ?", params.release); c:close() end,
}, function()
  local c = releases()
  c:execute("create table if not exists releases (version text primary key, sha256 text not null, shipped_at text)")
  c:execute([[insert into releases (version, sha256) values (?, ?)
              on conflict (version) do update set sha256 = excluded.sha256, shipped_at = null]],
            params.release, build.sha256)
  local row = c:query_one("select version, sha256, shipped_at from releases where version = ?", params.release)
  c:close()
  if row.sha256 ~= build.sha256 then fail("the release was not recorded") end
  return row
end)

-- Fails on its first attempt, passes on the retry: the attempt number is the step's argument.
step("flaky health check", { retries = 2, backoff = { base = "200ms", max = "1s" } }, function(attempt)
  if attempt == 1 then
    fail("service not ready yet (attempt " .. attempt .. ")")
  end
  log.info("healthy", { attempt = attempt })
  return { healthy = true, attempts = attempt }
end)

-- Back the database up to a local folder before shipping, and prove the backup restores.
local backups = storage.open("file://" .. params.workdir .. "/backups")
local snapshot = step("back up releases database", { description = "zstd-compressed, checksummed, with a manifest" }, function()
  return backup.create{ source = "sqlite://" .. params.workdir .. "/releases.db", to = backups, label = "pre-ship" }
end)

step("verify backup", { description = "Restore into a scratch copy and compare every table's rows" }, function()
  local v = backup.verify(snapshot, { checks = {
    { sql = "select count(*) from releases where version = ?", params = { params.release }, expect = 1 } } })
  local restored = backup.restore(snapshot, { into = "sqlite://" .. params.workdir .. "/restore-drill/releases.db", clean = true })
  return { verified = v.ok, rows = restored.tables.releases, bytes = snapshot.bytes_stored }
end)

approve("Ship " .. params.release .. " (" .. build.sha256:sub(1, 12) .. ")?")

step("ship", {
  description = "Mark the release current",
  undo = function() exec{"rm", "-f", params.workdir .. "/current"} end,
}, function()
  exec{"ln", "-sfn", dir, params.workdir .. "/current"}
  local c = releases()
  local at = now()
  c:execute("update releases set shipped_at = ? where version = ?", at, params.release)
  c:close()
  return { current = dir, at = at }
end)
