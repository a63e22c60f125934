#!/usr/bin/env python3
"""Backup benchmark (issue 5): `backup.create` of a pgbench database to local storage with zstd,
against `pg_dump -Fc | zstd -3 > file` measured in the same script, and `backup.verify` against
`pg_restore` alone. Peak RSS of the runbook process at scale 10 and at scale 50 (it must stay
flat in the database's size).

    python3 benches/backup.py            # scales 10 and 50 (about 150 MB and 750 MB)
    python3 benches/backup.py --quick    # scales 2 and 10

Starts its own PostgreSQL cluster (Debian's postgresql package; as the postgres user when run
as root) in a temporary directory. Needs pgbench (postgresql) and the zstd command. Results go
to stdout (Markdown) and benches/out/backup.json.
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
SCALES = [2, 10] if QUICK else [10, 50]
PW = "bench-pw"


def pg_bin():
    versions = sorted(int(v) for v in os.listdir("/usr/lib/postgresql") if v.isdigit())
    return f"/usr/lib/postgresql/{versions[-1]}/bin"


def as_pg(cmd):
    return ["runuser", "-u", "postgres", "--"] + cmd if os.geteuid() == 0 else cmd


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def run(cmd, cwd=None, env=None, shell=False):
    """Runs cmd, returns (seconds, peak RSS in KiB of the process and its children)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd if shell else ' '.join(cmd)} failed: {err[-2000:]}")
    return elapsed, usage.ru_maxrss


