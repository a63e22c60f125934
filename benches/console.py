#!/usr/bin/env python3
"""`runbook serve` benchmark (issue 19), on the embedded SQLite journal:

1. The run list and a run page with 100,000 runs in the journal: time per request to the
   console (p50/p99, over loopback, with an API token), against the same queries run directly
   on the journal file in this script (Python's sqlite3: the baseline), and the same list with
   10 runs in the journal.
2. Live view delay: from a step's end as the journal records it (finished_at) to its event
   arriving in an open server-sent-events stream (p50/p99; target under 250 ms).
3. The console's peak RSS (VmHWM) while 50 viewers watch a live run (target under 64 MB).

    python3 benches/console.py           # 300 requests per page, 100,000 runs
    python3 benches/console.py --quick   # 100 requests per page

Results go to stdout (Markdown) and benches/out/console.json.
"""
import hashlib
import http.client
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BIN, OUT, build, free_port  # noqa: E402

QUICK = "--quick" in sys.argv
REQUESTS = 100 if QUICK else 300
RUNS = 100_000
VIEWERS = 50
TOKEN = "rbk_bench-token-0123456789abcdefghijklmnop"

SEED = """runbook { name = "seed", params = { target = { type = "string", default = "db1" } } }
for i = 1, 5 do step("step " .. i, function() return { n = i } end) end
"""

LIVE = """runbook { name = "live" }
for i = 1, %d do step("step " .. i, function() exec{shell = "sleep %s"} return i end) end
"""


def config():
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    return f"""[serve]
runbooks = ["."]
[serve.users.bench]
roles = ["admin"]
tokens = ["sha256:{digest}"]
"""


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round((len(xs) - 1) * p)))]


def run(args, work, env=None, check=True):
    e = dict(os.environ, RUNBOOK_NO_PROGRESS="1", **(env or {}))
    r = subprocess.run([BIN] + args, cwd=work, env=e, capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"runbook {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r


class Console:
    def __init__(self, work):
        self.port = free_port()
        self.log = open(os.path.join(work, "serve.log"), "w")
        self.proc = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{self.port}"], cwd=work,
                                     stdout=self.log, stderr=self.log, env=dict(os.environ, RUNBOOK_NO_PROGRESS="1"))
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("the console did not start")
                time.sleep(0.05)

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def hwm_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def get_times(console, path, n):
    c = console.conn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        c.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        r = c.getresponse()
        body = r.read()
        times.append((time.perf_counter() - t) * 1000)
        if r.status != 200:
            sys.exit(f"GET {path}: {r.status} {body[:300]}")
    return times


def direct_times(db, queries, n):
    conn = sqlite3.connect(db)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        for q, args in queries:
            conn.execute(q, args).fetchall()
        times.append((time.perf_counter() - t) * 1000)
    conn.close()
    return times


def fill(db, seed_id, total):
    """Copies the seed run (and its steps) into `total - 1` more runs, spread over time."""
    conn = sqlite3.connect(db)
    cols = [r[1] for r in conn.execute("PRAGMA table_info(runs)")]
    repl = {
        "id": "printf('r%07d', n.i)",
        "created_at": "strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-01', '+' || n.i || ' seconds')",
        "started_at": "strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-01', '+' || n.i || ' seconds')",
        "status": "CASE n.i % 10 WHEN 0 THEN 'failed' ELSE 'succeeded' END",
        "user": "CASE n.i % 3 WHEN 0 THEN 'alice' WHEN 1 THEN 'bob' ELSE 'carol' END",
    }
    select = ", ".join(repl.get(c, f'runs."{c}"') for c in cols)
    quoted = ", ".join(f'"{c}"' for c in cols)
    with conn:
        conn.execute(f"""WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
            INSERT INTO runs ({quoted}) SELECT {select} FROM runs, n WHERE runs.id = ?""", (total - 1, seed_id))
        scols = [r[1] for r in conn.execute("PRAGMA table_info(steps)")]
        ssel = ", ".join("r.id" if c == "run_id" else f's."{c}"' for c in scols)
        squoted = ", ".join(f'"{c}"' for c in scols)
        conn.execute(f"""INSERT INTO steps ({squoted}) SELECT {ssel} FROM steps s, runs r
            WHERE s.run_id = ? AND r.id LIKE 'r%'""", (seed_id,))
    conn.execute("ANALYZE")
    conn.close()


