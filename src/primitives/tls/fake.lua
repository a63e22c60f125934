-- `tls`'s fake for `runbook test`: a certificate is matched by its target, "host:port" (port 443
-- when not given). Answer: { days_left = 12 } (not_before and not_after follow from the virtual
-- clock), `valid = false, error = "..."` for one that does not verify, or `error` for a host
-- that cannot be reached. tls.check_expiry reads the same fakes.
return function(kit, _support)
  local function target(t)
    t = kit.text(t)
    if not t:find(":%d+$") then t = t .. ":443" end
    return t
  end
  local function rfc3339(seconds)
    return os.date("!%Y-%m-%dT%H:%M:%SZ", seconds)
  end
  local function certificate(host, level)
    local a = kit.faked("tls", host, { level = level, mutating = false,
                                       target = { host = host, name = (host:gsub(":%d+$", "")) } })
    local days = a.days_left or 90
    local now = kit.now()
    return { host = host, subject = a.subject or ("CN=" .. host:gsub(":%d+$", "")),
             issuer = a.issuer or "CN=Fake CA", sans = a.sans or { (host:gsub(":%d+$", "")) },
             not_before = rfc3339(now - 30 * 86400), not_after = rfc3339(now + days * 86400), days_left = days,
             serial = a.serial or "01", chain_length = a.chain_length or 2, valid = a.valid ~= false and days >= 0,
             error = a.valid == false and (a.reason or "certificate verify failed") or (days < 0 and "certificate has expired" or nil) }
  end
  tls.certificate = function(t, opts)
    local _ = opts
    local c = certificate(target(t), 3)
    return c
  end
  tls.check_expiry = function(hosts, opts)
    local warn = (opts and opts.warn_days) or 30
    local out = {}
    for _, h in ipairs(hosts) do
      local c = certificate(target(h), 3)
      if c.days_left < warn then out[#out + 1] = { host = c.host, days_left = c.days_left, not_after = c.not_after } end
    end
    table.sort(out, function(a, b) return a.days_left < b.days_left end)
    return out
  end
end
