"""A throwaway Postgres server for tests and benchmarks: Debian's binaries, a temp dir, loopback only.

`initdb` makes a cluster in a temporary directory; `pg_ctl` starts it listening on 127.0.0.1 at a
free port with its socket in that directory; `stop()` stops the postmaster by the PID it recorded
and removes the directory. Postgres refuses to run as root, so as root the cluster belongs to the
`postgres` user (created by Debian's package) and the commands run through `runuser`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.serving import free_port


def _bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    which = shutil.which("initdb")
    if which:
        return Path(which).resolve().parent
    raise RuntimeError("Postgres server binaries not found (initdb): install Debian's `postgresql` "
                       "(deploy/setup.sh does)")


class LocalPostgres:
    def __init__(self, *, durable: bool = False, port: int | None = None) -> None:
        # Tests turn fsync off (speed, data is thrown away); benchmarks keep Postgres's defaults.
        self.durable = durable
        self.bindir = _bindir()
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="opsagent-pg-"))
        self.data = self.dir / "data"
        self.user = "postgres"
        self.pid: int | None = None

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)

    def start(self) -> LocalPostgres:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        else:
            self.user = pwd.getpwuid(os.geteuid()).pw_name
        r = self._run("initdb", "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8", "--no-sync")
        if r.returncode:
            raise RuntimeError(f"initdb -D {self.data} failed: {r.stderr.strip()}")
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=200 -c shared_buffers=64MB"
        if not self.durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        r = self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "server.log"), "-w",
                      "-t", "60", "start")
        if r.returncode:
            log = (self.dir / "server.log").read_text() if (self.dir / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start on 127.0.0.1:{self.port} failed: {r.stderr.strip()} {log[-2000:]}")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        return self

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"

    def create_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, 15)  # SIGTERM: Postgres's "smart" shutdown
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _alive(self.pid):
                time.sleep(0.05)
            if _alive(self.pid):
                os.kill(self.pid, 3)  # SIGQUIT: immediate shutdown
            self.pid = None
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not ours to reap (pg_ctl daemonized it); /proc says whether it still runs.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False
