#!/usr/bin/env python3
"""Queue benchmark (issue 8): N queued one-step runs drained by `runbook worker --until-empty`.

    python3 benches/queue.py            # 1,000 runs
    python3 benches/queue.py --quick    # 200 runs

Two journals, side by side: PostgreSQL with 4 worker processes (claims with FOR UPDATE SKIP
LOCKED) and the embedded SQLite journal with one worker (the baseline). Reports runs per second
(wall time from the workers' start to the last one's exit), the claim statement's latency
(p50/p99, measured by the workers) and the rate of `runbook enqueue`. Starts its own PostgreSQL
cluster; results go to stdout (Markdown) and benches/out/queue.json.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BIN, OUT, Postgres, build  # noqa: E402

N = 200 if "--quick" in sys.argv else 1000
RUNBOOK = 'runbook { name = "one-step" }\nstep("work", function() return 1 end)\n'


def drain(state, workers, work):
    env = dict(os.environ, RUNBOOK_STATE=state, RUNBOOK_NO_PROGRESS="1")
    rb = os.path.join(work, "one.lua")
    with open(rb, "w") as f:
        f.write(RUNBOOK)
    start = time.perf_counter()
    for _ in range(N):
        subprocess.run([BIN, "enqueue", rb], env=env, check=True, stdout=subprocess.DEVNULL, cwd=work)
    enqueue_rate = N / (time.perf_counter() - start)
    start = time.perf_counter()
    procs = [subprocess.Popen([BIN, "worker", "--until-empty", "--poll", "100ms"], env=dict(env, RUNBOOK_HOSTNAME=f"w{i}"),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=work) for i in range(workers)]
    summaries = [json.loads(p.communicate()[0]) for p in procs]
    wall = time.perf_counter() - start
    done = sum(s["runs"] for s in summaries)
    assert done == N, f"{done} runs of {N}: {summaries}"
    assert all(s["failed"] == 0 for s in summaries), summaries
    return {
        "workers": workers,
        "runs": done,
        "seconds": round(wall, 3),
        "runs_per_second": round(done / wall, 1),
        "claim_ms_p50": round(statistics.median(s["claim_ms_p50"] for s in summaries if s["claims"]), 3),
        "claim_ms_p99": round(max(s["claim_ms_p99"] for s in summaries), 3),
        "enqueue_per_second": round(enqueue_rate, 1),
        "per_worker": [s["runs"] for s in summaries],
    }


def main():
    build()
    results = {}
    with Postgres() as pg:
        pg.createdb("queue")
        with tempfile.TemporaryDirectory() as work:
            results["sqlite_1_worker"] = drain(os.path.join(work, "state.db"), 1, work)
        with tempfile.TemporaryDirectory() as work:
            results["postgres_4_workers"] = drain(pg.url("queue"), 4, work)
    base = results["sqlite_1_worker"]["runs_per_second"]
    results["ratio_postgres4_vs_sqlite1"] = round(results["postgres_4_workers"]["runs_per_second"] / base, 2)
    with open(os.path.join(OUT, "queue.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"| journal, workers | runs/s | claim p50 | claim p99 | enqueue/s | runs per worker |")
    print(f"|---|---|---|---|---|---|")
    for name in ["sqlite_1_worker", "postgres_4_workers"]:
        r = results[name]
        print(f"| {name.replace('_', ' ')} | {r['runs_per_second']} | {r['claim_ms_p50']} ms | {r['claim_ms_p99']} ms "
              f"| {r['enqueue_per_second']} | {r['per_worker']} |")
    print(f"\nPostgreSQL with 4 workers drains {results['ratio_postgres4_vs_sqlite1']}x as fast as SQLite with one "
          f"({N} one-step runs).")


if __name__ == "__main__":
    main()
