-- The fakes of `runbook test`: the kit every primitive's fake is written with, and the
-- installation of those fakes (each in its primitive's room, src/primitives/NAME/fake.lua,
-- listed by the one list of primitives) over a runbook's environment when a test runs it.
--
-- `spec` is the test's `fakes` table (values only: it crossed from the test's Lua state);
-- `record(call)` keeps each call for the test; `rooms` are the primitives' fakes, in the order
-- of the list, each with the `support` its Rust side gives it.
--
-- One shape for every primitive: its fakes are tried in order, { match = "text the call
-- contains" | pattern = "Lua pattern", ...answer }, where the answer is a value (exec: code,
-- stdout; http: status, json; db: rows, count; ssh: code, stdout ...), an `error`, a `delay`
-- (on the virtual clock), or `answers = { ... }` given in turn (the last one repeating);
-- `times = N` uses a fake up at N calls; `respond = function(call, args, n, state) return {...}
-- end` answers with a function of the test file: n is the how-manieth call this fake answers,
-- `state` a table of the fake's world (a load balancer's servers ...), kept across a crash and
-- its resume, shared with a `world = r` run, fresh (or a copy of the shared world's) for each
-- pass of a crash proof. `host = "web-1"` (ssh) and `url = "text"` (db,
-- storage, metrics, http) narrow a fake to one target. When several fakes match, the most
-- specific answers: the longest `match` (a `pattern` counts its literal characters only; `host`
-- and `url` add to it), and of equally specific ones the last given (so a test can add to a
-- shared set of fakes one that overrides). A call no fake matches raises "unfaked call"
-- and is recorded as such, which fails the test: a test never reaches a real system by accident.
-- `real = { "db" }` lets a primitive through.
return function(spec, record, helpers, rooms)
  -- (The spec's shape was checked before the run: testing::check_fakes.)
  local kit = { spec = spec, helpers = helpers, record = record, real = {} }
  for _, name in ipairs(spec.real or {}) do kit.real[name] = true end

  function kit.copy(v)
    if type(v) ~= "table" then return v end
    local t = {}
    for k, x in pairs(v) do t[k] = kit.copy(x) end
    return t
  end

  -- Keys that describe the world (a host that is down, objects already stored, a real SQLite
  -- database) rather than answer a call.
  local WORLD = { down = true, down_after = true, host_key_changed = true, objects = true, sqlite = true, group = true }

  local function describe(f)
    local what = f.pattern and ("pattern " .. string.format("%q", f.pattern)) or string.format("%q", f.match or "")
    if f.host then what = what .. " on " .. f.host end
    if f.url then what = what .. " at " .. f.url end
    return what
  end

  -- How specific a pattern is: its literal characters (`%-` is one; classes, sets, anchors and
  -- quantifiers count for nothing), so a pattern weighs less than a `match` of the same text.
  local function literal_length(p)
    local s = p:gsub("%%(%p)", "\1"):gsub("%%%a", ""):gsub("%[.-%]", ""):gsub("[%^%$%*%+%?%.%-]", "")
    return #s
  end

  -- The fake answering `key` among the primitive's (the most specific that matches and is not
  -- used up), the ones tried, and its index.
  local function answer(primitive, key, target)
    local tried, best, best_len, best_at = {}, nil, -1, nil
    for i, f in ipairs(spec[primitive] or {}) do
      local world = false
      for k in pairs(WORLD) do if f[k] ~= nil then world = true end end
      if not world then
        local hit
        if f.pattern then
          local ok, found = pcall(string.find, key, f.pattern)
          if not ok then error("fakes." .. primitive .. "[" .. i .. "].pattern: " .. tostring(found), 0) end
          hit = found ~= nil
        else
          hit = f.match == nil or key:find(f.match, 1, true) ~= nil
        end
        if f.host ~= nil and (target == nil or (target.host ~= f.host and target.name ~= f.host)) then hit = false end
        if f.url ~= nil and (target == nil or target.url == nil or not target.url:find(f.url, 1, true)) then hit = false end
        tried[#tried + 1] = describe(f)
        local len = (f.pattern and literal_length(f.pattern) or #(f.match or "")) + (f.host and 1000 or 0)
          + (f.url and #f.url or 0)
        if hit and (not f.times or (f.calls or 0) < f.times) and len >= best_len then best, best_len, best_at = f, len, i end
      end
    end
    if not best then return nil, tried end
    best.calls = (best.calls or 0) + 1
    if best.answers then return kit.copy(best.answers[math.min(best.calls, #best.answers)] or {}), tried, best_at end
    return kit.copy(best), tried, best_at
  end

  --- Records the call and returns its fake's answer, or raises: unfaked, or the fake's error.
  --- `o.args`: the call's parameters as shown (secrets as `<secret:NAME>`), recorded with it.
  --- `o.level`: how far up the runbook's line is (2: the caller of the fake); `o.mutating`
  --- (default true); `o.target` ({ host =, url = }); `o.world`: an unmatched call is answered
  --- by the fake's world (an in-memory store) and returns nil instead of failing.
  function kit.faked(primitive, call, o)
    o = o or {}
    local level = o.level or 2
    local a, tried, at = answer(primitive, call, o.target)
    -- `fake`: which of the primitive's fakes answered (its answers go on after a crash: the
    -- world does not restart with the process).
    record { primitive = primitive, call = call, faked = a ~= nil or o.world == true, mutating = o.mutating ~= false,
             fake = at, tried = #tried > 0 and table.concat(tried, ", ") or "none", args = o.args or {}, json = o.json }
    if not a then
      if o.world then return nil end
      error("unfaked call: " .. primitive .. " " .. call .. " (fakes tried: "
        .. (#tried > 0 and table.concat(tried, ", ") or "none") .. ")", level > 0 and level + 1 or 0)
    end
    if type(a.respond) == "table" and a.respond["$respond"] then
      -- A function of the test file answers: of the call, its arguments, and how many times
      -- this fake has answered (1 for the first).
      local n = (spec[primitive][at] or {}).calls or 1
      a = helpers.respond(a.respond["$respond"], call, o.args or {}, n)
    end
    if a.delay then sleep(a.delay) end
    if a.error then
      error(primitive .. ": " .. tostring(a.error) .. (a.sqlstate and (" (SQLSTATE " .. a.sqlstate .. ")") or ""),
        level > 0 and level + 1 or 0)
    end
    return a
  end

  --- The fakes of a primitive that describe its world with `key` (down hosts, stored objects),
  --- narrowed to `target` as calls are.
  function kit.world(primitive, key, target)
    local out = {}
    for _, f in ipairs(spec[primitive] or {}) do
      if f[key] ~= nil and (f.host == nil or (target and (target.host == f.host or target.name == f.host)))
        and (f.url == nil or (target and target.url and target.url:find(f.url, 1, true))) then
        out[#out + 1] = f
      end
    end
    return out
  end

  --- Sets the function Rust asks about the calls it makes itself (see primitives::fake_hook).
  kit.hook = helpers.hook

  --- A value as a call shows it: text as is, a table as `{101, 102}` or `{a = 1}`, a secret
  --- as `<secret:NAME>`.
  function kit.text(v, depth)
    if type(v) ~= "table" then return tostring(v) end
    depth = depth or 0
    if depth > 3 then return "{...}" end
    local parts, n = {}, #v
    for i = 1, n do parts[#parts + 1] = kit.text(v[i], depth + 1) end
    local keys = {}
    for k in pairs(v) do
      if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
    end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do parts[#parts + 1] = tostring(k) .. " = " .. kit.text(v[k], depth + 1) end
    return "{" .. table.concat(parts, ", ") .. "}"
  end

  --- A copy of a value that crosses to Rust as JSON: a secret (or any userdata) as its text
  --- (`<secret:NAME>`), a function as "function".
  function kit.plain(v, depth)
    depth = depth or 0
    if type(v) == "table" and depth < 32 then
      local t = {}
      for k, x in pairs(v) do t[k] = kit.plain(x, depth + 1) end
      return t
    elseif type(v) == "userdata" and v ~= null then
      return tostring(v)
    elseif type(v) == "function" or type(v) == "thread" then
      return type(v)
    end
    return v
  end

  --- Seconds of a duration ("5s", "2m", or a number), as the real primitives read it.
  function kit.seconds(d)
    return require("runbook.pg").seconds(d)
  end

  kit.now = helpers.now

  for _, room in ipairs(rooms) do
    if not kit.real[room.name] then room.fake(kit, room.support) end
  end
end
