#!/usr/bin/env python3
"""SSH fan-out benchmark (issue 4): `uptime` on 50 hosts, concurrency 50.

    python3 benches/ssh.py            # builds the release binary first
    python3 benches/ssh.py --quick    # fewer repetitions

OpenSSH's sshd listens on 50 loopback addresses (127.0.0.2 ... 127.0.0.51; four servers, as
one listens on at most 16 sockets) reached as 50 hosts, each checked against known_hosts. Measured in the same script, medians of repeated
runs, whole commands (process start included):

- runbook: `runbook run` of a one-step runbook, `ssh.each` over the 50 hosts (concurrency 50),
  the durable journal recording each host's outcome;
- OpenSSH: the same 50 `ssh host uptime` run by `xargs -P 50` (the baseline to match);
- ansible: `ansible all -m command -a uptime -f 50` with ansible-core from PyPI (ControlPersist
  off, so every run opens its connections, as the other two do).

Peak RSS of the runbook process is reported. Results go to stdout (Markdown) and
benches/out/ssh.json.
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/runbook-target")
BIN = os.path.join(TARGET, "release", "runbook")
OUT = os.path.join(ROOT, "benches", "out")
QUICK = "--quick" in sys.argv
HOSTS = 50


def run(cmd, cwd, env=None):
    """Runs cmd, returns (seconds, peak RSS in KiB); raises on failure."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd[:3])}... exited {code}: {err.read().decode()[-3000:]}")
    return elapsed, usage.ru_maxrss


def median_run(cmd, cwd, times, env=None):
    results = [run(cmd, cwd, env) for _ in range(times)]
    return statistics.median(r[0] for r in results), max(r[1] for r in results), [round(r[0] * 1000) for r in results]


def free_port(addrs):
    for _ in range(100):
        s = socket.socket()
        s.bind((addrs[0], 0))
        port = s.getsockname()[1]
        s.close()
        ok = True
        for a in addrs:
            t = socket.socket()
            try:
                t.bind((a, port))
            except OSError:
                ok = False
            finally:
                t.close()
        if ok:
            return port
    raise RuntimeError("no port free on every address")


