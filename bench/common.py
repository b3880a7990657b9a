"""Shared helpers for the benchmarks: machine description and the closing JSON line."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import platform
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def emit_json(figures: dict[str, Any]) -> None:
    """The last line of every benchmark's output."""
    print(json.dumps(figures, separators=(",", ":")))


def _dialer_runner() -> Any:
    from callcenter.engine.runner import DialerRunner

    return DialerRunner


class LogTally(logging.Handler):
    """Counts what the dialer logs at WARNING and above (instead of printing each line): calls racing
    the replay, e.g. an agent connect for a call whose hang-up the driver has already read."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.msg if isinstance(record.msg, str) else repr(record.msg)] += 1


class TimedRunner(_dialer_runner()):  # type: ignore[misc]
    """The real runner. `send` runs at the end of each batch, after its transaction has committed and
    its bus messages have gone out; it also notes when the core follows no call any more."""

    all_ended: asyncio.Future[float] | None = None

    async def send(self, commands: Any) -> None:
        await super().send(commands)
        done = self.all_ended
        if done is not None and not done.done() and not self.core.calls and not self.events:
            done.set_result(time.perf_counter())


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process so far (this one by default), from /proc (Linux)."""
    if pid is None:
        return time.process_time()
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the ingest benchmarks' shared parts (ami_ingest.py, esl_ingest.py) -------------------------------


class LoopbackReplayServer:
    """A one-client loopback server in its own threads, off the measured loop: it answers what the
    client sends (`reply`, one framed message at a time) and, on `play`, writes a prepared byte stream
    as fast as the client reads it: one piece, or slices between which replies can go. Subclasses say
    how messages end (`separator`), what a new connection gets (`greet`) and how to answer (`reply`)."""

    separator = b"\n\n"

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._conn: Any = None
        self._lock = threading.Lock()
        self._stream: bytes | list[bytes] = b""
        self._go = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def play(self, stream: bytes | list[bytes]) -> None:
        self._stream = stream
        self._go.set()

    def greet(self, conn: Any) -> None:
        """A new connection is in (`self._conn`): send what the server says first."""

    def reply(self, message: bytes) -> str:
        """The answer to one message from the client ("" for none)."""
        return ""

    def streamed(self, conn: Any) -> None:
        """The whole stream has been written."""

    def _send(self, data: bytes) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.sendall(data)

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            conn, _ = self.sock.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conn = conn  # one client per server: `play` may come before this line runs
            self.greet(conn)
            threading.Thread(target=self._stream_when_asked, args=(conn,), daemon=True).start()
            self._serve(conn)

    def _stream_when_asked(self, conn: Any) -> None:
        self._go.wait()
        if self._conn is conn:
            for piece in [self._stream] if isinstance(self._stream, bytes) else self._stream:
                self._send(piece)
            self.streamed(conn)

    def _serve(self, conn: Any) -> None:
        buf = b""
        while True:
            try:
                data = conn.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            buf += data
            *messages, buf = buf.split(self.separator)
            replies = "".join(self.reply(m) for m in messages)
            if replies:
                self._send(replies.encode())


def lead_number(r: int, recorded_number: str) -> str:
    """The number of round `r`'s copy of a recorded call: the recorded number, then the round."""
    return f"{recorded_number}{r:05d}"


def seed_ingest_task(path: Any, numbers: list[str], *, agents: int, **campaign: Any) -> Any:
    """A fresh database with a running ratio task: one lead per number, and enough agent ratio and
    concurrency for the runner to place them all at once, never twice."""
    from callcenter.db import make_engine, upgrade
    from callcenter.engine.simulation import seed_world

    url = f"sqlite:///{path}"
    upgrade(url)
    engine = make_engine(url)
    campaign = {
        "pacing_mode": "ratio",
        "agent_ratio": len(numbers) / agents + 1,
        "max_concurrency": len(numbers),
        "caller_id": "4000",
        "max_attempts": 1,  # no call is placed again during the run
        **campaign,
    }
    seed_world(engine, agents=agents, leads=len(numbers), now=time.time(), numbers=numbers, campaign=campaign)
    return engine


def publish_calls(client: Any) -> int:
    """PUBLISH commands the Redis server has run so far."""
    return int(client.info("commandstats").get("cmdstat_publish", {}).get("calls", 0))
