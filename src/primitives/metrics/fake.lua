-- `metrics`' fake for `runbook test`: a Prometheus query is matched by "query PROMQL" (`match =
-- "http_requests_total"`), narrowed with `url`. Answer: { value = 0.02 } (nil: no data), or
-- { samples = { { labels = {...}, value = 1 } } } for query, { series = {...} } for range; a
-- sequence of `answers` gives a metric that moves between samples. metrics.analyze stays the
-- real analysis (rules, `for`, no data, the verdicts), its query checks asking these fakes and
-- its stage watched on the virtual clock.
return function(kit, _support)
  local real_analyze = metrics.analyze

  local function prometheus(url)
    local p = { url = url }
    local function ask(query, level)
      return kit.faked("metrics", "query " .. kit.text(query), { level = level, mutating = false, target = { url = url } })
    end
    function p.query(_, query)
      local a = ask(query, 2)
      if a.samples then return a.samples end
      if a.value == nil then return {} end
      return { { labels = a.labels or {}, value = a.value, time = kit.now() } }
    end
    function p.value(_, query)
      local a = ask(query, 2)
      if a.samples then
        if #a.samples > 1 then error("metrics: " .. query .. " gave " .. #a.samples .. " series, not one", 2) end
        return a.samples[1] and a.samples[1].value
      end
      return a.value
    end
    function p.range(_, query)
      local a = ask(query, 2)
      return a.series or {}
    end
    return setmetatable(p, { __tostring = function() return "prometheus " .. url end })
  end

  metrics.prometheus = function(url, opts)
    local _ = opts
    return prometheus(kit.text(url))
  end

  metrics.analyze = function(opts)
    if type(opts) ~= "table" then return real_analyze(opts) end
    local o, p = {}, opts.prometheus
    for k, v in pairs(opts) do if k ~= "prometheus" then o[k] = v end end
    local function asked(query)
      if p == nil then
        error("metrics: analyze: a check has a query but no prometheus = metrics.prometheus(...) was given", 4)
      end
      return function() return p:value(query) end
    end
    if type(opts.queries) == "table" then
      o.queries = {}
      for name, q in pairs(opts.queries) do o.queries[name] = type(q) == "string" and asked(q) or q end
    end
    if type(opts.checks) == "table" then
      o.checks = {}
      for i, c in ipairs(opts.checks) do
        if type(c) == "table" and c.query ~= nil then
          local t = {}
          for k, v in pairs(c) do if k ~= "query" then t[k] = v end end
          t.fn = asked(c.query)
          o.checks[i] = t
        else
          o.checks[i] = c
        end
      end
    end
    local r = real_analyze(o)
    return r
  end
end
