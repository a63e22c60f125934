-- `ssh`'s fake for `runbook test`: a command is matched by "HOST: COMMAND" (`web-1: systemctl
-- restart app`), narrowed to one host with `host = "web-1"`. Answer: { code = 0, stdout = "",
-- stderr = "" }; a non-zero code raises as the real one does unless `check = false`;
-- `readonly = true` commands are not mutating. Uploads and downloads are recorded as
-- "HOST: upload REMOTE" and "HOST: download REMOTE" (answered unless a fake fails them). The
-- hosts' world: `{ host = "web-2", down = true }` refuses connections, `down_after = N` after
-- its first N commands, `host_key_changed = true` fails the host key check.
-- The inventory is the test's: `{ group = "web", hosts = { "web-1", "web-2" } }` answers
-- ssh.group("web") (and a fan-out given the group's name). ssh.each and ssh.rolling stay real
-- (batches, canaries, failure limits, each host's outcome journaled, pauses on the virtual
-- clock) and get these sessions for their hosts.
return function(kit, _support)
  local commands = {}

  -- Raises when the world says the host cannot be reached now.
  local function reachable(host, level)
    for _, f in ipairs(kit.world("ssh", "host_key_changed", { host = host })) do
      if f.host_key_changed then
        error("ssh: " .. host .. ":22: host key verification failed: the host key changed (known_hosts has another)", level + 1)
      end
    end
    for _, f in ipairs(kit.world("ssh", "down", { host = host })) do
      if f.down then error("ssh: " .. host .. ":22: connect: connection refused (the host is down)", level + 1) end
    end
    for _, f in ipairs(kit.world("ssh", "down_after", { host = host })) do
      if (commands[host] or 0) >= f.down_after then
        error("ssh: " .. host .. ":22: connection lost (the host went down)", level + 1)
      end
    end
  end

  local function session(host)
    local s = { host = host }
    function s.exec(_, command, opts)
      opts = opts or {}
      reachable(host, 2)
      commands[host] = (commands[host] or 0) + 1
      if kit.helpers.holds_secret(command) then
        error("ssh: " .. host .. ": a secret is in the command line (ps shows it on the host): pass it in env or stdin", 2)
      end
      local call = host .. ": " .. kit.text(command)
      -- What goes in on stdin is part of the call (a socat to HAProxy's socket on the host).
      if opts.stdin ~= nil then call = call .. " <<< " .. kit.text(opts.stdin) end
      local a = kit.faked("ssh", call, { mutating = not opts.readonly, target = { host = host } })
      local r = { code = a.code or 0, stdout = a.stdout or "", stderr = a.stderr or "", ms = a.ms or 0, host = host }
      if r.code ~= 0 and opts.check ~= false then
        error(string.format("ssh: %s: `%s` exited with code %d: %s", host, kit.text(command), r.code, r.stderr), 2)
      end
      return r
    end
    function s.upload(_, local_path, remote_path)
      reachable(host, 2)
      local a = kit.faked("ssh", host .. ": upload " .. kit.text(remote_path),
        { target = { host = host }, world = true, args = { kit.text(local_path) } }) or {}
      return { bytes = a.bytes or 0, sha256 = a.sha256 or "", ms = 0 }
    end
    function s.download(_, remote_path, local_path)
      reachable(host, 2)
      local a = kit.faked("ssh", host .. ": download " .. kit.text(remote_path),
        { mutating = false, target = { host = host }, world = true, args = { kit.text(local_path) } }) or {}
      return { bytes = a.bytes or 0, sha256 = a.sha256 or "", ms = 0 }
    end
    function s.close() end
    return setmetatable(s, { __tostring = function() return "ssh session " .. host end })
  end

  local function connect(host)
    kit.record { primitive = "ssh", call = host .. ": connect", faked = true, mutating = false, tried = "world" }
    reachable(host, 3)
    return session(host)
  end

  ssh.connect = function(opts_or_host, opts)
    local host = type(opts_or_host) == "table" and opts_or_host.host or opts_or_host
    if type(host) ~= "string" then error("ssh: connect: no host (a host spec, or { host = ... })", 2) end
    local _ = opts
    local s = connect(host)
    return s
  end
  -- The sessions of ssh.each and ssh.rolling.
  kit.hook("ssh", function(host) return connect(host) end)

  local function group(name)
    for _, f in ipairs(kit.spec.ssh or {}) do
      if f.group == name then
        kit.record { primitive = "ssh", call = "group " .. name, faked = true, mutating = false, tried = "group" }
        return kit.copy(f.hosts or {})
      end
    end
    kit.record { primitive = "ssh", call = "group " .. tostring(name), faked = false, mutating = false, tried = "none" }
    error("unfaked call: ssh group " .. tostring(name) .. " (give it in fakes.ssh: { group = \"" .. tostring(name)
      .. "\", hosts = { ... } })", 3)
  end
  ssh.group = function(name)
    local hosts = group(name)
    return hosts
  end
  kit.hook("ssh.group", group)
end
