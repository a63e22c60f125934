test("a mutating call outside any step is found by the crash proof", function()
  crash_everywhere("outside.lua", { fakes = { exec = { { match = "notify" }, { match = "deploy" }, { match = "verify" } } } })
end)
