#!/usr/bin/env python3
"""http.load benchmark (issue 17): the highest rate `http.load` sustains against a local nginx on
this 2-core machine, side by side in the same script with wrk (Debian's), the well-known load
generator: requests per second (target: at least 0.8x of wrk's), p99 latency (target: within 10%)
and the runbook process's peak RSS.

    python3 benches/load.py

Needs Debian's nginx and wrk (`apt-get install --no-install-recommends nginx wrk`); starts its
own nginx (one worker, a 13-byte file, keep-alive) on a free loopback port in a temporary
directory and stops it. Three alternating runs of each, 64 connections for 10 s; medians.
Results go to stdout (Markdown) and benches/out/load.json.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from common import BIN, OUT, build, free_port

CONNECTIONS = 64
SECONDS = 10


def start_nginx(root):
    port = free_port()
    os.makedirs(os.path.join(root, "www"))
    with open(os.path.join(root, "www", "ok"), "w") as f:
        f.write("ok from nginx")
    # nginx's worker runs as nobody when started as root: it must be able to read the file.
    os.chmod(root, 0o755)
    os.chmod(os.path.join(root, "www"), 0o755)
    os.chmod(os.path.join(root, "www", "ok"), 0o644)
    conf = os.path.join(root, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp; fastcgi_temp_path {root}/tmp;
  uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp;
  server {{ listen 127.0.0.1:{port}; root {root}/www; }}
}}
""")
    proc = subprocess.Popen(["/usr/sbin/nginx", "-c", conf, "-p", root], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.time() > deadline:
                raise RuntimeError("nginx did not start")
            time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}/ok"


def ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v


def run_wrk(url):
    out = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p99, int(errors.group(1)) if errors else 0


def run_runbook(work, url):
    path = os.path.join(work, "load.lua")
    with open(path, "w") as f:
        f.write('runbook { name = "loadbench" }\n'
                f'step("load", function() return http.load{{ url = "{url}", vus = {CONNECTIONS}, duration = "{SECONDS}s" }} end)\n')
    env = dict(os.environ, RUNBOOK_NO_PROGRESS="1")
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([BIN, "run", "load.lua"], cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise RuntimeError(err.read().decode())
    show = json.loads(subprocess.run([BIN, "show", "last", "--output", "json"], cwd=work,
                                     capture_output=True, text=True, check=True).stdout)
    r = show["steps"][0]["result"]
    return r["rps"], r["latency"]["p99"] * 1000, r["errors"], usage.ru_maxrss / 1024


def main():
    for tool in ("/usr/sbin/nginx", shutil.which("wrk")):
        if not tool or not os.path.exists(tool):
            sys.exit("needs nginx and wrk: apt-get install --no-install-recommends nginx wrk")
    build()
    root = tempfile.mkdtemp(prefix="runbook-bench-nginx-")
    work = tempfile.mkdtemp(prefix="runbook-bench-load-")
    nginx, url = start_nginx(root)
    try:
        wrk, ours = [], []
        for _ in range(3):
            wrk.append(run_wrk(url))
            ours.append(run_runbook(work, url))
    finally:
        nginx.terminate()
        nginx.wait()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    med = lambda xs: sorted(xs)[len(xs) // 2]
    w_rps, w_p99 = med([w[0] for w in wrk]), med([w[1] for w in wrk])
    o_rps, o_p99 = med([o[0] for o in ours]), med([o[1] for o in ours])
    rss = max(o[3] for o in ours)
    errors = sum(o[2] for o in ours) + sum(w[2] for w in wrk)
    if errors:
        sys.exit(f"{errors} requests failed: the figures would measure errors, not load (see {root}/error.log)")
    result = {"wrk_rps": w_rps, "wrk_p99_ms": w_p99, "load_rps": o_rps, "load_p99_ms": o_p99,
              "rps_ratio": o_rps / w_rps, "p99_ratio": o_p99 / w_p99, "load_peak_rss_mb": rss, "errors": errors,
              "runs_wrk": wrk, "runs_load": ours}
    with open(os.path.join(OUT, "load.json"), "w") as f:
        json.dump(result, f, indent=2)
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| wrk, {CONNECTIONS} connections, {SECONDS} s | {w_rps:,.0f} req/s, p99 {w_p99:.2f} ms | |")
    print(f"| `http.load`, {CONNECTIONS} virtual users, {SECONDS} s | {o_rps:,.0f} req/s, p99 {o_p99:.2f} ms | |")
    print(f"| requests/s, http.load / wrk | {o_rps / w_rps:.2f}x | >= 0.8x |")
    print(f"| p99, http.load / wrk | {o_p99 / w_p99:.2f}x | within 10% |")
    print(f"| peak RSS of the runbook process | {rss:.1f} MB | |")
    print(f"| failed requests (both tools) | {errors} | 0 |")


if __name__ == "__main__":
    main()