def pages(total):
    work = tempfile.mkdtemp(prefix="runbook-bench-console-")
    with open(os.path.join(work, "runbook.toml"), "w") as f:
        f.write(config())
    with open(os.path.join(work, "seed.lua"), "w") as f:
        f.write(SEED)
    run(["run", "seed.lua"], work)
    db = os.path.join(work, ".runbook", "state.db")
    seed = sqlite3.connect(db).execute("SELECT id FROM runs").fetchone()[0]
    if total > 1:
        fill(db, seed, total)
    count = sqlite3.connect(db).execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    console = Console(work)
    try:
        cols = "id, runbook, path, content_hash, source, params, \"user\", host, pid, pid_start, trigger, dry_run, " \
               "rollback, lock_name, status, error, created_at, started_at, finished_at, heartbeat_at, lease_secs, " \
               "cancel_requested, queue_key, not_before, queued_params, max_memory, auto_resume"
        list_q = [(f"SELECT {cols} FROM runs ORDER BY created_at DESC, id DESC LIMIT 51", ())]
        failed_q = [(f"SELECT {cols} FROM runs WHERE status = 'failed' ORDER BY created_at DESC, id DESC LIMIT 51", ())]
        page_q = [(f"SELECT {cols} FROM runs WHERE id = ?", (seed,)),
                  ("SELECT * FROM steps WHERE run_id = ? ORDER BY seq", (seed,)),
                  ("SELECT * FROM step_items WHERE run_id = ?", (seed,)),
                  ("SELECT * FROM votes WHERE run_id = ?", (seed,)),
                  ("SELECT * FROM events WHERE run_id = ? ORDER BY id", (seed,))]
        out = {"runs": count}
        for name, path, queries in [("list", "/api/v1/runs", list_q), ("list_html", "/runs", list_q),
                                    ("failed", "/api/v1/runs?status=failed", failed_q),
                                    ("run_page", f"/runs/{seed}", page_q)]:
            get_times(console, path, 10)
            served = get_times(console, path, REQUESTS)
            direct = direct_times(db, queries, REQUESTS)
            out[name] = {"p50": pct(served, 0.5), "p99": pct(served, 0.99),
                         "direct_p50": pct(direct, 0.5), "direct_p99": pct(direct, 0.99)}
        return out
    finally:
        console.stop()


def sse_reader(console, run_id, arrivals, ready, stop):
    s = socket.create_connection(("127.0.0.1", console.port))
    s.sendall(f"GET /runs/{run_id}/live HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
    s.settimeout(0.5)
    buf = b""
    ready.set()
    while not stop.is_set():
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        now = time.time()
        buf += chunk
        while b"\n\n" in buf:
            frame, buf = buf.split(b"\n\n", 1)
            for line in frame.split(b"\n"):
                if line.startswith(b"data:") and arrivals is not None:
                    try:
                        ev = json.loads(line[5:].strip())
                    except ValueError:
                        continue
                    if ev.get("event") == "step_finished":
                        arrivals[ev.get("step")] = now
            if b"event: end" in frame:
                stop.set()
    s.close()


def live(viewers, steps, pause):
    work = tempfile.mkdtemp(prefix="runbook-bench-live-")
    with open(os.path.join(work, "runbook.toml"), "w") as f:
        f.write(config())
    with open(os.path.join(work, "live.lua"), "w") as f:
        f.write(LIVE % (steps, pause))
    console = Console(work)
    try:
        c = console.conn()
        c.request("POST", "/api/v1/runbooks/live/runs", body="{}",
                  headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        r = c.getresponse()
        run_id = json.loads(r.read())["run_id"]
        arrivals = {}
        stop = threading.Event()
        threads = []
        for i in range(viewers):
            ready = threading.Event()
            t = threading.Thread(target=sse_reader, args=(console, run_id, arrivals if i == 0 else None, ready, stop),
                                 daemon=True)
            t.start()
            ready.wait()
            threads.append(t)
        time.sleep(0.3)
        worker = subprocess.Popen([BIN, "worker", "--until-empty", "--poll", "100ms"], cwd=work,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=dict(os.environ, RUNBOOK_NO_PROGRESS="1"))
        worker.wait(timeout=600)
        stop.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=5)
        hwm = console.hwm_kib()
        # The step's end as the journal recorded it, to the event's arrival in the stream.
        delays = []
        conn = sqlite3.connect(os.path.join(work, ".runbook", "state.db"))
        for name, finished in conn.execute("SELECT name, finished_at FROM steps WHERE run_id = ?", (run_id,)):
            if name in arrivals and finished:
                t = datetime.fromisoformat(finished.replace("Z", "+00:00")).timestamp()
                delays.append((arrivals[name] - t) * 1000)
        return {"viewers": viewers, "steps": steps, "delays": len(delays),
                "delay_p50": pct(delays, 0.5) if delays else None, "delay_p99": pct(delays, 0.99) if delays else None,
                "peak_rss_mib": hwm / 1024}
    finally:
        console.stop()


def main():
    build()
    small = pages(10)
    big = pages(RUNS)
    one = live(1, 40, "0.05")
    many = live(VIEWERS, 40, "0.05")
    result = {"small": small, "big": big, "live_1": one, "live_50": many}
    with open(os.path.join(OUT, "console.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"| page | journal runs | console p50 | console p99 | direct query p50 | direct query p99 | ratio (p50) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, key in [("run list (API)", "list"), ("run list (HTML)", "list_html"), ("failed runs (API)", "failed"),
                       ("run page (HTML)", "run_page")]:
        for r in (small, big):
            x = r[key]
            print(f"| {label} | {r['runs']:,} | {x['p50']:.2f} ms | {x['p99']:.2f} ms | {x['direct_p50']:.3f} ms | "
                  f"{x['direct_p99']:.3f} ms | {x['p50'] / max(x['direct_p50'], 1e-6):.0f}x |")
    print()
    print("| live view | viewers | step end → SSE event p50 | p99 | console peak RSS |")
    print("|---|---:|---:|---:|---:|")
    for r in (one, many):
        print(f"| {r['steps']} steps | {r['viewers']} | {r['delay_p50']:.0f} ms | {r['delay_p99']:.0f} ms | "
              f"{r['peak_rss_mib']:.1f} MiB |")


if __name__ == "__main__":
    main()
