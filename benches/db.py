#!/usr/bin/env python3
"""db benchmark (issues 3 and 16): 10,000 `select 1` round trips from Lua against a real
PostgreSQL, against the same loop written directly with sqlx (benches/db_baseline.rs) in the same
run; 100,000 rows of pg_stat_activity-like mixed types (interval, inet, jsonb, int[],
timestamptz) read with `conn:query` into Lua tables, against sqlx reading the same columns cast
to text; and peak RSS of `each` over 100,000 and 1,000,000 rows (it must stay flat).

    python3 benches/db.py

Starts its own PostgreSQL cluster in a temporary directory (as the postgres user when run as
root) and stops it. Results go to stdout (Markdown) and benches/out/db.json.
"""
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/runbook-target")
BIN = os.path.join(TARGET, "release", "runbook")
OUT = os.path.join(ROOT, "benches", "out")
N = 10_000


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def as_pg(cmd):
    return (["runuser", "-u", "postgres", "--"] + cmd) if os.geteuid() == 0 else cmd


def start_postgres():
    bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    root = tempfile.mkdtemp(prefix="runbook-bench-pg-")
    with open(os.path.join(root, "pw"), "w") as f:
        f.write("bench-pw")
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:postgres", root], check=True)
    data = os.path.join(root, "data")
    subprocess.run(as_pg([f"{bindir}/initdb", "-D", data, "-U", "bench", "--auth=scram-sha-256", f"--pwfile={root}/pw",
                          "-E", "UTF8", "--locale=C", "-N"]), check=True, capture_output=True)
    port = free_port()
    subprocess.run(as_pg([f"{bindir}/pg_ctl", "-D", data, "-l", f"{root}/log", "-w", "-o",
                          f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"]),
                   check=True, capture_output=True)
    return bindir, root, data, f"postgres://bench:bench-pw@127.0.0.1:{port}/postgres"


def run_runbook(work, body, url):
    path = os.path.join(work, "bench.lua")
    with open(path, "w") as f:
        f.write(body)
    env = dict(os.environ, RUNBOOK_NO_PROGRESS="1", PG_URL=url)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([BIN, "run", "bench.lua"], cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise RuntimeError(err.read().decode())
    show = json.loads(subprocess.run([BIN, "show", "last", "--output", "json"], cwd=work, capture_output=True, text=True).stdout)
    return show, usage.ru_maxrss / 1024


def main():
    os.makedirs(OUT, exist_ok=True)
    # The target directory the scripts read from, whatever the caller's environment says.
    os.environ["CARGO_TARGET_DIR"] = TARGET
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "bench", "--no-run", "--quiet", "--bench", "db_baseline"], cwd=ROOT, check=True, capture_output=True)
    bindir, root, data, url = start_postgres()
    work = tempfile.mkdtemp(prefix="runbook-bench-db-")
    try:
        header = 'runbook { name = "dbbench", params = { url = { type = "secret", env = "PG_URL", required = true } } }\n' \
                 'local c = db.connect(params.url)\nc:scalar("select 1")\n'
        lua_ms, sqlx_ms = [], []
        for _ in range(3):
            show, _ = run_runbook(work, header + f'step("loop", function() for i = 1, {N} do c:scalar("select 1") end end)\n', url)
            lua_ms.append(show["steps"][0]["duration_ms"])
            base = subprocess.run(["cargo", "bench", "--quiet", "--bench", "db_baseline", "--", url, str(N)], cwd=ROOT,
                                  check=True, capture_output=True, text=True)
            sqlx_ms.append(float(base.stdout.strip().splitlines()[-1]))
        subprocess.run([f"{bindir}/psql", url, "-X", "-q", "-c",
                        "create table mixed as select g as pid, (g % 1000) * interval '1.5 second' as xact_age, "
                        "('10.' || (g % 200) || '.' || (g % 250) || '.' || (g % 7))::inet as client_addr, "
                        "jsonb_build_object('app', 'svc-' || (g % 10), 'n', g) as info, array[g, g + 1, g + 2] as ids, "
                        "now() - (g % 5000) * interval '1 minute' as backend_start from generate_series(1, 100000) g"],
                       check=True, capture_output=True)
        mixed_lua, mixed_sqlx = [], []
        # Five pairs, each Lua read right after its baseline: the machine's speed drifts by up to
        # 40% over a minute, so the ratio is taken per pair and the median reported.
        for _ in range(5):
            show, _ = run_runbook(work, header + 'c:query("select * from mixed limit 10")\n'
                                  'step("read", function() return #c:query("select * from mixed") end)\n', url)
            assert show["steps"][0]["result"] == 100_000, show
            mixed_lua.append(show["steps"][0]["duration_ms"])
            base = subprocess.run(["cargo", "bench", "--quiet", "--bench", "db_baseline", "--", url, "mixed"], cwd=ROOT,
                                  check=True, capture_output=True, text=True)
            mixed_sqlx.append(float(base.stdout.strip().splitlines()[-1]))
        rss = {}
        for rows in (100_000, 1_000_000):
            body = header + f'step("each", function() local n, s = 0, 0; c:each("select g, repeat(\'x\', 100) as pad from generate_series(1, {rows}) g", function(r) n = n + 1; s = s + r.g end); return n end)\n'
            show, peak = run_runbook(work, body, url)
            assert show["steps"][0]["result"] == rows, show
            rss[rows] = (peak, show["steps"][0]["duration_ms"])
    finally:
        subprocess.run(as_pg([f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    lua, base = sorted(lua_ms)[1], sorted(sqlx_ms)[1]
    mlua_ms, msqlx_ms = sorted(mixed_lua)[2], sorted(mixed_sqlx)[2]
    mixed_ratios = sorted(a / b for a, b in zip(mixed_lua, mixed_sqlx))
    mixed_ratio = mixed_ratios[2]
    result = {"select1_lua_ms": lua, "select1_sqlx_ms": base, "ratio": lua / base,
              "mixed_100k_lua_ms": mlua_ms, "mixed_100k_sqlx_text_ms": msqlx_ms, "mixed_ratio": mixed_ratio, "mixed_ratios": mixed_ratios,
              "each_100k_rss_mb": rss[100_000][0], "each_1m_rss_mb": rss[1_000_000][0],
              "each_1m_ms": rss[1_000_000][1], "runs_lua_ms": lua_ms, "runs_sqlx_ms": sqlx_ms}
    with open(os.path.join(OUT, "db.json"), "w") as f:
        json.dump(result, f, indent=2)
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| {N:,} `select 1` round trips from Lua (`conn:scalar`) | {lua:.0f} ms | |")
    print(f"| the same loop written with sqlx directly | {base:.0f} ms | |")
    print(f"| ratio Lua / sqlx | {lua / base:.2f}x | <= 1.3x |")
    print(f"| 100,000 rows of mixed types (interval, inet, jsonb, int[], timestamptz) into Lua tables (`conn:query`) | {mlua_ms:.0f} ms | |")
    print(f"| the same columns cast to text, read with sqlx | {msqlx_ms:.0f} ms | |")
    print(f"| ratio Lua / sqlx text (median of five pairs; {mixed_ratios[0]:.2f}x to {mixed_ratios[-1]:.2f}x) | {mixed_ratio:.2f}x | <= 1.3x |")
    print(f"| peak RSS, `each` over 100,000 rows | {rss[100_000][0]:.1f} MB | |")
    print(f"| peak RSS, `each` over 1,000,000 rows | {rss[1_000_000][0]:.1f} MB ({rss[1_000_000][1] / 1000:.1f} s) | <= 60 MB |")


if __name__ == "__main__":
    main()
