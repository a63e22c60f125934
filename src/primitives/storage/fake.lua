-- `storage`'s fake for `runbook test`: every store opens in memory (object_store's InMemory),
-- so put, get, list, stat, exists, delete and copy behave as on S3 or disk, and what a run
-- stored is still there after a crash and its resume. Nothing needs faking; fakes describe the
-- world and its failures: `{ url = "s3://backups/app", objects = { ["db/x.dump"] = "bytes" } }`
-- is there before the run, and a fake matching "METHOD URL/KEY" (`put s3://backups/app/db/`)
-- fails that call with its `error`. put, delete and copy (and get into a file) are mutating.
return function(kit, support)
  storage.open = function(url, opts)
    local _ = opts
    local store, fresh = support.open(kit.text(url))
    kit.faked("storage", "open " .. kit.text(url), { mutating = false, target = { url = kit.text(url) }, world = true })
    if fresh then
      for _, f in ipairs(kit.world("storage", "objects", { url = kit.text(url) })) do
        local keys = {}
        for key in pairs(f.objects) do keys[#keys + 1] = key end
        table.sort(keys)
        for _, key in ipairs(keys) do store:put(key, tostring(f.objects[key])) end
      end
    end
    return store
  end
  -- Rust tells of each call on a store (so that seeding above, made before the hook, is not
  -- recorded as the runbook's).
  kit.hook("storage", function(call, mutating)
    kit.faked("storage", call, { level = 1, mutating = mutating, target = { url = call:match("^%S+ (.*)$") }, world = true })
  end)
end
