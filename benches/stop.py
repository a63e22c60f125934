#!/usr/bin/env python3
"""How fast a run stops, whatever its Lua code does (issue 15): the time from a stop request
(SIGTERM, or a step's timeout expiring) to the process gone with the journal saying why.

    python3 benches/stop.py            # builds the release binary first
    python3 benches/stop.py --quick    # fewer repetitions

The baseline, run in the same script, is a well-behaved step waiting in a primitive (`sleep`),
which the engine stops at once. The others cannot be stopped by the engine's instruction hook
alone: a loop that catches every error with pcall, one long call in C (a pathological pattern
match), and, after a recorded run, a finalizer that never ends (the watchdog's 2 s grace is
expected there). Medians; results go to stdout (Markdown) and benches/out/stop.json.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BIN, OUT, build  # noqa: E402

QUICK = "--quick" in sys.argv
N = 3 if QUICK else 7

BODIES = {
    "sleep in a primitive (baseline)": 'sleep("60s")',
    "pure Lua loop": "while true do end",
    "loop inside pcall, in a loop": "while true do pcall(function() while true do end end) end",
    "one long call in C": 'local _ = string.rep("x", 1e7):find(".-.-.-.-.-.-.-y")',
}


def runbook(body, timeout):
    opts = f'{{ timeout = "{timeout}" }}, ' if timeout else ""
    return f'runbook {{ name = "stop" }}\nstep("s", {opts}function()\n  exec{{"touch", "started"}}\n  {body}\nend)\n'


def journal_says_why(work):
    out = subprocess.run([BIN, "show", "last", "--output", "json"], cwd=work, capture_output=True, text=True, check=True)
    step = json.loads(out.stdout)["steps"][0]
    return bool(step.get("error"))


def by_signal(body):
    """Seconds from SIGTERM to the process gone."""
    with tempfile.TemporaryDirectory() as work:
        with open(os.path.join(work, "rb.lua"), "w") as f:
            f.write(runbook(body, None))
        proc = subprocess.Popen([BIN, "run", "rb.lua"], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not os.path.exists(os.path.join(work, "started")):
            time.sleep(0.005)
        time.sleep(0.2)
        start = time.perf_counter()
        proc.terminate()
        proc.wait(timeout=60)
        elapsed = time.perf_counter() - start
        assert journal_says_why(work), "the journal says why"
        return elapsed


def by_timeout(body):
    """Seconds from the step's deadline (1 s after it started) to the process gone."""
    with tempfile.TemporaryDirectory() as work:
        with open(os.path.join(work, "rb.lua"), "w") as f:
            f.write(runbook(body, "1s"))
        start = time.perf_counter()
        proc = subprocess.Popen([BIN, "run", "rb.lua"], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not os.path.exists(os.path.join(work, "started")):
            time.sleep(0.001)
        started = time.perf_counter()
        proc.wait(timeout=60)
        elapsed = time.perf_counter() - started - 1.0
        assert journal_says_why(work), "the journal says why"
        return max(elapsed, 0.0)


def finalizer():
    """Seconds from the run recorded to the process gone, with a finalizer that loops."""
    with tempfile.TemporaryDirectory() as work:
        with open(os.path.join(work, "rb.lua"), "w") as f:
            f.write('runbook { name = "gc" }\nstep("s", function() setmetatable({}, { __gc = function() while true do end end }) end)\n')
        start = time.perf_counter()
        subprocess.run([BIN, "run", "rb.lua"], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        return time.perf_counter() - start


def main():
    build()
    rows = []
    base = {}
    for name, body in BODIES.items():
        sig = statistics.median(by_signal(body) for _ in range(N))
        tmo = statistics.median(by_timeout(body) for _ in range(N))
        if not base:
            base = {"signal": sig, "timeout": tmo}
        rows.append({"code": name, "sigterm_s": sig, "timeout_s": tmo})
    gc = statistics.median(finalizer() for _ in range(N))
    print("| the step's code | SIGTERM to exit | timeout to exit |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['code']} | {r['sigterm_s'] * 1000:.0f} ms | {r['timeout_s'] * 1000:.0f} ms |")
    print(f"| a finalizer that loops, after the run | whole run: {gc * 1000:.0f} ms | |")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "stop.json"), "w") as f:
        json.dump({"rows": rows, "finalizer_run_s": gc, "baseline": base}, f, indent=2)


if __name__ == "__main__":
    main()
