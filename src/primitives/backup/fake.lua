-- `backup`'s fake for `runbook test`: no database is dumped or restored (fake.rs), but the
-- objects and their manifests are real ones in the store (in memory), so backup.list, latest
-- and prune work on them for real, and a verification or restore reads the object back and
-- checks its SHA-256: an object a test corrupted (`fakes.storage` objects, or a put of its own)
-- fails it. Calls are "create SOURCE to STORE", "verify KEY", "restore KEY into TARGET", "list
-- STORE", "latest STORE", "prune STORE". A fake answers create with `tables = { users = 10 }`
-- (the rows the dump holds), `content`, and `corrupt = true` (the object is damaged on its
-- way to the store); verify with `problems = { "..." }` (a verification
-- that fails) or `tables`; any call with an `error`. Unmatched calls are answered as above.
return function(kit, _support)
  kit.hook("backup", function(call, mutating)
    local a = kit.faked("backup", call, { level = 0, mutating = mutating, target = { url = call:match("^%S+ (%S+)") },
                                          world = true })
    if a == nil then return nil end
    return { tables = a.tables, content = a.content, problems = a.problems, corrupt = a.corrupt }
  end)
  -- The functions stay the real ones: their options are checked as in production.
end
