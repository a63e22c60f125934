#!/usr/bin/env python3
"""The REPL's time to first prompt, and how fast Ctrl-C cancels a running call.

Every figure comes from the real binary in a pseudo-terminal, timed from the spawn to the moment
its prompt is on the terminal. Baselines run in the same script: `runbook --version` (the floor:
starting this binary at all) and psql to its prompt against a local PostgreSQL (what on-call
engineers open beside a shell today).

    python3 benches/repl.py            # writes benches/out/repl.json
"""
import json
import os
import pty
import select
import signal
import statistics
import subprocess
import tempfile
import time

from common import BIN, OUT, ROOT, Postgres, build

RUNS = int(os.environ.get("RUNS", "30"))


def spawn(argv, cwd, env):
    """Starts argv on a new pty; returns (pid, master fd)."""
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(cwd)
        os.execve(argv[0], argv, env)
    return pid, fd


def read_until(fd, needle, deadline):
    seen = b""
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {needle!r} in {seen[-400:]!r}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                raise TimeoutError(f"closed before {needle!r}: {seen[-400:]!r}")
            if not chunk:
                raise TimeoutError(f"closed before {needle!r}")
            seen += chunk
    return seen


def finish(pid, fd, keys=b"\x04"):
    try:
        os.write(fd, keys)
    except OSError:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        try:
            if select.select([fd], [], [], 0.05)[0]:
                os.read(fd, 65536)
        except OSError:
            pass
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    os.close(fd)


def to_prompt(argv, cwd, env, prompt, quit_keys=b"\x04"):
    t0 = time.monotonic()
    pid, fd = spawn(argv, cwd, env)
    read_until(fd, prompt, t0 + 20)
    ms = (time.monotonic() - t0) * 1000
    finish(pid, fd, quit_keys)
    return ms


def summary(samples):
    s = sorted(samples)
    return {"p50_ms": round(statistics.median(s), 1), "p90_ms": round(s[int(len(s) * 0.9) - 1], 1),
            "min_ms": round(s[0], 1), "runs": len(s)}


def main():
    build()
    work = tempfile.mkdtemp(prefix="runbook-bench-repl-")
    env = dict(os.environ, TERM="xterm", RUNBOOK_HISTORY=os.path.join(work, "history"), RUNBOOK_LEASE_SECS="30")
    env.pop("RUNBOOK_STATE", None)
    # A project as on-call finds it: an inventory, and a run that failed at its second step.
    with open(os.path.join(work, "runbook.toml"), "w") as f:
        f.write('[hosts.web]\nhosts = ["127.0.0.2", "127.0.0.3"]\n[hosts.db]\nhosts = ["127.0.0.4"]\n')
    with open(os.path.join(work, "failing.lua"), "w") as f:
        f.write('runbook { name = "failing" }\n'
                'step("one", function() return { rows = 3 } end)\n'
                'step("two", function() fail("disk full") end)\n')
    subprocess.run([BIN, "run", "failing.lua"], cwd=work, env=dict(env, RUNBOOK_NO_PROGRESS="1"),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    results = {}
    version = []
    for _ in range(RUNS):
        t0 = time.monotonic()
        subprocess.run([BIN, "--version"], stdout=subprocess.DEVNULL, check=True)
        version.append((time.monotonic() - t0) * 1000)
    results["baseline: runbook --version"] = summary(version)

    with Postgres() as pg:
        psql = os.path.join(pg.bindir, "psql")
        penv = dict(env, PGPASSWORD=pg.password)
        argv = [psql, "-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.user, "postgres"]
        results["baseline: psql to its prompt"] = summary(
            [to_prompt(argv, work, penv, b"postgres=", b"\\q\n") for _ in range(RUNS)])

    results["runbook repl to its prompt"] = summary(
        [to_prompt([BIN, "repl"], work, env, b"runbook> ") for _ in range(RUNS)])
    results["runbook repl --last (attached to a failed run) to its prompt"] = summary(
        [to_prompt([BIN, "repl", "--last"], work, env, b"]> ") for _ in range(RUNS)])

    # Ctrl-C during sleep("30s"): from the key to the REPL saying the call was interrupted.
    cancel = []
    for _ in range(10):
        pid, fd = spawn([BIN, "repl"], work, env)
        read_until(fd, b"runbook> ", time.monotonic() + 20)
        os.write(fd, b'sleep("30s")\r')
        read_until(fd, b"\r\n", time.monotonic() + 5)
        time.sleep(0.3)
        t0 = time.monotonic()
        os.write(fd, b"\x03")
        read_until(fd, b"interrupted", t0 + 30)
        cancel.append((time.monotonic() - t0) * 1000)
        finish(pid, fd)
    results["Ctrl-C during sleep(\"30s\") to 'interrupted'"] = summary(cancel)

    base = results["baseline: runbook --version"]["p50_ms"]
    psql_p50 = results["baseline: psql to its prompt"]["p50_ms"]
    for name, r in results.items():
        r["x_version"] = round(r["p50_ms"] / base, 2)
        r["x_psql"] = round(r["p50_ms"] / psql_p50, 2)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "repl.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"{'what':<62} {'p50 ms':>8} {'p90 ms':>8} {'x --version':>12} {'x psql':>8}")
    for name, r in results.items():
        print(f"{name:<62} {r['p50_ms']:>8} {r['p90_ms']:>8} {r['x_version']:>12} {r['x_psql']:>8}")


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
