#!/usr/bin/env python3
"""Engine benchmark (issue 2): per-step overhead, cold start and peak RSS of `runbook run`,
with ansible-playbook's per-task overhead measured in the same script as the baseline.

    python3 benches/engine.py            # builds the release binary first
    python3 benches/engine.py --quick    # fewer repetitions

Per-step overhead = (time of a 1,000-step run - time of a 1-step run) / 999, medians of
repeated runs, with the durable journal (SQLite, WAL) of the default configuration.
Ansible's per-task overhead is computed the same way from 1-task and 101-task playbooks of
`debug` tasks on localhost (connection=local, no fact gathering), when ansible-core installs
from PyPI. Results go to stdout (Markdown) and benches/out/engine.json.
"""
import json
import os
import shutil
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


def run(cmd, cwd, env=None):
    """Runs cmd, returns (seconds, peak RSS in KiB); raises on failure."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err.read().decode()[-2000:]}")
    return elapsed, usage.ru_maxrss


def runbook_file(path, steps):
    with open(path, "w") as f:
        f.write('runbook { name = "bench" }\n')
        f.write(f'for i = 1, {steps} do step("step " .. i, function() return i end) end\n')


def median_run(cmd, cwd, times, env=None):
    results = [run(cmd, cwd, env) for _ in range(times)]
    return statistics.median(r[0] for r in results), max(r[1] for r in results), [r[0] for r in results]


def bench_runbook():
    work = tempfile.mkdtemp(prefix="runbook-bench-")
    env = dict(os.environ, RUNBOOK_NO_PROGRESS="1")
    runbook_file(os.path.join(work, "one.lua"), 1)
    runbook_file(os.path.join(work, "thousand.lua"), 1000)
    # First run on a machine: creates the journal and applies the migrations.
    first, _ = run([BIN, "run", "one.lua"], work, env)
    reps = 3 if QUICK else 7
    t1, rss1, _ = median_run([BIN, "run", "one.lua"], work, reps * 3, env)
    t1000, rss1000, all1000 = median_run([BIN, "run", "thousand.lua"], work, reps, env)
    floor, _, _ = median_run(["/bin/true"], work, reps * 3)
    shutil.rmtree(work)
    return {
        "journal_creation_ms": first * 1000,
        "cold_start_ms": t1 * 1000,
        "process_floor_ms": floor * 1000,
        "run_1000_steps_ms": t1000 * 1000,
        "run_1000_steps_all_ms": [round(x * 1000, 1) for x in all1000],
        "per_step_ms": (t1000 - t1) / 999 * 1000,
        "peak_rss_1_step_mb": rss1 / 1024,
        "peak_rss_1000_steps_mb": rss1000 / 1024,
    }


def ansible():
    venv = os.path.join(OUT, "ansible-venv")
    playbook_bin = os.path.join(venv, "bin", "ansible-playbook")
    if not os.path.exists(playbook_bin):
        try:
            subprocess.run([sys.executable, "-m", "venv", venv], check=True, capture_output=True)
            subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--quiet", "ansible-core"], check=True, capture_output=True, timeout=600)
        except Exception as e:  # noqa: BLE001 - report and go on without the baseline
            return {"error": f"ansible-core did not install: {e}"}
    version = subprocess.run([playbook_bin, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    work = tempfile.mkdtemp(prefix="ansible-bench-")

    def playbook(name, tasks):
        with open(os.path.join(work, name), "w") as f:
            f.write("- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n")
            for i in range(tasks):
                f.write(f"    - name: task {i}\n      ansible.builtin.debug:\n        msg: '{i}'\n")

    playbook("one.yml", 1)
    playbook("many.yml", 101)
    env = dict(os.environ, ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               ANSIBLE_RETRY_FILES_ENABLED="false", ANSIBLE_HOME=os.path.join(work, ".ansible"))
    cmd = [playbook_bin, "-i", "localhost,"]
    run(cmd + ["one.yml"], work, env)  # warm caches
    reps = 2 if QUICK else 3
    t1, _, _ = median_run(cmd + ["one.yml"], work, reps, env)
    tn, rss, _ = median_run(cmd + ["many.yml"], work, reps, env)
    shutil.rmtree(work)
    return {"version": version, "per_task_ms": (tn - t1) / 100 * 1000, "run_1_task_ms": t1 * 1000, "peak_rss_mb": rss / 1024}


def main():
    os.makedirs(OUT, exist_ok=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True, env=dict(os.environ, CARGO_TARGET_DIR=TARGET))
    r = bench_runbook()
    a = ansible()
    result = {"runbook": r, "ansible": a}
    if "per_task_ms" in a:
        result["ansible_per_task_over_runbook_per_step"] = a["per_task_ms"] / r["per_step_ms"]
    with open(os.path.join(OUT, "engine.json"), "w") as f:
        json.dump(result, f, indent=2)
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| per-step engine overhead, 1,000-step run, durable journal | {r['per_step_ms']:.3f} ms | <= 0.5 ms |")
    if "per_task_ms" in a:
        print(f"| ansible-playbook per-task overhead ({a['version']}) | {a['per_task_ms']:.1f} ms | |")
        print(f"| ratio ansible per task / runbook per step | {result['ansible_per_task_over_runbook_per_step']:.0f}x | >= 50x |")
    else:
        print(f"| ansible-playbook baseline | {a['error']} | |")
    print(f"| cold start, `runbook run` of a one-step runbook | {r['cold_start_ms']:.1f} ms | <= 15 ms |")
    print(f"| (process spawn floor, /bin/true) | {r['process_floor_ms']:.1f} ms | |")
    print(f"| first run on a machine (creates the journal) | {r['journal_creation_ms']:.1f} ms | |")
    print(f"| whole 1,000-step run | {r['run_1000_steps_ms']:.0f} ms | |")
    print(f"| peak RSS, 1-step run | {r['peak_rss_1_step_mb']:.1f} MB | <= 20 MB |")
    print(f"| peak RSS, 1,000-step run | {r['peak_rss_1000_steps_mb']:.1f} MB | <= 20 MB |")


if __name__ == "__main__":
    main()
