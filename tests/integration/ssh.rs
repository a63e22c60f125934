//! The ssh primitive against real OpenSSH servers on 127.0.0.2, 127.0.0.3, ... (servers.rs).
use serde_json::json;

use crate::harness::Env;
use crate::servers::{sshd, Sshd};

/// Connect options every test uses: the test key and known_hosts.
fn connect_opts(s: &Sshd) -> String {
    format!(r#"{{ user = "{}", key = "{}", known_hosts = "{}" }}"#, s.user, s.key.display(), s.known_hosts.display())
}

fn result(show: &serde_json::Value, step: &str) -> serde_json::Value {
    let s = Env::step(show, step);
    assert_eq!(s["status"], "succeeded", "step {step}: {s}");
    s["result"].clone()
}

#[test]
fn exec_reports_codes_output_env_stdin_and_keeps_secrets_off_the_command_line() {
    let s = sshd();
    let env = Env::new();
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "ssh-exec" }}
local token = secret("DEPLOY_TOKEN")
local opts = {opts}
opts.host = "{host}"
local host = ssh.connect(opts)
local function err(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error")
  return tostring(e):match("[^\n]*")
end
step("exec", function()
  local r = host:exec("echo out; echo err >&2; exit 3", {{ check = false }})
  local e = host:exec('printf "%s|%s|%s" "$GREETING" "$TOKEN" "$(pwd)"', {{ env = {{ GREETING = "hi there's", TOKEN = token }}, cwd = "/tmp" }})
  local i = host:exec("wc -c; cat", {{ stdin = "line one\nline two\n" }})
  local own = host:exec('printf "%s%s" "$e" "$n"', {{ env = {{ e = "E", n = "N" }} }}).stdout
  local same = ssh.connect(opts)
  return {{ code = r.code, stdout = r.stdout, stderr = r.stderr, host = r.host, ms_ok = r.ms >= 0,
           env = e.stdout, stdin = i.stdout, own = own }}
end)
step("errors", function()
  return {{
    exit = err(host.exec, host, "echo bad thing >&2; exit 4"),
    secret_cmd = err(host.exec, host, "echo " .. token),
    unknown = err(host.exec, host, "true", {{ tiemout = 1 }}),
    bad_env = err(host.exec, host, "true", {{ env = {{ ["A-B"] = "x" }} }}),
    reserved_env = err(host.exec, host, "true", {{ env = {{ __RB_CMD = "x" }} }}),
  }}
end)
"#,
            opts = connect_opts(s),
            host = s.hosts[0],
        ),
    );
    let out = env.run_env(&["run", "rb.lua"], &[("DEPLOY_TOKEN", "tok-ssh-4e1d9a")]);
    out.assert_code(0);
    let show = env.show("last");
    let r = result(&show, "exec");
    assert_eq!(r["code"], 3);
    assert_eq!(r["stdout"], "out\n");
    assert_eq!(r["stderr"], "err\n");
    assert_eq!(r["host"], s.hosts[0]);
    // The token reached the remote command; on its way back into the journal it is redacted.
    assert_eq!(r["env"], "hi there's|<secret:DEPLOY_TOKEN>|/tmp");
    assert_eq!(r["stdin"], "18\n");
    assert_eq!(r["own"], "EN", "the wrapper's own variables do not clobber the command's env");
    let e = result(&show, "errors");
    let exit = e["exit"].as_str().unwrap();
    assert!(exit.contains("`echo bad thing >&2; exit 4` exited with code 4: bad thing"), "{exit}");
    assert!(e["secret_cmd"].as_str().unwrap().contains("the command is a secret"), "{e}");
    assert!(e["unknown"].as_str().unwrap().contains("unknown key `tiemout`"), "{e}");
    assert!(e["bad_env"].as_str().unwrap().contains("invalid variable name 'A-B'"), "{e}");
    assert!(e["reserved_env"].as_str().unwrap().contains("invalid variable name '__RB_CMD'"), "{e}");
    assert!(out.all().contains(&format!("{} | out", s.hosts[0])), "output streamed with the host: {}", out.all());
    assert!(!out.all().contains("tok-ssh-4e1d9a"));
    let journal = crate::harness::journal_bytes(&env.journal_path());
    assert!(!crate::harness::contains_bytes(&journal, b"tok-ssh-4e1d9a"));
}

