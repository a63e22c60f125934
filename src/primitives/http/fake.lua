-- `http`'s fake for `runbook test`: a request is matched by "METHOD URL" (`GET
-- https://app/health`). Answer: { status = 200, json = {...} | body = "text", headers = {},
-- ms = 0 }, `error = "connection refused"` for a transport error, `delay = "3s"` on the virtual
-- clock. A status the call does not `expect` raises as the real one does. GET, HEAD and
-- OPTIONS (and `readonly = true`) are not mutating. `http.wait_healthy` polls the fake on the
-- virtual clock; `http.load` answers a load report ({ requests, errors, rps, latency = { p95 =
-- seconds }, statuses }) held to the call's thresholds, its stages taking their virtual time.
return function(kit, support)
  local Response = { __index = {} }
  function Response.__index.json(self)
    local a = getmetatable(self).answer
    if a.json ~= nil then return kit.copy(a.json) end
    return support.json_decode(self.body)
  end

  local function response(method, url, opts)
    local verb = tostring(method):upper()
    local call = verb .. " " .. kit.text(url)
    local reads = verb == "GET" or verb == "HEAD" or verb == "OPTIONS" or (opts and opts.readonly)
    local a = kit.faked("http", call, { level = 3, mutating = not reads, target = { url = kit.text(url) },
                                        json = opts and type(opts.json) == "table" and kit.plain(opts.json) or nil })
    local status = a.status or 200
    local r = setmetatable({ status = status, headers = a.headers or {}, body = a.body or "", ms = a.ms or 0, url = kit.text(url) },
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
    local interval = kit.seconds((opts and opts.interval) or "5s")
    local timeout = kit.seconds((opts and opts.timeout) or "2m")
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
    error("http: " .. kit.text(url) .. " did not become healthy within " .. timeout .. "s: " .. tostring(last), 2)
  end

  http.load = function(opts)
    local a = kit.faked("http", "LOAD " .. kit.text(opts.url), { mutating = false, target = { url = kit.text(opts.url) } })
    local seconds = 0
    for _, s in ipairs(opts.stages or {}) do seconds = seconds + kit.seconds(s.duration) end
    if opts.duration then seconds = seconds + kit.seconds(opts.duration) end
    if seconds > 0 then sleep(seconds) end
    local requests = a.requests or 1000
    local errors = a.errors or 0
    local r = { requests = requests, errors = errors, dropped = a.dropped or 0,
                error_rate = a.error_rate or (requests > 0 and errors / requests or 0),
                rps = a.rps or (seconds > 0 and requests / seconds or requests), duration = seconds,
                peak_vus = a.peak_vus or opts.vus or 1, statuses = a.statuses or { ["200"] = requests - errors },
                latency = a.latency or { p50 = 0.01, p90 = 0.02, p95 = 0.03, p99 = 0.05, max = 0.1 },
                causes = a.causes or {} }
    local crossed = {}
    for name, limit in pairs(opts.thresholds or {}) do
      if name == "error_rate" then
        if r.error_rate > limit then crossed[#crossed + 1] = "error_rate " .. r.error_rate .. " > " .. limit end
      elseif r.latency[name] and r.latency[name] > kit.seconds(limit) then
        crossed[#crossed + 1] = name .. " " .. r.latency[name] .. "s > " .. kit.seconds(limit) .. "s"
      end
    end
    if #crossed > 0 then
      table.sort(crossed)
      error("http: load test of " .. kit.text(opts.url) .. " crossed its thresholds: " .. table.concat(crossed, ", "), 2)
    end
    return r
  end
end
