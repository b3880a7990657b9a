"""Baselines the benchmarks measure the engine against. Not offered to users, so not in the engine.

`AdaptAveragePacer` is built from the published description of VICIdial's ADAPT_AVERAGE mode;
`bench/pacing.py` runs it as the `adapt_baseline` mode beside the engine's own pacers.
"""

from __future__ import annotations

import math
from collections import deque

from callcenter.engine.pacing import Pacer, PacingView, cap


class AdaptAveragePacer(Pacer):
    """Benchmark baseline from the published description of VICIdial's ADAPT_AVERAGE: the dial level
    (lines per working agent) is re-computed every 15 s from 15-sample moving averages of ready agents
    and waiting calls, clamped to [1, 3], and halved when the day's drop rate passes the limit."""

    def __init__(self, *, drop_limit: float = 0.03, interval_s: float = 15.0, samples: int = 15) -> None:
        self.level = 1.0
        self.drop_limit = drop_limit
        self.interval_s = interval_s
        self.ready_avg: deque[float] = deque(maxlen=samples)
        self.waiting_avg: deque[float] = deque(maxlen=samples)
        self.live = 0
        self.dropped = 0
        self._next_sample = -math.inf
        self._next_adjust = -math.inf

    def observe_answer(self, *, abandoned: bool, now: float) -> None:
        self.live += 1
        self.dropped += int(abandoned)

    def place(self, view: PacingView) -> int:
        if view.now >= self._next_sample:
            self._next_sample = view.now + 1.0  # one sample a second; the averages span 15 of them
            self.ready_avg.append(view.ready)
            self.waiting_avg.append(float(view.waiting))
        if view.now >= self._next_adjust and self.ready_avg:
            self._next_adjust = view.now + self.interval_s
            working = max(1.0, view.working)
            ready = sum(self.ready_avg) / len(self.ready_avg)
            waiting = sum(self.waiting_avg) / len(self.waiting_avg)
            # Idle agents push the level up, calls waiting for agents push it down, in proportion
            # to the share of agents concerned.
            self.level *= 1.0 + (ready - waiting) / working
            self.level = min(3.0, max(1.0, self.level))
            if self.live and self.dropped / self.live > self.drop_limit:
                self.level = max(1.0, self.level / 2)
        goal = math.floor(self.level * view.working + 1e-9)
        n = cap(view, goal - view.active)
        self.lines_per_agent = self.level
        return n