#[test]
fn a_timeout_kills_the_remote_process_group_and_big_output_streams() {
    let s = sshd();
    let env = Env::new();
    let marker = format!("301.{}", std::process::id());
    let step_marker = format!("302.{}", std::process::id());
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "ssh-timeout" }}
local opts = {opts}
opts.host = "{host}"
local host = ssh.connect(opts)
step("slow", {{ continue_on_error = true }}, function()
  return host:exec("sleep {marker} & sleep {marker}; echo never", {{ timeout = "1s" }})
end)
step("step timeout", {{ continue_on_error = true, timeout = "1s" }}, function()
  return host:exec("sleep {step_marker} & sleep {step_marker}")
end)
step("after", function() return host:exec("echo still usable").stdout end)
step("big", function()
  local r = host:exec("head -c 100000000 /dev/zero | tr '\\0' x | fold -w 100; echo", {{ echo = false }})
  return {{ bytes = #r.stdout, last = r.stdout:sub(-3) }}
end)
"#,
            opts = connect_opts(s),
            host = s.hosts[1],
        ),
    );
    // Without the kill, the run would wait for the 301-second sleeps: the deadline fails it.
    let out = crate::harness::finish(env.spawn(&["run", "rb.lua"]), 90);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let show = env.show("last");
    let slow = Env::step(&show, "slow")["error"].as_str().unwrap().to_string();
    assert!(
        slow.contains("still running after 1.0s; SIGTERM sent to its process group, which ended; its exit was seen"),
        "{slow}"
    );
    let stopped = Env::step(&show, "step timeout")["error"].as_str().unwrap().to_string();
    assert!(stopped.contains("timed out after 1.0s"), "{stopped}");
    for m in [&marker, &step_marker] {
        let left = std::process::Command::new("pgrep").args(["-f", &format!("sleep {m}")]).output().unwrap();
        assert!(left.stdout.is_empty(), "no `sleep {m}` left behind: {}", String::from_utf8_lossy(&left.stdout));
    }
    assert_eq!(result(&show, "after"), "still usable\n");
    assert_eq!(result(&show, "big"), json!({"bytes": 101_000_000, "last": "xx\n"}));
}

#[test]
fn upload_and_download_stream_with_checksums() {
    let s = sshd();
    let env = Env::new();
    let data: Vec<u8> = (0..6_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(env.path("payload.bin"), &data).unwrap();
    let remote = env.path("remote/payload.bin");
    std::fs::create_dir_all(remote.parent().unwrap()).unwrap();
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "ssh-transfer" }}
local opts = {opts}
opts.host = "{host}"
local host = ssh.connect(opts)
step("up", function()
  local up = host:upload("payload.bin", "{remote}", {{ mode = "0640" }})
  local mode = host:exec("stat -c %a {remote}").stdout
  local down = host:download("{remote}", "back.bin")
  return {{ up = up.bytes, up_sum = up.sha256, mode = mode, down = down.bytes, same = up.sha256 == down.sha256 }}
end)
step("missing", {{ continue_on_error = true }}, function() return host:download("/nonexistent/file", "x.bin") end)
step("bad mode", {{ continue_on_error = true }}, function() return host:upload("payload.bin", "/tmp/x", {{ mode = "rwx" }}) end)
"#,
            opts = connect_opts(s),
            host = s.hosts[2],
            remote = remote.display(),
        ),
    );
    env.run(&["run", "rb.lua"]).assert_code(0);
    let show = env.show("last");
    let r = result(&show, "up");
    let sum = {
        use sha2::Digest;
        sha2::Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert_eq!(r, json!({"up": 6_000_000, "up_sum": sum, "mode": "640\n", "down": 6_000_000, "same": true}));
    assert_eq!(std::fs::read(&remote).unwrap(), data);
    assert_eq!(std::fs::read(env.path("back.bin")).unwrap(), data);
    let missing = Env::step(&show, "missing")["error"].as_str().unwrap().to_string();
    assert!(missing.contains("cannot open /nonexistent/file"), "{missing}");
    assert!(
        !env.path("x.bin").exists()
            && std::fs::read_dir(env.dir.path()).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".runbook-")),
        "no partial file left"
    );
    assert!(Env::step(&show, "bad mode")["error"].as_str().unwrap().contains("mode is octal text"));
}

