---@meta runbook.util
-- local util = require "runbook.util"

---@class runbook.util
local util = {}

--- A random password of letters and digits (default 32 characters, 8 to 1024) from a
--- cryptographically secure generator; make it a secret before it goes anywhere.
--- Example: `local pw = secret{ value = util.random_password(), name = "app_pw" }`
---@param length? integer
---@return string
function util.random_password(length) end

--- Formats a byte count for people: 1536 -> "1.5 KiB".
---@param n number
---@return string
function util.format_bytes(n) end

--- The keys of a table, sorted.
---@param t table
---@return any[]
function util.keys(t) end

--- A new array with fn(v, i) for every item.
---@generic T, U
---@param list T[]
---@param fn fun(v: T, i: integer): U
---@return U[]
function util.map(list, fn) end

--- A new array with the items for which fn(v, i) is true.
---@generic T
---@param list T[]
---@param fn fun(v: T, i: integer): boolean
---@return T[]
function util.filter(list, fn) end

--- Whether list contains value.
---@param list any[]
---@param value any
---@return boolean
function util.contains(list, value) end

--- The "name=value" items of a list as { name = value }; raises, naming `what`, on a bad item.
---@param list? string[]
---@param what? string
---@return table<string, string>
function util.pairs_of(list, what) end

--- Splits text on a plain separator (default ","), trimming parts and dropping empty ones.
---@param text string
---@param sep? string
---@return string[]
function util.split(text, sep) end

--- Quotes a string for a POSIX shell (for exec{shell = ...}); never for secrets.
---@param s string
---@return string
function util.shell_quote(s) end

--- Calls fn(attempt) until it returns a truthy value, sleeping `interval` between attempts.
---@param fn fun(attempt: integer): any
---@param opts? { attempts?: integer, interval?: Duration }
---@return any
function util.poll(fn, opts) end

return util
