-- Passes as a plain test; `runbook test --crash` finds the call outside the runbook's steps.
test("the outside runbook succeeds", function()
  local r = run("../failing/outside.lua", { fakes = { exec = { { match = "notify" }, { match = "deploy" }, { match = "verify" } } } })
  expect(r.status).to_be("succeeded")
end)
