#!/usr/bin/env python3
"""`runbook test` benchmark (issue 18): the shipped runbooks' own tests (runbooks/*_test.lua,
every failure path, with fakes and the virtual clock), plainly and with `--crash` (every run
stopped dead at each journal write and resumed), against the baseline measured in the same
script: the staging tests of the same runbooks against real servers (PostgreSQL, sshd, HAProxy,
nginx, Prometheus, HTTP fixtures: `cargo test --release --test integration` of runbooks::,
pg_ops:: and deploy::), which cover the happy paths and a few failures in far more time.

    python3 benches/runbook_tests.py           # 3 rounds of each, medians
    python3 benches/runbook_tests.py --quick   # 1 round

Needs the servers `scripts/test` installs for the staging tests. Results go to stdout
(Markdown) and benches/out/runbook_tests.json.
"""
import json
import os
import statistics
import subprocess
import sys
import time

from common import BIN, OUT, ROOT, TARGET, build

QUICK = "--quick" in sys.argv
ROUNDS = 1 if QUICK else 3
STAGING = ["runbooks::", "pg_ops::", "deploy::"]


def timed(cmd, **kw):
    t = time.monotonic()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kw)
    took = time.monotonic() - t
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return took, r


def suite(crash):
    args = [BIN, "test", "runbooks", "--output", "json"] + (["--crash"] if crash else [])
    took, r = timed(args)
    report = json.loads(r.stdout)
    return took, report


def staging():
    env = dict(os.environ, CARGO_TARGET_DIR=TARGET)
    cmd = ["cargo", "test", "--release", "--quiet", "--test", "integration", "--"] + STAGING
    took, r = timed(cmd, env=env)
    passed = sum(int(line.split("test result: ok. ")[1].split(" passed")[0])
                 for line in r.stdout.splitlines() if "test result: ok." in line)
    return took, passed


def main():
    build()
    env = dict(os.environ, CARGO_TARGET_DIR=TARGET)
    subprocess.run(["cargo", "test", "--release", "--quiet", "--test", "integration", "--no-run"], cwd=ROOT,
                   check=True, env=env, capture_output=True)
    plain, crash, real = [], [], []
    for _ in range(ROUNDS):
        t, plain_report = suite(False)
        plain.append(t)
        t, crash_report = suite(True)
        crash.append(t)
        t, staging_tests = staging()
        real.append(t)
    p, c, s = statistics.median(plain), statistics.median(crash), statistics.median(real)
    result = {
        "tests": plain_report["passed"], "crash_passes": crash_report["crash_passes"],
        "plain_s": round(p, 2), "crash_s": round(c, 2), "staging_s": round(s, 2), "staging_tests": staging_tests,
        "plain_ratio": round(p / s, 3), "crash_ratio": round(c / s, 3), "rounds": ROUNDS,
    }
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "runbook_tests.json"), "w") as f:
        json.dump(result, f, indent=2)
    print("| suite | tests | time | vs staging |")
    print("|---|---|---|---|")
    print(f"| staging: real servers (`cargo test --release` {' '.join(STAGING)}) | {staging_tests} | {s:.1f} s | 1.00x |")
    print(f"| `runbook test runbooks/` | {result['tests']} | {p:.1f} s | {p / s:.2f}x |")
    print(f"| `runbook test runbooks/ --crash` ({result['crash_passes']} crash passes) | {result['tests']} | {c:.1f} s "
          f"| {c / s:.2f}x |")


if __name__ == "__main__":
    main()
