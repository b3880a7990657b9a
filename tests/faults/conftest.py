"""Fault tests: real servers and real `callcenter` processes that a test stops, kills and restarts.

Each fault test should take seconds: use small lists and the short timeouts the commands and jobs take
as options (see the tests here), never a sleep longer than the fault needs.

Fixtures
--------
``redis_server`` -> ``RedisServer`` (function scope): a private redis-server on its own port, with an
    append-only file in its data folder, so what was written survives ``stop()``/``kill()`` and
    ``start()`` (same port, same data)::

        def test_x(redis_server):
            client = redis_server.client()       # decode_responses=True, closed at teardown
            redis_server.stop()                  # SHUTDOWN (clean); .kill() is SIGKILL
            ...                                  # the code under test sees Redis down
            redis_server.start()                 # back on redis_server.port, data kept
            with redis_server.down():            # or: down for the block, up again after it
                ...

    ``redis_server.url`` is the URL to hand to processes (``CALLCENTER_REDIS_URL``).

``pg`` -> ``Postgres`` (function scope): the session's PostgreSQL cluster (``pg_server`` in
    tests/conftest.py) with a fresh migrated database (``pg.url``) and the controls::

        pg.restart()              # pg_ctl restart -m fast: every connection dropped, same port
        pg.stop(); pg.start()     # down for as long as the test needs (mode="immediate": a crash)
        with pg.down(): ...

    Teardown starts the server again if the test left it down, so later tests find it running.

``procs`` -> ``Processes`` (function scope): starts real ``callcenter`` commands in their own session
    (``procs.spawn("worker", env=procs.env(...))``), logs each to a file (``procs.log(p)``), and kills
    every process group it started, and every descendant it saw, at teardown. Helpers:
    ``procs.env(**vars)`` (test settings: dev mode, the test secret, a data folder),
    ``procs.descendants(pid)``, ``procs.alive(pid)``, ``procs.named(pid, "app.cli dialer")``.

Functions (import them from tests.faults.conftest): ``wait_until(predicate, timeout, what)``,
``descendants(pid)``, ``alive(pid)``, ``cmdline(pid)``.

The SQLite and PostgreSQL database fixtures of tests/conftest.py (``sqlite_url``, ``pg_url``,
``db_url``) work here as everywhere.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import redis

from callcenter.redis_server import EmbeddedRedis
from tests.conftest import TEST_SECRET, _pg_url
from tests.servers import PostgresServer

# --- waiting ---------------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Return as soon as `predicate()` is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout}s")
        time.sleep(0.02)


# --- Redis -----------------------------------------------------------------------------------------


class RedisServer:
    """A redis-server a test may stop, kill and start again on the same port with the same data."""

    def __init__(self, data_dir: Path) -> None:
        # appendfsync always: a write the client saw acknowledged survives even kill().
        self._server = EmbeddedRedis(
            data_dir, persist=True, extra_args=("--appendonly", "yes", "--appendfsync", "always")
        )
        self._clients: list[redis.Redis] = []

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def pid(self) -> int | None:
        return self._server.proc.pid if self._server.proc else None

    def running(self) -> bool:
        return self._server.proc is not None and self._server.proc.poll() is None

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        """A clean shutdown (SIGTERM: redis writes its files and exits)."""
        self._server.stop()

    def kill(self) -> None:
        """SIGKILL: the append-only file keeps every acknowledged write."""
        self._server.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    @contextlib.contextmanager
    def down(self, *, kill: bool = False) -> Iterator[None]:
        """Redis is down inside the block and up again (same port, same data) after it."""
        self.kill() if kill else self.stop()
        try:
            yield
        finally:
            self.start()

    def client(self) -> redis.Redis:
        c = redis.Redis.from_url(self.url, decode_responses=True)
        self._clients.append(c)
        return c

    def close(self) -> None:
        for c in self._clients:
            c.close()
        self._server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis server the test may stop, kill and restart (same port, same data)."""
    server = RedisServer(tmp_path / "redis-server")
    server.start()
    yield server
    server.close()


