-- The engine's own Lua, run once in every sandbox before the runbook. Not a public module.
local rawload = load
local internal = {}

-- `load` of text chunks only: binary chunks can break out of the VM's safety checks.
function load(chunk, chunkname, mode, ...)
  if mode ~= nil and mode ~= "t" then
    error("load: only text chunks are allowed (mode 't'), got mode '" .. tostring(mode) .. "'", 2)
  end
  if select("#", ...) > 0 then
    return rawload(chunk, chunkname, "t", ...)
  end
  return rawload(chunk, chunkname, "t")
end

-- Clear refusals for what the sandbox leaves out, instead of "attempt to index a nil value".
local blocked = {
  io = "files are not read or written from runbooks; use exec{} or a primitive (storage, backup)",
  dofile = "runbooks load code only with require (runbook.* or files beside the runbook)",
  loadfile = "runbooks load code only with require (runbook.* or files beside the runbook)",
  package = "runbooks load code only with require (runbook.* or files beside the runbook)",
  debug = "the debug library can break out of the sandbox",
}
setmetatable(_G, {
  __index = function(_, key)
    local why = blocked[key]
    if why then error(key .. " is not available in a runbook (sandbox): " .. why, 2) end
    return nil
  end,
})
local os_blocked = { execute = "use exec{}", remove = "use exec{}", rename = "use exec{}", exit = "use fail(message)",
                     tmpname = "use exec{}", setlocale = "not allowed" }
setmetatable(os, {
  __index = function(_, key)
    local why = os_blocked[key]
    if why then error("os." .. key .. " is not available in a runbook (sandbox): " .. why, 2) end
    return nil
  end,
})
setmetatable(string, {
  __index = function(_, key)
    if key == "dump" then error("string.dump is not available in a runbook (sandbox): binary chunks are refused", 2) end
    return nil
  end,
})

-- Coroutines the runbook makes itself are fine for computing, but steps and primitives that
-- wait cannot run inside them (the engine could not resume them): track the depth so those
-- calls are refused with a clear error instead of hanging.
internal.coroutine_depth = 0
local raw_resume = coroutine.resume
local function leave(...)
  internal.coroutine_depth = internal.coroutine_depth - 1
  return ...
end
coroutine.resume = function(co, ...)
  if type(co) ~= "thread" then
    error("bad argument #1 to 'resume' (coroutine expected, got " .. type(co) .. ")", 2)
  end
  internal.coroutine_depth = internal.coroutine_depth + 1
  return leave(raw_resume(co, ...))
end
coroutine.wrap = function(fn)
  local co = coroutine.create(fn)
  return function(...)
    internal.coroutine_depth = internal.coroutine_depth + 1
    local results = table.pack(leave(raw_resume(co, ...)))
    if not results[1] then error(results[2], 2) end
    return table.unpack(results, 2, results.n)
  end
end

-- Placeholders stand for values a primitive or a step would produce, in `plan` and
-- `--dry-run`. They absorb field access, calls and arithmetic so the runbook can be evaluated
-- without acting; integer indexing yields nil so loops over them end at once.
local placeholder_mt = { __name = "runbook.placeholder" }
local function placeholder(what)
  return setmetatable({ __what = what }, placeholder_mt)
end
placeholder_mt.__index = function(self, key)
  if type(key) == "number" then return nil end
  return placeholder(rawget(self, "__what") .. "." .. tostring(key))
end
placeholder_mt.__call = function(self) return placeholder(rawget(self, "__what") .. "()") end
placeholder_mt.__tostring = function(self) return "<" .. rawget(self, "__what") .. ">" end
placeholder_mt.__concat = function(a, b) return tostring(a) .. tostring(b) end
placeholder_mt.__len = function() return 0 end
placeholder_mt.__pairs = function() return function() return nil end, nil, nil end
for _, op in ipairs({ "__add", "__sub", "__mul", "__div", "__mod", "__pow", "__unm", "__idiv" }) do
  placeholder_mt[op] = function(a, b)
    return placeholder((type(a) == "table" and rawget(a, "__what")) or (type(b) == "table" and rawget(b, "__what")) or "value")
  end
end
placeholder_mt.__lt = function() return false end
placeholder_mt.__le = function() return false end
internal.placeholder = placeholder

return internal