def main():
    os.makedirs(OUT, exist_ok=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True, env=dict(os.environ, CARGO_TARGET_DIR=TARGET))
    work = tempfile.mkdtemp(prefix="runbook-backup-bench-")
    os.chmod(work, 0o755)
    data = os.path.join(work, "data")
    bindir = pg_bin()
    port = free_port()
    pwfile = os.path.join(work, "pw")
    with open(pwfile, "w") as f:
        f.write(PW)
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:postgres", work], check=True)
    subprocess.run(as_pg([f"{bindir}/initdb", "-D", data, "-U", "bench", f"--pwfile={pwfile}", "-A", "scram-sha-256"]),
                   check=True, capture_output=True)
    subprocess.run(as_pg([f"{bindir}/pg_ctl", "-D", data, "-o", f"-p {port} -k {work} -c listen_addresses=127.0.0.1 -c fsync=off",
                          "-l", os.path.join(work, "log"), "-w", "start"]), check=True, capture_output=True)
    env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(port), PGUSER="bench", PGPASSWORD=PW, RUNBOOK_NO_PROGRESS="1")
    results = {}
    try:
        for scale in SCALES:
            db = f"bench{scale}"
            subprocess.run(["createdb", db], env=env, check=True)
            subprocess.run([f"{bindir}/pgbench", "-i", "-q", "-s", str(scale), db], env=env, check=True, capture_output=True)
            size = subprocess.run(["psql", "-Atc", f"select pg_database_size('{db}')", db], env=env, check=True,
                                  capture_output=True, text=True).stdout.strip()
            out = os.path.join(work, f"out{scale}")
            os.makedirs(out)
            dump = f"{bindir}/pg_dump"
            reps = 5
            url = f"postgres://bench:{PW}@127.0.0.1:{port}/{db}"
            rb = os.path.join(work, f"backup{scale}.lua")
            with open(rb, "w") as f:
                f.write('runbook { name = "bench-backup" }\n'
                        f'local store = storage.open("file://{out}/store")\n'
                        'step("backup", function() return backup.create{ source = secret("BENCH_URL"), to = store } end)\n')
            rb_env = dict(env, BENCH_URL=url)
            # Interleaved, so that drift (page cache, CPU clocks, the other core) hits all three alike.
            base, base_z0, runs = [], [], []
            for i in range(reps):
                base.append(run(f"{dump} -Fc -d {db} | zstd -3 -q > {out}/base.dump.zst", env=env, shell=True)[0])
                base_z0.append(run(f"{dump} -Fc -Z0 -d {db} | zstd -3 -q > {out}/base0.dump.zst", env=env, shell=True)[0])
                runs.append(run([BIN, "--state", os.path.join(work, f"state{scale}-{i}.db"), "run", rb], cwd=work, env=rb_env))
            t_rb = statistics.median(r[0] for r in runs)
            rss = max(r[1] for r in runs)
            first = sorted(f for f in os.listdir(f"{out}/store") if f.endswith(".manifest.json"))[0]
            with open(f"{out}/store/{first}") as f:
                manifest = json.load(f)
            # Verification: backup.verify (checksum, scratch restore, counts) against pg_restore alone.
            vb = os.path.join(work, f"verify{scale}.lua")
            with open(vb, "w") as f:
                f.write('runbook { name = "bench-verify" }\n'
                        f'local store = storage.open("file://{out}/store")\n'
                        'step("verify", function() return backup.verify(backup.latest(store), { server = secret("BENCH_URL") }) end)\n')
            t_verify, rss_verify = run([BIN, "--state", os.path.join(work, f"vstate{scale}.db"), "run", vb], cwd=work, env=rb_env)
            subprocess.run(["createdb", f"{db}_restore"], env=env, check=True)
            t_restore, _ = run(f"zstd -dc {out}/base0.dump.zst | {bindir}/pg_restore --no-owner -d {db}_restore", env=env, shell=True)
            results[scale] = {
                "database_bytes": int(size),
                "dump_bytes_raw": manifest["bytes_raw"],
                "stored_bytes": manifest["bytes_stored"],
                "pg_dump_Fc_zstd_s": statistics.median(base),
                "pg_dump_Fc_Z0_zstd_s": statistics.median(base_z0),
                "runbook_backup_s": t_rb,
                "throughput_ratio": statistics.median(base) / t_rb,
                "throughput_ratio_vs_Z0": statistics.median(base_z0) / t_rb,
                "peak_rss_mb": rss / 1024,
                "runbook_verify_s": t_verify,
                "verify_peak_rss_mb": rss_verify / 1024,
                "pg_restore_s": t_restore,
            }
    finally:
        subprocess.run(as_pg([f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"]), capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    with open(os.path.join(OUT, "backup.json"), "w") as f:
        json.dump(results, f, indent=2)
    print("| measure | " + " | ".join(f"scale {s}" for s in SCALES) + " | target |")
    print("|---|" + "---|" * len(SCALES) + "---|")
    row = lambda name, fmt, key, target="": print(f"| {name} | " + " | ".join(fmt(results[s][key]) for s in SCALES) + f" | {target} |")
    row("database size", lambda v: f"{v / 1e6:.0f} MB", "database_bytes")
    row("`pg_dump -Fc \\| zstd -3 > file`", lambda v: f"{v:.2f} s", "pg_dump_Fc_zstd_s")
    row("`pg_dump -Fc -Z0 \\| zstd -3 > file`", lambda v: f"{v:.2f} s", "pg_dump_Fc_Z0_zstd_s")
    row("`runbook run`: `backup.create` to local storage, zstd", lambda v: f"{v:.2f} s", "runbook_backup_s")
    row("throughput ratio runbook / `pg_dump -Fc \\| zstd -3`", lambda v: f"{v:.2f}", "throughput_ratio", ">= 0.95")
    row("throughput ratio runbook / `pg_dump -Fc -Z0 \\| zstd -3`", lambda v: f"{v:.2f}", "throughput_ratio_vs_Z0")
    row("peak RSS of the runbook process (backup)", lambda v: f"{v:.1f} MB", "peak_rss_mb", "<= 64 MB")
    row("`backup.verify` (checksum, scratch restore, row counts)", lambda v: f"{v:.2f} s", "runbook_verify_s")
    row("`zstd -dc \\| pg_restore` alone", lambda v: f"{v:.2f} s", "pg_restore_s")


if __name__ == "__main__":
    main()
