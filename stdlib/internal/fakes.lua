-- The fakes of `runbook test`, installed over the primitives of a runbook's environment when a
-- test runs it. `spec` is the test's `fakes` table (values only: it crossed from the test's Lua
-- state); `record(call)` keeps each call for the test. Every primitive call is matched against
-- that primitive's fakes, tried in order: { match = "text the call contains" | pattern = "Lua
-- pattern", ...answer }, where the answer is a value (exec: code, stdout, stderr; http:
-- status, body, json, headers), an `error`, or `answers = { ... }` given in turn (the last one
-- repeating). When several fakes match, the most specific (longest `match` or `pattern`) answers.
-- A call no fake matches raises "unfaked call" and is recorded as such, which fails the test: a
-- test never reaches a real system by accident. `real = { "db" }` lets a primitive through.
-- `secrets = { NAME = "value" }` and `env = { NAME = "value" }` answer `secret("NAME")` and
-- `env("NAME")` (the process's environment is not read). `steps = { NAME = { result = ... } |
-- { error = ... } }` replaces a step's body; `faults = { { step = NAME, attempt = N, error = ...
-- } }` fails one attempt of it. `helpers` are Rust's: the real exec argument checks, JSON, the
-- virtual time.
return function(spec, record, helpers)
  local real = {}
  for _, name in ipairs(spec.real or {}) do real[name] = true end

  local function copy(v)
    if type(v) ~= "table" then return v end
    local t = {}
    for k, x in pairs(v) do t[k] = copy(x) end
    return t
  end

  -- The fake answering `key` among the primitive's (the most specific that matches and is not
  -- used up), and the ones tried.
  local function answer(primitive, key)
    local tried, best, best_len, best_at = {}, nil, -1, nil
    for i, f in ipairs(spec[primitive] or {}) do
      local hit
      if f.pattern then hit = key:find(f.pattern) ~= nil else hit = f.match == nil or key:find(f.match, 1, true) ~= nil end
      tried[#tried + 1] = f.pattern and ("pattern " .. string.format("%q", f.pattern)) or string.format("%q", f.match or "")
      local len = #(f.pattern or f.match or "")
      if hit and (not f.times or (f.calls or 0) < f.times) and len > best_len then best, best_len, best_at = f, len, i end
    end
    if not best then return nil, tried end
    best.calls = (best.calls or 0) + 1
    if best.answers then return copy(best.answers[math.min(best.calls, #best.answers)] or {}), tried, best_at end
    return copy(best), tried, best_at
  end

  -- Records the call and returns its fake's answer, or raises: unfaked, or the fake's error.
  local function faked(primitive, call, level, mutating)
    local a, tried, at = answer(primitive, call)
    -- `fake`: which of the primitive's fakes answered (its answers go on after a crash: the
    -- world does not restart with the process).
    record { primitive = primitive, call = call, faked = a ~= nil, mutating = mutating ~= false, fake = at,
             tried = #tried > 0 and table.concat(tried, ", ") or "none" }
    if not a then
      error("unfaked call: " .. primitive .. " " .. call .. " (fakes tried: "
        .. (#tried > 0 and table.concat(tried, ", ") or "none") .. ")", level + 1)
    end
    if a.error then error(primitive .. ": " .. a.error, level + 1) end
    return a
  end

  local function text(v)
    return tostring(v)
  end

  if not real.exec then
    exec = function(opts)
      -- The checks the real exec makes (a table, no secret on the command line, known keys).
      local call = helpers.exec_check(opts)
      local a = faked("exec", call, 2, not opts.readonly)
      local r = { code = a.code or 0, stdout = a.stdout or "", stderr = a.stderr or "", ms = a.ms or 0 }
      if r.code ~= 0 and not (type(opts) == "table" and opts.check == false) then
        error(string.format("exec: `%s` exited with %d: %s", call, r.code, r.stderr), 2)
      end
      return r
    end
  end

  if not real.http then
    local Response = { __index = {} }
    function Response.__index.json(self)
      local a = getmetatable(self).answer
      if a.json ~= nil then return copy(a.json) end
      return helpers.json_decode(self.body)
    end
    local function response(method, url, opts)
      local call = tostring(method):upper() .. " " .. text(url)
      local verb = tostring(method):upper()
      local reads = verb == "GET" or verb == "HEAD" or verb == "OPTIONS" or (opts and opts.readonly)
      local a = faked("http", call, 3, not reads)
      local status = a.status or 200
      local r = setmetatable({ status = status, headers = a.headers or {}, body = a.body or "", ms = a.ms or 0, url = text(url) },
        { __index = Response.__index, answer = a })
      local expect = opts and opts.expect
      local accepted = status >= 200 and status < 300
      if expect == "any" then accepted = true
      elseif type(expect) == "number" then accepted = status == expect
      elseif type(expect) == "table" then
        accepted = false
        for _, s in ipairs(expect) do if s == status then accepted = true end end
      end
      if not accepted then error("http: " .. call .. " answered " .. status, 3) end
      return r
    end
    -- (Not tail calls: an error names the runbook's line, which a tail call would drop.)
    http.request = function(opts)
      local r = response(opts.method or "GET", opts.url, opts)
      return r
    end
    for _, method in ipairs({ "get", "post", "put", "patch", "delete" }) do
      http[method] = function(url, opts)
        local r = response(method, url, opts)
        return r
      end
    end
    -- A health answer as the real check reads it: body_contains, json_path and equals.
    local function healthy(r, opts)
      if not opts then return true end
      if opts.body_contains and not r.body:find(opts.body_contains, 1, true) then
        return false, "the body does not contain " .. string.format("%q", opts.body_contains)
      end
      if opts.json_path then
        local ok, v = pcall(r.json, r)
        if not ok then return false, tostring(v) end
        for part in tostring(opts.json_path):gmatch("[^%.]+") do
          if type(v) ~= "table" then v = nil break end
          v = v[tonumber(part) or part]
        end
        if opts.equals ~= nil and v ~= opts.equals and tostring(v) ~= tostring(opts.equals) then
          return false, opts.json_path .. " is " .. tostring(v) .. ", not " .. tostring(opts.equals)
        end
        if opts.equals == nil and v == nil then return false, opts.json_path .. " is missing" end
      end
      return true
    end
    -- Polls the fake as the real one polls the service, every `interval` (default 5s) until
    -- `timeout` (default 2m): on the test's virtual clock, so a long wait costs nothing.
    http.wait_healthy = function(url, opts)
      local seconds = require("runbook.pg").seconds
      local interval = seconds((opts and opts.interval) or "5s")
      local timeout = seconds((opts and opts.timeout) or "2m")
      local waited, last = 0, nil
      while true do
        local ok, r = pcall(response, "GET", url, { expect = opts and opts.expect })
        if ok then
          local fine, why = healthy(r, opts)
          if fine then return r end
          ok, r = false, why
        end
        last = r
        if waited + interval > timeout then break end
        sleep(interval)
        waited = waited + interval
      end
      error("http: " .. text(url) .. " did not become healthy within " .. timeout .. "s: " .. tostring(last), 2)
    end
    http.load = function(opts)
      faked("http", "LOAD " .. text(opts.url), 2)
      error("http.load has no fake answer yet", 2)
    end
  end

  -- The primitives without fakes of their own yet: every call is unfaked unless `real` lets
  -- it through.
  for _, name in ipairs({ "db", "ssh", "storage", "backup", "tls", "metrics" }) do
    local module = _G[name]
    if not real[name] and type(module) == "table" then
      for fname, f in pairs(module) do
        if type(f) == "function" then
          module[fname] = function(first)
            local call = name .. "." .. fname .. "(" .. (first ~= nil and text(first) or "") .. ")"
            faked(name, call, 2)
            error(name .. "." .. fname .. ": only `real = { \"" .. name .. "\" }` runs it in a test for now", 2)
          end
        end
      end
    end
  end

  -- Secrets and the environment come from the test, never from the process.
  local real_secret = secret
  local function fake_secret(name)
    local v = spec.secrets and spec.secrets[name]
    record { primitive = "secret", call = name, faked = v ~= nil, mutating = false, tried = "fakes.secrets" }
    if v == nil then error("unfaked call: secret " .. name .. " (give it in fakes.secrets)", 3) end
    return real_secret { value = tostring(v), name = name }
  end
  secret = function(s)
    if type(s) == "string" then return fake_secret(s) end
    if type(s) == "table" and s.value == nil then
      local name = s.env or s.name or s.file
      return fake_secret(tostring(name))
    end
    return real_secret(s)
  end
  env = function(name, default)
    local v = spec.env and spec.env[name]
    if v == nil then return default end
    return tostring(v)
  end
  -- `os.time()` and `os.date()` read the test's (virtual) clock.
  local real_time, real_date = os.time, os.date
  os.time = function(t)
    if t == nil then return helpers.now() end
    return real_time(t)
  end
  os.date = function(format, t)
    return real_date(format, t or helpers.now())
  end

  -- Step-level fakes and injected faults.
  local real_step = step
  step = function(name, opts, fn)
    if fn == nil and type(opts) == "function" then opts, fn = nil, opts end
    local body = fn
    local fake = spec.steps and spec.steps[name]
    if fake ~= nil then
      body = function()
        if fake.error then error(fake.error, 0) end
        return fake.result
      end
    end
    for _, f in ipairs(spec.faults or {}) do
      if f.step == name then
        local inner = body
        body = function(attempt)
          if f.attempt == nil or f.attempt == attempt then error(f.error or ("a fault injected into " .. name), 0) end
          return inner(attempt)
        end
      end
    end
    if opts == nil then return real_step(name, body) end
    return real_step(name, opts, body)
  end
end