#[test]
fn host_keys_are_verified_and_bad_credentials_refused() {
    let s = sshd();
    let env = Env::new();
    // Host 0's name with host 1's key: what a changed (or spoofed) host looks like.
    let swapped = env.write("swapped_known_hosts", &format!("[127.0.0.2]:{} {}\n", s.port, s.host_keys[1]));
    let empty = env.write("empty_known_hosts", "");
    let tofu = env.path("tofu/known_hosts");
    // Host 3 has an ed25519 and an ECDSA key; known_hosts records only the ECDSA one.
    let ecdsa_only = env.write("ecdsa_known_hosts", &format!("[127.0.0.5]:{} {}\n", s.port, s.ecdsa_host_key));
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "ssh-keys" }}
local function err(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error")
  return tostring(e):match("[^\n]*")
end
local base = {{ host = "{h0}", user = "{user}", key = "{key}" }}
local function with(extra)
  local t = {{}}
  for k, v in pairs(base) do t[k] = v end
  for k, v in pairs(extra) do t[k] = v end
  return t
end
step("keys", function()
  return {{
    changed = err(ssh.connect, with {{ known_hosts = "{swapped}" }}),
    unknown = err(ssh.connect, with {{ known_hosts = "{empty}" }}),
    accepted = ssh.connect(with {{ known_hosts = "{tofu}", host_key = "accept-new" }}):exec("echo ok").stdout,
    strict_after = ssh.connect(with {{ host = "{h0}", known_hosts = "{tofu}" }}):exec("echo again").stdout,
    passphrase = ssh.connect(with {{ host = "{h1}", known_hosts = "{kh}", key = "{key_pass}", passphrase = secret("KEY_PASS") }}):exec("echo pass").stdout,
    stranger = err(ssh.connect, with {{ host = "{h2}", known_hosts = "{kh}", key = "{stranger}" }}),
    password = err(ssh.connect, {{ host = "{h3}", user = "{user}", known_hosts = "{kh}", password = secret("SSH_PASSWORD") }}),
    down = err(ssh.connect, with {{ host = "{down}", known_hosts = "{kh}", timeout = "2s" }}),
    policy = err(ssh.connect, with {{ known_hosts = "{kh}", host_key = "sometimes" }}),
    off = ssh.connect(with {{ host = "{h2}", known_hosts = "{empty}", host_key = "off" }}):exec("echo off").stdout,
    key_text = err(ssh.connect, with {{ known_hosts = "{kh}", key = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc" }}),
    other_type = ssh.connect(with {{ host = "{h3}", known_hosts = "{ecdsa_only}" }}):exec("echo ecdsa").stdout,
  }}
end)
"#,
            h0 = s.hosts[0],
            h1 = s.hosts[1],
            h2 = s.hosts[2],
            h3 = s.hosts[3],
            down = s.down,
            user = s.user,
            key = s.key.display(),
            key_pass = s.key_pass.display(),
            stranger = s.stranger_key.display(),
            kh = s.known_hosts.display(),
            swapped = swapped.display(),
            empty = empty.display(),
            tofu = tofu.display(),
            ecdsa_only = ecdsa_only.display(),
        ),
    );
    let out = env.run_env(&["run", "rb.lua"], &[("KEY_PASS", s.passphrase), ("SSH_PASSWORD", "wrong-pw-8c2f1b")]);
    out.assert_code(0);
    let r = result(&env.show("last"), "keys");
    let get = |k: &str| r[k].as_str().unwrap().to_string();
    let changed = get("changed");
    assert!(changed.contains("host key verification failed: the host key CHANGED"), "{changed}");
    assert_eq!(changed.matches("SHA256:").count(), 2, "both fingerprints: {changed}");
    assert!(get("unknown").contains("unknown host") && get("unknown").contains("SHA256:"), "{}", get("unknown"));
    assert_eq!(get("accepted"), "ok\n");
    assert_eq!(get("strict_after"), "again\n");
    let recorded = std::fs::read_to_string(&tofu).unwrap();
    assert_eq!(recorded, format!("[127.0.0.2]:{} {}\n", s.port, s.host_keys[0]));
    assert!(out.all().contains("new host, key SHA256:"), "accept-new is logged: {}", out.all());
    assert_eq!(get("passphrase"), "pass\n");
    assert!(
        get("stranger").contains("authentication failed") && get("stranger").contains("tried: key"),
        "{}",
        get("stranger")
    );
    assert!(
        get("password").contains("authentication failed") && get("password").contains("tried: password"),
        "{}",
        get("password")
    );
    assert!(get("down").contains(&format!("cannot connect to {}@{}", s.user, s.down)), "{}", get("down"));
    assert!(get("policy").contains("unknown variant `sometimes`"), "{}", get("policy"));
    assert_eq!(get("off"), "off\n");
    assert!(out.all().contains("NOT verified (host_key = \"off\")"), "{}", out.all());
    assert!(get("key_text").contains("pass it as a secret") && !get("key_text").contains("abc"), "{}", get("key_text"));
    assert_eq!(get("other_type"), "ecdsa\n", "the key type known_hosts holds is asked for");
    for secret in ["wrong-pw-8c2f1b", s.passphrase] {
        assert!(!out.all().contains(secret));
        assert!(!crate::harness::contains_bytes(
            &crate::harness::journal_bytes(&env.journal_path()),
            secret.as_bytes()
        ));
    }
}

/// A runbook.toml naming the test servers as group `web`, plus the host that is down.
fn inventory(env: &Env, s: &Sshd, with_down: bool) {
    let mut hosts: Vec<String> = s.hosts.iter().map(|h| format!("\"{h}\"")).collect();
    if with_down {
        hosts.insert(1, format!("\"{}\"", s.down));
    }
    env.write(
        "runbook.toml",
        &format!(
            "[hosts.web]\nhosts = [{}]\nuser = \"{}\"\nkey = \"{}\"\nknown_hosts = \"{}\"\ntimeout = \"3s\"\n",
            hosts.join(", "),
            s.user,
            s.key.display(),
            s.known_hosts.display()
        ),
    );
}

#[test]
fn fan_out_records_each_host_and_honours_max_failures() {
    let s = sshd();
    let env = Env::new();
    inventory(&env, s, true);
    env.write(
        "rb.lua",
        r#"runbook { name = "ssh-each" }
local web = ssh.group("web")
step("tolerant", function()
  local r = ssh.each(web, function(h, host) return h:exec("echo $((6 * 7))").stdout end, { max_failures = 1 })
  local out = {}
  for host, o in pairs(r) do out[host] = { ok = o.ok, status = o.status, result = o.result, error = o.error } end
  return out
end)
step("strict", { continue_on_error = true }, function()
  return ssh.each("web", function(h) return h:exec("true").code end, { concurrency = 1 })
end)
step("bad", { continue_on_error = true }, function() return ssh.each("nope", function() end) end)
"#,
    );
    let out = env.run(&["run", "rb.lua"]);
    out.assert_code(0);
    let show = env.show("last");
    let r = result(&show, "tolerant");
    for h in &s.hosts {
        assert_eq!(r[h], json!({"ok": true, "status": "ok", "result": "42\n"}), "{h}: {r}");
    }
    assert_eq!(r[&s.down]["status"], "failed");
    assert!(r[&s.down]["error"].as_str().unwrap().contains("cannot connect"), "{r}");
    let strict = Env::step(&show, "strict");
    let e = strict["error"].as_str().unwrap();
    assert!(e.contains("ssh.each: 1 of 5 hosts failed (max_failures = 0), 3 not run"), "{e}");
    let items: Vec<(String, String)> = strict["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["item"].as_str().unwrap().to_string(), i["status"].as_str().unwrap().to_string()))
        .collect();
    assert!(items.contains(&(format!("each#1/{}", s.hosts[0]), "ok".into())), "{items:?}");
    assert!(items.contains(&(format!("each#1/{}", s.down), "failed".into())), "{items:?}");
    assert_eq!(items.iter().filter(|(_, st)| st == "not_run").count(), 3, "{items:?}");
    assert!(Env::step(&show, "bad")["error"].as_str().unwrap().contains("no group 'nope'"));

    // A bad runbook.toml is refused before anything runs, with its line.
    env.write("runbook.toml", "[hosts.web]\nhosts = [\"a\"]\nusr = \"x\"\n");
    let bad = env.run(&["run", "rb.lua"]);
    bad.assert_code(2);
    assert!(bad.stderr.contains("runbook.toml:3: unknown field `usr`"), "{}", bad.stderr);
}

#[test]
fn rolling_deploy_halts_at_a_failing_health_check() {
    let s = sshd();
    let env = Env::new();
    inventory(&env, s, false);
    let log = env.path("deployed.log");
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "ssh-rolling" }}
local web = ssh.group("web")
step("deploy", function()
  return ssh.rolling(web, function(h, host)
    h:exec("echo " .. host .. " >> {log}")
    return "deployed"
  end, {{ first = 1, batch = 2, pause = "10ms",
         health = function(host) return host ~= "{bad}" end }})
end)
"#,
            log = log.display(),
            bad = s.hosts[1],
        ),
    );
    let out = env.run(&["run", "rb.lua"]);
    out.assert_code(1);
    let show = env.show("last");
    let step = Env::step(&show, "deploy");
    let e = step["error"].as_str().unwrap();
    assert!(e.contains("ssh.rolling halted: 1 of 4 hosts failed (max_failures = 0), 1 not run"), "{e}");
    assert!(e.contains(&format!("{}: health check returned false", s.hosts[1])), "{e}");
    let deployed = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<&str> = deployed.lines().collect();
    assert_eq!(lines[0], s.hosts[0], "the canary first");
    lines.sort();
    let mut first_three = s.hosts[..3].to_vec();
    first_three.sort();
    assert_eq!(lines, first_three, "the canary, then one batch of two; the last host untouched");
    let status = |h: &str| {
        step["items"].as_array().unwrap().iter().find(|i| i["item"] == format!("rolling#1/{h}")).unwrap()["status"]
            .clone()
    };
    assert_eq!(
        [status(&s.hosts[0]), status(&s.hosts[1]), status(&s.hosts[2]), status(&s.hosts[3])],
        [json!("ok"), json!("failed"), json!("ok"), json!("not_run")]
    );
}

