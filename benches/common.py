"""Shared pieces of the benchmark scripts: the release build, a throwaway PostgreSQL cluster."""
import os
import socket
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/runbook-target")
BIN = os.path.join(TARGET, "release", "runbook")
OUT = os.path.join(ROOT, "benches", "out")


def build():
    os.makedirs(OUT, exist_ok=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True,
                   env=dict(os.environ, CARGO_TARGET_DIR=TARGET))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pg_bin():
    versions = sorted(int(v) for v in os.listdir("/usr/lib/postgresql") if v.isdigit())
    return f"/usr/lib/postgresql/{versions[-1]}/bin"


def as_pg(cmd):
    return ["runuser", "-u", "postgres", "--"] + cmd if os.geteuid() == 0 else cmd


class Postgres:
    """A PostgreSQL cluster in a temporary directory on a free loopback port (as the postgres
    user when run as root); `with Postgres() as pg:` stops and removes it."""

    def __init__(self, password="bench-pw", user="bench"):
        self.password, self.user = password, user

    def __enter__(self):
        self.work = tempfile.mkdtemp(prefix="runbook-bench-pg-")
        os.chmod(self.work, 0o755)
        self.data = os.path.join(self.work, "data")
        self.bindir = pg_bin()
        self.port = free_port()
        pwfile = os.path.join(self.work, "pw")
        with open(pwfile, "w") as f:
            f.write(self.password)
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "postgres:postgres", self.work], check=True)
        subprocess.run(as_pg([f"{self.bindir}/initdb", "-D", self.data, "-U", self.user, f"--pwfile={pwfile}",
                              "-A", "scram-sha-256"]), check=True, capture_output=True)
        subprocess.run(as_pg([f"{self.bindir}/pg_ctl", "-D", self.data, "-o",
                              f"-p {self.port} -k {self.work} -c listen_addresses=127.0.0.1 -c fsync=off",
                              "-l", os.path.join(self.work, "log"), "-w", "start"]), check=True, capture_output=True)
        self.env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(self.port), PGUSER=self.user,
                        PGPASSWORD=self.password)
        return self

    def url(self, db):
        return f"postgres://{self.user}:{self.password}@127.0.0.1:{self.port}/{db}"

    def createdb(self, db):
        subprocess.run([f"{self.bindir}/createdb", db], env=self.env, check=True)

    def __exit__(self, *exc):
        subprocess.run(as_pg([f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"]), capture_output=True)
        subprocess.run(["rm", "-rf", self.work])
