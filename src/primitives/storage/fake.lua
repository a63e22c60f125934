-- `storage`'s fake for `runbook test`: every store opens in memory (object_store's InMemory),
-- so put, get, list, stat, exists, delete and copy behave as on S3 or disk, and what a run
-- stored is still there after a crash and its resume. Nothing needs faking; fakes describe the
-- world and its failures: `{ url = "s3://backups/app", objects = { ["db/x.dump"] = "bytes" } }`
-- is there before the run (keys under that URL's prefix), and a fake matching "METHOD URL/KEY" (`put s3://backups/app/db/`)
-- fails that call with its `error`. put, delete and copy (and get into a file) are mutating.
-- `get{ to = PATH }` writes its file in the test's world, never at PATH.
return function(kit, support)
  storage.open = function(url, opts)
    local _ = opts
    kit.faked("storage", "open " .. kit.text(url), { mutating = false, target = { url = kit.text(url) }, world = true })
    local store, fresh = support.open(kit.text(url))
    if fresh then
      -- The bucket is new in this world: every fake's objects in it, at their own URL's prefix.
      local root = support.root(kit.text(url))
      for _, f in ipairs(kit.spec.storage or {}) do
        if type(f) == "table" and type(f.objects) == "table" and type(f.url) == "string" and support.root(f.url) == root then
          local keys = {}
          for key in pairs(f.objects) do keys[#keys + 1] = tostring(key) end
          table.sort(keys)
          for _, key in ipairs(keys) do support.seed(f.url, key, tostring(f.objects[key])) end
        end
      end
    end
    return store
  end
  -- Rust tells of each call on a store (so that seeding above, made before the hook, is not
  -- recorded as the runbook's).
  kit.hook("storage", function(call, mutating, into)
    kit.faked("storage", call, { level = 0, mutating = mutating, target = { url = call:match("^%S+ (%S*)") }, world = true })
    -- `get{ to = PATH }`: the file is written in the test's world, not on the disk.
    if into then return support.world_file(into) end
  end)
end
