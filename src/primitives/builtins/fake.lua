-- The builtins' fake for `runbook test`: secrets and the environment come from the test, never
-- from the process (`fakes.secrets = { NAME = "value" }`, `fakes.env = { NAME = "value" }`);
-- `os.time()` and `os.date()` read the test's virtual clock; `fakes.steps = { NAME = { result =
-- ... } | { error = ... } }` replaces a step's body; `fakes.faults = { { step = NAME, attempt =
-- N, error = ... } }` fails one attempt of it (every attempt without `attempt`).
return function(kit, _support)
  local spec = kit.spec
  local real_secret = secret
  local function fake_secret(name)
    local v = spec.secrets and spec.secrets[name]
    kit.record { primitive = "secret", call = name, faked = v ~= nil, mutating = false, tried = "fakes.secrets" }
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

  -- The process's environment is not the test's: os.getenv reads fakes.env too.
  if os.getenv then
    os.getenv = function(name)
      local v = spec.env and spec.env[name]
      if v == nil then return nil end
      return tostring(v)
    end
  end

  local real_time, real_date = os.time, os.date
  os.time = function(t)
    if t == nil then return kit.now() end
    return real_time(t)
  end
  os.date = function(format, t)
    return real_date(format, t or kit.now())
  end

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
