-- The REPL's own Lua. Ctrl-C stops a running chunk by raising an error from the instruction hook,
-- again and again until the chunk returns; a `pcall` in a loop would catch it at every turn, so
-- while the REPL is interrupting, `pcall` and `xpcall` raise what they caught. Written in Lua so
-- that primitives called under them may still wait (yield).
return function(interrupting)
  local raw_pcall, raw_xpcall, raise = pcall, xpcall, error

  local function check(ok, ...)
    if not ok and interrupting() then
      raise("interrupted (Ctrl-C)", 0)
    end
    return ok, ...
  end

  pcall = function(f, ...)
    return check(raw_pcall(f, ...))
  end
  xpcall = function(f, handler, ...)
    return check(raw_xpcall(f, handler, ...))
  end
end
