-- The globals of a `runbook test` file: test, describe, expect, expect_calls. `run` and `resume`
-- come from Rust (src/testing/). A failed expectation raises at the caller's line, with what was
-- expected, what came, and where in a table they differ.
local M = {}
local tests, prefix = {}, {}

-- A value as a test reads it: strings quoted, tables with sorted keys, nested to a depth.
local function show(v, depth)
  depth = depth or 0
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" then return tostring(v) end
  if depth > 3 then return "{...}" end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "number" or type(a) == "string") then return a < b end
    return type(a) < type(b)
  end)
  local parts, n = {}, #v
  for _, k in ipairs(keys) do
    if math.type(k) == "integer" and k >= 1 and k <= n then
      parts[#parts + 1] = show(v[k], depth + 1)
    else
      local name = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or ("[" .. show(k) .. "]")
      parts[#parts + 1] = name .. " = " .. show(v[k], depth + 1)
    end
  end
  return "{ " .. table.concat(parts, ", ") .. " }"
end
M.show = show

-- Where two values first differ ("at .steps.migrate.status: 1 vs 2"), or nil when equal.
local function diff(got, want, path)
  if type(got) ~= "table" or type(want) ~= "table" then
    if got == want then return nil end
    return string.format("at %s: got %s, want %s", path == "" and "the top" or path, show(got), show(want))
  end
  for k, w in pairs(want) do
    local d = diff(got[k], w, path .. "." .. tostring(k))
    if d then return d end
  end
  for k, g in pairs(got) do
    if want[k] == nil then return string.format("at %s.%s: got %s, want nothing", path, tostring(k), show(g)) end
  end
  return nil
end

local function fail(message)
  -- Level 3: the test's line that called the matcher.
  error(message, 3)
end

--- test(name, fn): one test; `describe` names a group of them.
function M.test(name, fn)
  if type(name) ~= "string" or type(fn) ~= "function" then error("test(name, fn): a name and a function", 2) end
  local full = #prefix > 0 and (table.concat(prefix, " ") .. " " .. name) or name
  tests[#tests + 1] = { name = full, fn = fn }
end

function M.describe(name, fn)
  if type(name) ~= "string" or type(fn) ~= "function" then error("describe(name, fn): a name and a function", 2) end
  prefix[#prefix + 1] = name
  local ok, err = pcall(fn)
  prefix[#prefix] = nil
  if not ok then error(err, 0) end
end

--- expect(value).to_be(x) / .to_equal(t) / .to_match(pattern) / .to_contain(x) / .to_be_nil() /
--- .to_be_truthy(); expect(fn).to_fail_with(pattern).
function M.expect(actual)
  local e = {}
  function e.to_be(want)
    if actual ~= want then fail("expected " .. show(want) .. ", got " .. show(actual)) end
  end
  function e.to_equal(want)
    local d = diff(actual, want, "")
    if d then fail("not equal, " .. d .. "\n  got:  " .. show(actual) .. "\n  want: " .. show(want)) end
  end
  function e.to_match(pattern)
    if type(actual) ~= "string" or not actual:find(pattern) then
      fail(show(actual) .. " does not match the pattern " .. show(pattern))
    end
  end
  function e.to_contain(x)
    if type(actual) == "string" then
      if type(x) ~= "string" or not actual:find(x, 1, true) then fail(show(actual) .. " does not contain " .. show(x)) end
      return
    end
    if type(actual) == "table" then
      for _, v in pairs(actual) do
        if diff(v, x, "") == nil then return end
      end
    end
    fail(show(actual) .. " does not contain " .. show(x))
  end
  function e.to_be_nil()
    if actual ~= nil then fail("expected nil, got " .. show(actual)) end
  end
  function e.to_be_truthy()
    if not actual then fail("expected a true value, got " .. show(actual)) end
  end
  function e.to_fail_with(pattern)
    if type(actual) ~= "function" then fail("to_fail_with expects a function, got " .. show(actual)) end
    local ok, err = pcall(actual)
    if ok then fail("expected an error matching " .. show(pattern) .. ", but it succeeded") end
    if not tostring(err):find(pattern) then
      fail("the error " .. show(tostring(err)) .. " does not match " .. show(pattern))
    end
  end
  return e
end

--- expect_calls(r, "exec", { "git fetch", "git checkout" }): the run's calls of that primitive,
--- in order, each containing its text (or { count = n }: how many there were).
function M.expect_calls(r, primitive, want)
  if type(r) ~= "table" or type(r.calls) ~= "table" then fail("expect_calls: the first argument is a run's outcome") end
  if type(want) ~= "table" then fail("expect_calls: the third argument is a list of calls and options") end
  for k in pairs(want) do
    if math.type(k) ~= "integer" and k ~= "count" and k ~= "mutating" and k ~= "in_order" then
      fail("expect_calls: unknown option `" .. tostring(k) .. "` (known: count, mutating, in_order)")
    end
  end
  local got = {}
  for _, c in ipairs(r.calls) do
    if c.primitive == primitive and (want.mutating == nil or c.mutating == want.mutating) then got[#got + 1] = c.call end
  end
  local what = primitive .. (want.mutating == true and " mutating" or want.mutating == false and " read-only" or "")
  if want.count then
    if #got ~= want.count then fail(string.format("%d %s call(s), want %d: %s", #got, what, want.count, show(got))) end
    if #want == 0 then return end
  end
  if want.in_order then
    -- The listed calls, in this order, among others.
    local at = 1
    for i, w in ipairs(want) do
      while at <= #got and not got[at]:find(w, 1, true) do at = at + 1 end
      if at > #got then
        fail(string.format("%s call %s (the %d%s listed) not found in order\n  got:  %s", what, show(w), i,
          i == 1 and "st" or i == 2 and "nd" or i == 3 and "rd" or "th", show(got)))
      end
      at = at + 1
    end
    return
  end
  if #got ~= #want then
    fail(string.format("%d %s call(s), want %d\n  got:  %s\n  want: %s", #got, what, #want, show(got), show(want)))
  end
  for i, w in ipairs(want) do
    if not got[i]:find(w, 1, true) then
      fail(string.format("%s call %d is %s, want one containing %s\n  got:  %s", what, i, show(got[i]), show(w), show(got)))
    end
  end
end

--- Seconds since the epoch of a journal timestamp ("2026-12-03T07:15:13.857Z"), to compare
--- the (virtual) times of a run's steps.
function M.time_of(ts)
  local y, mo, d, h, mi, s, frac = tostring(ts):match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)%.?(%d*)Z$")
  if not y then error("time_of: not a journal timestamp: " .. tostring(ts), 2) end
  -- Days from the civil date (proleptic Gregorian), independent of the local time zone.
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo <= 2 then y, mo = y - 1, mo + 12 end
  local days = 365 * y + y // 4 - y // 100 + y // 400 + (153 * (mo - 3) + 2) // 5 + d - 719469
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s) + (frac ~= "" and tonumber("0." .. frac) or 0)
end

--- Runs the collected tests (those whose name contains `filter`, when given); each outcome is
--- { name, ok, error, skipped }.
--- Fakes made of a shared set and a test's own: the lists of each primitive (and `faults`,
--- `real`) one after the other, so the test's come last and win a tie; `secrets`, `env` and
--- `steps` merged, the test's over the shared ones. Neither argument is changed.
function M.with_fakes(base, extra)
  local function copy(v)
    if type(v) ~= "table" then return v end
    local t = {}
    for k, x in pairs(v) do t[k] = copy(x) end
    return t
  end
  local out = copy(base or {})
  for key, v in pairs(extra or {}) do
    if key == "secrets" or key == "env" or key == "steps" then
      out[key] = out[key] or {}
      for k, x in pairs(v) do out[key][k] = copy(x) end
    elseif type(v) == "table" and type(out[key]) == "table" then
      for _, x in ipairs(v) do table.insert(out[key], copy(x)) end
    else
      out[key] = copy(v)
    end
  end
  return out
end

function M.run_all(filter)
  local out = {}
  for _, t in ipairs(tests) do
    if filter and not t.name:find(filter, 1, true) then
      out[#out + 1] = { name = t.name, skipped = true }
    else
      local ok, err = pcall(t.fn)
      out[#out + 1] = { name = t.name, ok = ok, error = (not ok) and tostring(err) or nil }
    end
  end
  return out
end

return M
