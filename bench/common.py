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
    from callcenter.runner import DialerRunner

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
