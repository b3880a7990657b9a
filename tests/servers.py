"""Real Redis and PostgreSQL servers for tests, started from PATH on free ports in temp folders."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RuntimeError(f"{name} not found: install PostgreSQL (apt-get install -y postgresql)")
    return candidates[-1]


def _run_as() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: pick an unprivileged account when we are root (None: we
    are not, run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and no 'postgres' or 'nobody' account to run PostgreSQL as")


class PostgresServer:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl) on 127.0.0.1:<free port>."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cc-pg-"))
        self.port = free_port()
        self.user = "cc"
        self._account = _run_as()

    def _run(self, *args: str) -> None:
        if self._account is None:
            subprocess.run(args, check=True, capture_output=True, cwd=self.dir)
        else:
            account = self._account
            subprocess.run(
                args, check=True, capture_output=True, cwd=self.dir, user=account.pw_uid, group=account.pw_gid
            )

    @property
    def data(self) -> Path:
        return self.dir / "data"

    def start(self) -> None:
        """Create the cluster and start it."""
        if self._account is not None:
            os.chown(self.dir, self._account.pw_uid, self._account.pw_gid)
        self._run(
            _pg_bin("initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--locale=C",
        )
        self.start_server()

    def _options(self) -> str:
        return (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )

    def start_server(self) -> None:
        """Start the (created) cluster on its port and wait until it accepts connections."""
        self._pg_ctl("-o", self._options(), "-l", str(self.dir / "log"), "-w", "-t", "60", "start")

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the server, keeping its data: `fast` ends every session cleanly, `immediate` is a crash
        (recovery runs at the next start)."""
        self._pg_ctl("-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        """`pg_ctl restart`: every connection is dropped, the server comes back on the same port."""
        self._pg_ctl(
            "-o", self._options(), "-l", str(self.dir / "log"), "-m", mode, "-w", "-t", "60", "restart"
        )

    def running(self) -> bool:
        try:
            self._pg_ctl("status")
        except subprocess.CalledProcessError:
            return False
        return True

    def _pg_ctl(self, *args: str) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), *args)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """Stop the server and remove the cluster."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port}")
