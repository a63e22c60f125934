test("never collected", function()
  expect(1).to_be(1)
end
