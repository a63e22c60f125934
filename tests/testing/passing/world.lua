-- The fakes that describe a world: a real SQLite database, stores in memory, hosts that go down
-- or change their key, certificates, Prometheus numbers, a load balancer answered by a function.
runbook { name = "world", params = { report = { type = "boolean", default = false }, order = { type = "integer", default = 1 },
                                     api_token = { type = "secret", env = "WORLD_API_TOKEN" } } }
local conn = db.connect("postgres://app:pw@db.internal/app")
step("orders", function()
  -- Idempotent, as a step must be: a crash after the insert runs it again.
  conn:execute("insert or ignore into orders (id, state) values (?, ?)", params.order, "paid")
  return conn:scalar("select count(*) from orders")
end)
step("archive", function()
  local store = storage.open("s3://archive/app")
  store:put("orders/1.json", '{"id":1}')
  local keys = {}
  for _, o in ipairs(store:list("orders/")) do keys[#keys + 1] = o.key end
  -- Into the test's world, not the disk: nothing is written at this path.
  local copy = store:get("orders/1.json", { to = "/tmp/runbook-world-test-must-not-exist.json" })
  return { keys = keys, seeded = store:get("seed.txt"), copied = copy.size, tmp = os.getenv("TMPDIR") or "unset" }
end)
step("hosts", function()
  local out = ssh.each({ "web-1", "web-2", "web-3" }, function(s) return s:exec("uptime").stdout end, { max_failures = 2 })
  return { ok = out["web-1"].ok, down = out["web-2"].error, key = out["web-3"].error }
end)
step("certificate", function()
  return tls.certificate("db.internal:5432").days_left
end)
step("canary", function()
  local prom = metrics.prometheus("http://prometheus:9090")
  local r = metrics.analyze { prometheus = prom, duration = "10m", interval = "1m", raise = false,
                              queries = { error_rate = "sum(rate(errors[1m]))" }, checks = { "error_rate < 5% for 2m" } }
  return { outcome = r.outcome, worst = r.checks.error_rate.worst }
end)
step("counter", function()
  local n = 0
  for _ = 1, 3 do n = tonumber(exec{ "next-ticket" }.stdout) end
  return n
end)
step("token", function() return params.api_token and params.api_token:name() or "none" end)
step("report", { when = function() return params.report end }, function() return "reported" end)
