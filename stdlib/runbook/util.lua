--- runbook.util: small helpers for runbooks.
--- local util = require "runbook.util"
local M = {}

--- Formats a byte count for people: 1536 -> "1.5 KiB".
function M.format_bytes(n)
  assert(type(n) == "number", "format_bytes: expected a number")
  local units = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" }
  local i = 1
  local v = n
  while math.abs(v) >= 1024 and i < #units do
    v = v / 1024
    i = i + 1
  end
  if i == 1 then return string.format("%d B", n) end
  return (string.format("%.1f", v):gsub("%.0$", "")) .. " " .. units[i]
end

--- The keys of a table, sorted.
function M.keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out, function(a, b) return tostring(a) < tostring(b) end)
  return out
end

--- A new array with fn(v) for every item.
function M.map(list, fn)
  local out = {}
  for i, v in ipairs(list) do out[i] = fn(v, i) end
  return out
end

--- A new array with the items for which fn(v) is true.
function M.filter(list, fn)
  local out = {}
  for i, v in ipairs(list) do
    if fn(v, i) then out[#out + 1] = v end
  end
  return out
end

--- Whether list contains value.
function M.contains(list, value)
  for _, v in ipairs(list) do
    if v == value then return true end
  end
  return false
end

--- The "name=value" items of a list (a list param such as `api=http://...,edge=http://...`) as a
--- table { name = value }; raises, naming `what`, on an item without "=".
function M.pairs_of(list, what)
  local out = {}
  for _, item in ipairs(list or {}) do
    local name, value = item:match("^([^=]+)=(.+)$")
    if not name then error((what or "pairs") .. ": expected name=value, got '" .. item .. "'", 2) end
    out[name] = value
  end
  return out
end

--- Splits text on a plain separator (default ","), trimming each part and dropping empty ones.
function M.split(text, sep)
  sep = sep or ","
  local out = {}
  local start = 1
  while true do
    local i, j = string.find(text, sep, start, true)
    local part = string.sub(text, start, (i or 0) - 1)
    part = part:match("^%s*(.-)%s*$")
    if part ~= "" then out[#out + 1] = part end
    if not i then break end
    start = j + 1
  end
  return out
end

--- Quotes a string for a POSIX shell (for exec{shell = ...}); never use it for secrets.
function M.shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Calls fn until it returns a truthy value or the attempts run out, sleeping between tries.
--- Returns the value, or raises the last error. Inside a step; for whole-step retries use
--- step options instead.
function M.poll(fn, opts)
  opts = opts or {}
  local attempts = opts.attempts or 10
  local interval = opts.interval or "1s"
  local last
  for i = 1, attempts do
    local ok, value = pcall(fn, i)
    if ok and value then return value end
    last = ok and ("attempt " .. i .. " returned " .. tostring(value)) or value
    if i < attempts then sleep(interval) end
  end
  error("poll: gave up after " .. attempts .. " attempts: " .. tostring(last), 2)
end

return M