#[test]
fn a_fan_out_killed_midway_resumes_only_the_hosts_without_a_recorded_success() {
    let s = sshd();
    let env = Env::new();
    inventory(&env, s, false);
    let log = env.path("ran.log");
    let gate = env.path("slow-host-may-finish");
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "ssh-resume" }}
step("fan out", function()
  return ssh.each("web", function(h, host)
    h:exec("echo " .. host .. " >> {log}")
    if host == "{slow}" then h:exec("while [ ! -e {gate} ]; do sleep 0.05; done") end
    return host
  end)
end)
"#,
            log = log.display(),
            slow = s.hosts[3],
            gate = gate.display(),
        ),
    );
    let child = KillOnDrop(Some(env.spawn(&["run", "rb.lua"])));
    // Wait until three hosts are recorded done and the fourth is stuck.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let show = env.run(&["show", "last", "--output", "json"]);
        let ok = serde_json::from_str::<serde_json::Value>(&show.stdout)
            .ok()
            .and_then(|v| {
                v["steps"].as_array().and_then(|st| st.first().cloned()).map(|st| {
                    st["items"].as_array().map(|i| i.iter().filter(|i| i["status"] == "ok").count()).unwrap_or(0)
                })
            })
            .unwrap_or(0);
        if ok == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "three hosts never finished: {}", show.all());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut child = child;
    let child = child.0.take().unwrap();
    crate::harness::signal(child.id(), 9);
    let _ = crate::harness::finish(child, 30);
    std::fs::write(&gate, "").unwrap();
    let out = env.run(&["resume", "--last"]);
    out.assert_code(0);
    let ran = std::fs::read_to_string(&log).unwrap();
    let count = |h: &str| ran.lines().filter(|l| *l == h).count();
    for h in &s.hosts[..3] {
        assert_eq!(count(h), 1, "{h} ran once: {ran}");
    }
    assert_eq!(count(&s.hosts[3]), 2, "the unfinished host ran again: {ran}");
    let r = result(&env.show("last"), "fan out");
    for h in &s.hosts {
        assert_eq!(r[h]["result"], json!(h), "{r}");
    }
}

