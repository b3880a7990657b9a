"""Time, injected. Real code asks a `Scheduler` for the time and for timers; the same code then runs
in real time on asyncio and at thousands of times real speed on `HeapScheduler` (benchmarks, tests)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (virtual or real)."""
        ...

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        """Run `fn` after `delay` seconds on this scheduler's thread."""
        ...


class LoopScheduler:
    """Real time on an asyncio loop: `now()` is wall-clock epoch seconds."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.clock = clock

    def now(self) -> float:
        return self.clock()

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        return self.loop.call_later(max(0.0, delay), fn)


class _HeapTimer:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class HeapScheduler:
    """Discrete-event time: callbacks run in time order and the clock jumps between them."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._heap: list[tuple[float, int, _HeapTimer, Callable[[], None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        timer = _HeapTimer()
        heapq.heappush(self._heap, (self._now + max(0.0, delay), next(self._seq), timer, fn))
        return timer

    def run_until(self, t: float) -> None:
        """Run every callback due up to `t`, then set the clock to `t`."""
        heap = self._heap
        while heap and heap[0][0] <= t:
            when, _, timer, fn = heapq.heappop(heap)
            if timer.cancelled:
                continue
            self._now = when
            fn()
        self._now = max(self._now, t)

    def next_time(self) -> float | None:
        """When the earliest live callback is due, or None."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pending(self) -> int:
        return sum(1 for item in self._heap if not item[2].cancelled)
