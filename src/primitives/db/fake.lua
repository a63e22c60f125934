-- `db`'s fake for `runbook test`: a statement is matched by its SQL (`match = "pg_stat_activity"`),
-- narrowed to a connection with `url = "text its URL contains"` (the URL without its password).
-- Answer: { rows = { {...}, ... } } for query, query_one, each, execute_returning and
-- query_file; { count = N } for execute (and the statements of execute_file); { value = x } for
-- scalar (else the one column of the first row); { error = "...", sqlstate = "55P03" } fails
-- the statement as the server would. `{ url = "...", down = true }` refuses the connection.
-- `{ sqlite = true }` (with `url`, for one connection) gives a real SQLite database instead,
-- a file in the test's world, with `schema = "create table ..."` run when it is new; fakes that
-- match a statement still answer it (to fail one), the rest reach the database.
-- Statements other than queries are mutating; a transaction or session runs its function on
-- the same fake connection.
return function(kit, support)
  local real_connect = db.connect
  local READS = { query = true, query_one = true, scalar = true, each = true, query_file = true }

  local function shown_args(...)
    local out = {}
    for i = 1, select("#", ...) do
      local v = select(i, ...)
      if type(v) ~= "function" then out[#out + 1] = kit.text(v) end
    end
    return out
  end

  local function first_value(row)
    if type(row) ~= "table" then return nil end
    local only, n = nil, 0
    for _, v in pairs(row) do only, n = v, n + 1 end
    if n ~= 1 then error("db: scalar: the fake row has " .. n .. " columns; give `value`", 4) end
    return only
  end

  -- What a method returns for a fake's answer.
  local function result(method, a, sql, ...)
    local rows = kit.copy(a.rows or {})
    if method == "query" or method == "execute_returning" or method == "query_file" then return rows end
    if method == "query_one" then
      if #rows ~= 1 then error("db: query_one: expected exactly one row, got " .. #rows, 3) end
      return rows[1]
    end
    if method == "scalar" then
      if a.value ~= nil then return a.value end
      return first_value(rows[1])
    end
    if method == "each" then
      local fn = select(select("#", ...), ...)
      local n = 0
      for _, row in ipairs(rows) do
        n = n + 1
        if fn(row) == false then break end
      end
      return n
    end
    return a.count or 0
  end

  local connection
  -- A connection: `url` as the fakes match it; `real`: the SQLite connection behind it, if any.
  connection = function(url, real)
    local c = {}
    for _, method in ipairs({ "query", "query_one", "scalar", "execute", "each", "execute_returning",
                              "execute_file", "query_file" }) do
      c[method] = function(_, sql, ...)
        local call = (method:match("_file$") and "file " or "") .. kit.text(sql)
        local a = kit.faked("db", call, { mutating = not READS[method], target = { url = url }, args = shown_args(...),
                                          world = real ~= nil })
        if a == nil then
          local r = real[method](real, sql, ...)
          return r
        end
        local r = result(method, a, sql, ...)
        return r
      end
    end
    function c.set_password(_, role, _password)
      local a = kit.faked("db", "set_password " .. kit.text(role), { target = { url = url }, world = real ~= nil })
      if a == nil then real:set_password(role, _password) end
    end
    -- A transaction or a pinned session: on SQLite the real one, the fake connection otherwise.
    for _, method in ipairs({ "transaction", "session" }) do
      c[method] = function(self, fn)
        if real then
          local r = real[method](real, function(inner) return fn(connection(url, inner)) end)
          return r
        end
        local r = fn(self)
        return r
      end
    end
    function c.close()
      if real then real:close() end
    end
    return setmetatable(c, { __tostring = function() return "db " .. url end })
  end

  db.connect = function(url, opts)
    local target = support.target(url)
    for _, f in ipairs(kit.world("db", "down", { url = target })) do
      if not f.down then goto up end
      kit.record { primitive = "db", call = "connect " .. target, faked = true, mutating = false, tried = "down" }
      error("db: " .. target .. ": " .. (type(f.down) == "string" and f.down or "connection refused"), 2)
      ::up::
    end
    for i, f in ipairs(kit.spec.db or {}) do
      if f.sqlite and (f.url == nil or target:find(f.url, 1, true)) then
        local file = support.sqlite_url(i)
        local real = real_connect(file)
        if f.schema and real:scalar("select count(*) from sqlite_master") == 0 then
          for statement in tostring(f.schema):gmatch("[^;]+") do
            if statement:match("%S") then real:execute(statement) end
          end
        end
        return connection(target, real)
      end
    end
    local _ = opts
    return connection(target, nil)
  end
end