def start_sshd(work):
    addrs = [f"127.0.0.{i + 2}" for i in range(HOSTS)]
    port = free_port(addrs)
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(work, name)], check=True)
    shutil.copy(os.path.join(work, "client.pub"), os.path.join(work, "authorized_keys"))
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)
    procs = []
    # sshd listens on at most 16 sockets: one server per 16 addresses.
    for n, start in enumerate(range(0, HOSTS, 16)):
        conf = os.path.join(work, f"sshd{n}.conf")
        with open(conf, "w") as f:
            f.write(f"Port {port}\n")
            for a in addrs[start:start + 16]:
                f.write(f"ListenAddress {a}\n")
            f.write(
                f"HostKey {work}/host\nPidFile {work}/sshd{n}.pid\nAuthorizedKeysFile {work}/authorized_keys\n"
                "StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                "PermitRootLogin yes\nSubsystem sftp internal-sftp\nLogLevel ERROR\nUseDNS no\n"
                "MaxStartups 500\nMaxSessions 100\n"
            )
        log = open(os.path.join(work, f"sshd{n}.log"), "w")
        procs.append(subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", conf], stdout=log, stderr=log))
    deadline = time.time() + 20
    for a in addrs:
        while True:
            try:
                socket.create_connection((a, port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    logs = "".join(open(os.path.join(work, f)).read() for f in os.listdir(work) if f.endswith(".log"))
                    raise RuntimeError("sshd did not start: " + logs)
                time.sleep(0.05)
    key = open(os.path.join(work, "host.pub")).read().split()[:2]
    with open(os.path.join(work, "known_hosts"), "w") as f:
        for a in addrs:
            f.write(f"[{a}]:{port} {' '.join(key)}\n")
    return procs, addrs, port


def bench_runbook(work, addrs, port, user, reps):
    hosts = ", ".join(f'"{a}:{port}"' for a in addrs)
    with open(os.path.join(work, "runbook.toml"), "w") as f:
        f.write(f'[hosts.all]\nhosts = [{hosts}]\nuser = "{user}"\nkey = "{work}/client"\nknown_hosts = "{work}/known_hosts"\n')
    with open(os.path.join(work, "uptime.lua"), "w") as f:
        f.write('runbook { name = "uptime" }\n'
                'step("uptime", function()\n'
                '  local r = ssh.each("all", function(h) return h:exec("uptime", { echo = false }).code end, { concurrency = 50 })\n'
                '  local n = 0; for _, o in pairs(r) do if o.ok then n = n + 1 end end\n'
                f'  assert(n == {HOSTS}, n .. " hosts ok")\n'
                '  return n\n'
                'end)\n')
    env = dict(os.environ, RUNBOOK_NO_PROGRESS="1")
    run([BIN, "run", "uptime.lua"], work, env)  # creates the journal
    t, rss, all_ms = median_run([BIN, "run", "uptime.lua"], work, reps, env)
    return {"wall_ms": t * 1000, "all_ms": all_ms, "peak_rss_mb": rss / 1024}


def bench_openssh(work, addrs, port, user, reps):
    with open(os.path.join(work, "hosts.txt"), "w") as f:
        f.write("\n".join(addrs) + "\n")
    cmd = ["sh", "-c",
           f"xargs -P 50 -I{{}} ssh -q -i {work}/client -o BatchMode=yes -o StrictHostKeyChecking=yes "
           f"-o UserKnownHostsFile={work}/known_hosts -o ControlMaster=no -p {port} {user}@{{}} uptime "
           f"< {work}/hosts.txt > /dev/null"]
    run(cmd, work)
    t, _, all_ms = median_run(cmd, work, reps)
    return {"wall_ms": t * 1000, "all_ms": all_ms}


def bench_ansible(work, addrs, port, user, reps):
    venv = os.path.join(OUT, "ansible-venv")
    ansible_bin = os.path.join(venv, "bin", "ansible")
    if not os.path.exists(ansible_bin):
        try:
            subprocess.run([sys.executable, "-m", "venv", venv], check=True, capture_output=True)
            subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--quiet", "ansible-core"], check=True,
                           capture_output=True, timeout=600)
        except Exception as e:  # noqa: BLE001 - report and go on without this baseline
            return {"error": f"ansible-core did not install: {e}"}
    version = subprocess.run([ansible_bin, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    with open(os.path.join(work, "inventory.ini"), "w") as f:
        f.write("[all]\n")
        for a in addrs:
            f.write(f"{a} ansible_port={port}\n")
        f.write(f"[all:vars]\nansible_user={user}\nansible_ssh_private_key_file={work}/client\n"
                "ansible_python_interpreter=/usr/bin/python3\n"
                f"ansible_ssh_common_args=-o UserKnownHostsFile={work}/known_hosts -o StrictHostKeyChecking=yes\n")
    # ANSIBLE_SSH_ARGS replaces ansible's default ControlMaster=auto/ControlPersist=60s, which
    # would let later runs reuse the first one's connections.
    env = dict(os.environ, ANSIBLE_HOME=os.path.join(work, ".ansible"), ANSIBLE_HOST_KEY_CHECKING="True",
               ANSIBLE_SSH_ARGS="-o ControlMaster=no -o ControlPersist=no",
               ANSIBLE_SSH_CONTROL_PATH_DIR=os.path.join(work, "cp"))
    cmd = [ansible_bin, "all", "-i", "inventory.ini", "-m", "command", "-a", "uptime", "-f", "50"]
    run(cmd, work, env)
    t, _, all_ms = median_run(cmd, work, max(2, reps // 2), env)
    return {"version": version, "wall_ms": t * 1000, "all_ms": all_ms}


def main():
    os.makedirs(OUT, exist_ok=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True, env=dict(os.environ, CARGO_TARGET_DIR=TARGET))
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    work = tempfile.mkdtemp(prefix="runbook-ssh-bench-")
    procs, addrs, port = start_sshd(work)
    reps = 3 if QUICK else 7
    try:
        r = bench_runbook(work, addrs, port, user, reps)
        o = bench_openssh(work, addrs, port, user, reps)
        a = bench_ansible(work, addrs, port, user, reps)
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)
    result = {"hosts": HOSTS, "runbook": r, "openssh_xargs": o, "ansible": a,
              "runbook_over_openssh": r["wall_ms"] / o["wall_ms"]}
    if "wall_ms" in a:
        result["ansible_over_runbook"] = a["wall_ms"] / r["wall_ms"]
    with open(os.path.join(OUT, "ssh.json"), "w") as f:
        json.dump(result, f, indent=2)
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| `runbook run`: ssh.each `uptime` on {HOSTS} hosts, concurrency 50 | {r['wall_ms']:.0f} ms | |")
    print(f"| OpenSSH `ssh host uptime` x {HOSTS} via `xargs -P 50` | {o['wall_ms']:.0f} ms | |")
    print(f"| ratio runbook / OpenSSH | {result['runbook_over_openssh']:.2f} | <= 1.0 |")
    if "wall_ms" in a:
        print(f"| `ansible all -m command -a uptime -f 50` ({a['version']}) | {a['wall_ms']:.0f} ms | |")
        print(f"| ratio ansible / runbook | {result['ansible_over_runbook']:.1f}x | >= 5x |")
    else:
        print(f"| ansible baseline | {a['error']} | |")
    print(f"| peak RSS of the runbook process | {r['peak_rss_mb']:.1f} MB | |")


if __name__ == "__main__":
    main()