/// A spawned runbook killed if the test fails before it does (no runner left behind).
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn the_inventory_is_found_above_or_given_and_overrides_apply_per_host() {
    let s = sshd();
    let env = Env::new();
    // runbook.toml one folder up, with paths relative to itself; one host overridden.
    std::fs::copy(&s.key, env.path("deploy_key")).unwrap();
    std::fs::copy(&s.known_hosts, env.path("known_hosts")).unwrap();
    env.write(
        "runbook.toml",
        &format!(
            "[hosts.web]\nhosts = [\"{a}\", \"{b}\"]\nuser = \"{user}\"\nkey = \"deploy_key\"\nknown_hosts = \"known_hosts\"\n\n\
             [hosts.web.overrides.\"{b}\"]\nkey = \"no_such_key\"\n",
            a = s.hosts[0],
            b = s.hosts[1],
            user = s.user
        ),
    );
    env.write(
        "ops/rb.lua",
        r#"runbook { name = "inventory" }
step("hosts", function()
  local web = ssh.group("web")
  local r = ssh.each(web, function(h) return h:exec("echo hi").stdout end, { max_failures = 1 })
  return { n = #web, first = r[web[1]].result, second = r[web[2]].error }
end)
"#,
    );
    std::fs::create_dir_all(env.path(".runbook")).unwrap();
    let mut cmd = env.cmd(&["run", "rb.lua"]);
    cmd.current_dir(env.path("ops")).env("RUNBOOK_STATE", env.journal_path());
    let out: crate::harness::Run = cmd.output().unwrap().into();
    out.assert_code(0);
    let r = result(&env.show("last"), "hosts");
    assert_eq!(r["n"], 2);
    assert_eq!(r["first"], "hi\n");
    let second = r["second"].as_str().unwrap();
    assert!(second.contains(&format!("key file {} does not exist", env.path("no_such_key").display())), "{second}");

    // --config names another file; a missing one is refused before anything runs.
    env.write("other.toml", &format!("[hosts.db]\nhosts = [\"{}\"]\n", s.hosts[2]));
    env.write("db.lua", "runbook { name = \"db-hosts\" }\nstep(\"g\", function() return ssh.group(\"db\") end)\n");
    env.run(&["--config", "other.toml", "run", "db.lua"]).assert_code(0);
    assert_eq!(result(&env.show("last"), "g"), json!([s.hosts[2]]));
    let missing = env.run(&["--config", "nope.toml", "run", "db.lua"]);
    missing.assert_code(2);
    assert!(missing.stderr.contains("config file nope.toml does not exist"), "{}", missing.stderr);
}
