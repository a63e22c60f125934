local fakes = { exec = { { match = "prepare" }, { match = "switch" } },
                http = { { match = "/api/health", json = { status = "ok" } } } }

test("a run waits at its gate, and its resume goes on without redoing what was done", function()
  local r = run("gated.lua", { fakes = fakes })
  expect(r.status).to_be("waiting_approval")
  expect(r.exit_code).to_be(3)
  expect_calls(r, "exec", { "prepare" })
  advance("2h")
  local again = resume(r, { approve = true })
  expect(again.status).to_be("succeeded")
  expect(again.run_id).to_be(r.run_id)
  -- Only what was left: the prepared step returned its recorded result.
  expect_calls(again, "exec", { "switch" })
  expect(again.steps.prepare.attempts).to_be(1)
  expect(time_of(again.steps.switch.started_at) - time_of(r.steps.prepare.finished_at) >= 7200).to_be_truthy()
end)

test("a failed step is resumed with new fakes", function()
  local broken = { exec = { { match = "prepare" }, { match = "switch", code = 1, stderr = "no route" } },
                   http = fakes.http }
  local r = run("gated.lua", { fakes = broken, approve = true })
  expect(r.status).to_be("failed")
  expect(r.steps.switch.error).to_contain("no route")
  local again = resume(r, { fakes = fakes, approve = true })
  expect(again.status).to_be("succeeded")
  expect_calls(again, "exec", { "switch" })
  expect(again.steps.switch.attempts).to_be(2)
end)

test("an ended run cannot be resumed", function()
  local r = run("gated.lua", { fakes = fakes, approve = true })
  expect(r.status).to_be("succeeded")
  expect(function() resume(r) end).to_fail_with("already ended")
end)
