-- `exec`'s fake for `runbook test`: a command is matched by its command line as shown
-- (`psql -f up.sql`), and its stdin after ` <<< ` (`socat stdio unix-connect:/run/haproxy.sock
-- <<< show stat`), after the checks the real exec makes (a table, no secret on the command
-- line, known keys). Answer: { code = 0, stdout = "", stderr = "", ms = 0 }; a non-zero code
-- raises as the real one does unless `check = false`. `readonly = true` calls are not mutating.
return function(kit, support)
  exec = function(opts)
    local call = support.check(opts)
    -- What goes in on stdin is part of the call (a socat to HAProxy's socket, psql -f -): a
    -- secret shows as its name.
    if opts.stdin ~= nil then call = call .. " <<< " .. kit.text(opts.stdin) end
    local a = kit.faked("exec", call, { mutating = not opts.readonly })
    local r = { code = a.code or 0, stdout = a.stdout or "", stderr = a.stderr or "", ms = a.ms or 0 }
    if r.code ~= 0 and opts.check ~= false then
      error(string.format("exec: `%s` exited with %d: %s", call, r.code, r.stderr), 2)
    end
    return r
  end
end