# --- PostgreSQL ------------------------------------------------------------------------------------


class Postgres:
    """The session's PostgreSQL cluster seen by one test: its fresh database and the controls."""

    def __init__(self, server: PostgresServer, url: str) -> None:
        self.server = server
        self.url = url  # the test's database (migrated and seeded)

    @property
    def port(self) -> int:
        return self.server.port

    def restart(self, mode: str = "fast") -> None:
        """`pg_ctl restart -m fast`: every connection dropped, back on the same port."""
        self.server.restart(mode)

    def stop(self, mode: str = "fast") -> None:
        """Down until `start()`; mode="immediate" is a crash (recovery at the next start)."""
        self.server.stop_server(mode)

    def start(self) -> None:
        self.server.start_server()

    def running(self) -> bool:
        return self.server.running()

    @contextlib.contextmanager
    def down(self, mode: str = "fast") -> Iterator[None]:
        self.stop(mode)
        try:
            yield
        finally:
            self.start()


@pytest.fixture
def pg(pg_server: PostgresServer, pg_template: str) -> Iterator[Postgres]:
    """A fresh PostgreSQL database on the session's cluster, and the cluster's stop/start/restart."""
    handle = Postgres(pg_server, _pg_url(pg_server, pg_template))
    yield handle
    if not pg_server.running():
        pg_server.start_server()


# --- processes -------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) from /proc, or None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[1])


def descendants(pid: int) -> list[int]:
    """Every living process below `pid` (children, grandchildren ...), found through /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat and stat[0] != "Z":
                parents.setdefault(stat[1], []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


class Processes:
    """Real `callcenter` processes of one test; every one is killed, with its descendants, at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}
        self._files: list[IO[bytes]] = []
        self._seen: set[int] = set()

    def env(self, **variables: str) -> dict[str, str]:
        """The environment for a `callcenter` process: this environment without any CALLCENTER_*
        variable, then dev mode, the test secret, a data folder in the test's tmp_path, log level
        WARNING, and `variables` (e.g. CALLCENTER_DATABASE_URL=...)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCENTER_")}
        env.update(
            {
                "CALLCENTER_MODE": "dev",
                "CALLCENTER_SECRET_KEY": TEST_SECRET,
                "CALLCENTER_DATA_DIR": str(self.tmp_path / "data"),
                "CALLCENTER_LOG_LEVEL": "WARNING",
                "CALLCENTER_GATEWAY": "simulated",
            }
        )
        env.update(variables)
        return env

    def spawn(self, *args: str, env: dict[str, str] | None = None, name: str = "") -> subprocess.Popen[bytes]:
        """Start `callcenter ARGS...` in a new session, its output in a log file (`log(proc)`)."""
        log_path = self.tmp_path / f"{name or args[0]}-{len(self.started)}.log"
        out = open(log_path, "wb")  # noqa: SIM115 - closed at teardown
        self._files.append(out)
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            env=env if env is not None else self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started.append(proc)
        self._logs[proc.pid] = log_path
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return self._logs[proc.pid].read_text(errors="replace")

    def descendants(self, pid: int) -> list[int]:
        """Every living process below `pid` (remembered, to be killed at teardown)."""
        found = descendants(pid)
        self._seen.update(found)
        return found

    alive = staticmethod(alive)
    cmdline = staticmethod(cmdline)

    def named(self, pid: int, word: str) -> list[int]:
        """Descendants of `pid` whose command line holds `word` ("app.cli dialer", "redis-server")."""
        return [p for p in self.descendants(pid) if word in self.cmdline(p)]

    def close(self) -> None:
        for proc in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for pid in self._seen:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        for f in self._files:
            f.close()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Start real `callcenter` processes; all of them (and their children) are killed at teardown."""
    p = Processes(tmp_path)
    yield p
    p.close()
