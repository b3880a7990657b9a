"""Which agent gets a waiting chat, where a visitor stands in the queue and how long they may wait.
Pure: plain data in, a decision out; `chat.assign` reads the rows (under locks) and applies it.

Rule: among the agents of the room's skill group who hold `multimedia_agent`, are available for chat
and are below their capacity, the least busy (fewest rooms held), then the longest idle (earliest
`idle_since`: the later of becoming available and their last new room), then the lowest id.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    agent_id: int
    load: int  # rooms held now (active, or transferred to them)
    capacity: int
    idle_since: float

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.load)


def rank(candidates: Iterable[Candidate]) -> list[Candidate]:
    """The agents who may take one more room, best first.

    >>> ranked = rank([Candidate(1, 2, 3, 0.0), Candidate(2, 1, 3, 5.0), Candidate(3, 1, 3, 2.0)])
    >>> [c.agent_id for c in ranked]
    [3, 2, 1]
    """
    free = [c for c in candidates if c.load < c.capacity]
    return sorted(free, key=lambda c: (c.load, c.idle_since, c.agent_id))


def pick(candidates: Iterable[Candidate]) -> int | None:
    """The agent who gets the next room, or None when every one is full (or there is none)."""
    ranked = rank(candidates)
    return ranked[0].agent_id if ranked else None


@dataclass(frozen=True)
class QueueInfo:
    position: int  # 1 = next
    eta_s: float | None  # None: nobody to wait for, or no history to estimate from


def average_handle_s(handle_times: Sequence[float]) -> float | None:
    """Mean time an agent held a room, over the recent ones; None without history."""
    times = [t for t in handle_times if t > 0]
    return sum(times) / len(times) if times else None


def estimate_wait(position: int, *, candidates: Sequence[Candidate], handle_s: float | None) -> float | None:
    """Seconds until the visitor at `position` is likely served.

    Each available agent serves `capacity` rooms in parallel, so the group frees a slot every
    `handle_s / total capacity` seconds on average; the visitor waits for the slots that the rooms
    ahead of them take. Free slots now serve the first ones at once.

    >>> estimate_wait(4, candidates=[Candidate(1, 3, 3, 0.0), Candidate(2, 3, 3, 0.0)], handle_s=300)
    200.0
    """
    return estimate_from_totals(
        position,
        free=sum(c.free for c in candidates),
        capacity=sum(c.capacity for c in candidates),
        handle_s=handle_s,
    )


def estimate_from_totals(position: int, *, free: int, capacity: int, handle_s: float | None) -> float | None:
    """`estimate_wait` from the group's totals (what a queue message carries)."""
    if capacity <= 0 or handle_s is None:
        return None
    if position <= free:
        return 0.0
    return float(math.ceil((position - free) * handle_s / capacity))
