local function world()
  return {
    db = { { sqlite = true, schema = "create table orders (id integer primary key, state text)" } },
    -- Deleting a flag that is gone fails, as the real tool does.
    exec = { { match = "flagctl create" },
             { match = "flagctl delete", answers = { {}, { code = 1, stderr = "no flag new-checkout" } } } },
  }
end

test("a step that is not safe to run twice is found by the crash proof", function()
  crash_everywhere("twice.lua", { fakes = world() })
end)

test("an undo that is not safe to run twice is found by the crash proof", function()
  -- (The insert guarded, so that only the undo is at fault.)
  crash_everywhere("twice.lua", { params = { fail = true, guarded = true }, fakes = world() })
end)
