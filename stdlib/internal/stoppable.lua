-- A run's stop requests (and the REPL's Ctrl-C) cannot be caught by the runbook. The step timeout, a signal, a cancel and
-- a gate that stopped the run are errors the engine raises (from the instruction hook, or from
-- the gate itself); `pcall`, `xpcall` and `coroutine.resume` would catch them and let the code
-- go on, so when one of them caught something, they ask the engine, which raises the stop again
-- if one is pending. A plain error (a failed step, an error() of the runbook's) is caught as
-- usual. Written in Lua so that primitives called under them may still wait (yield).
return function(must_stop)
  local raw_pcall, raw_xpcall, raw_resume = pcall, xpcall, coroutine.resume

  local function check(ok, ...)
    if not ok then
      must_stop()
    end
    return ok, ...
  end

  pcall = function(f, ...)
    return check(raw_pcall(f, ...))
  end
  xpcall = function(f, handler, ...)
    return check(raw_xpcall(f, handler, ...))
  end
  coroutine.resume = function(co, ...)
    return check(raw_resume(co, ...))
  end
end
