"""Who takes an answered call: the rules, pure.

- An answered call goes to the ready agent of its task's skill group who has waited longest
  (`longest_idle_first`); if that agent cannot be reserved (another process moved them), the next.
- With no ready agent it waits, first come first served per skill group (`WaitingQueues`), until an
  agent frees up or the 2 s of the abandon rule run out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from callcenter.engine.store import AgentRow
from callcenter.models import AgentState

READY = AgentState.READY.value


def longest_idle_first(agents: Iterable[AgentRow]) -> list[AgentRow]:
    """The ready ones among `agents`, the one idle since longest first (ties: lowest id).

    >>> a = AgentRow(1, "1001", "ready", 0.0, 50.0, None, None, False)
    >>> b = AgentRow(2, "1002", "ready", 0.0, 10.0, None, None, False)
    >>> c = AgentRow(3, "1003", "on_call", 0.0, 1.0, None, None, False)
    >>> [x.id for x in longest_idle_first([a, b, c])]
    [2, 1]
    """
    return sorted((a for a in agents if a.state == READY), key=lambda a: (a.idle_since, a.id))


class WaitingQueues:
    """Answered calls waiting for an agent, one FIFO per skill group."""

    def __init__(self) -> None:
        self._queues: dict[int, deque[str]] = {}

    def add(self, group: int, call_id: str) -> None:
        self._queues.setdefault(group, deque()).append(call_id)

    def remove(self, call_id: str) -> None:
        for queue in self._queues.values():
            if call_id in queue:
                queue.remove(call_id)

    def groups(self) -> Iterator[tuple[int, deque[str]]]:
        return iter(self._queues.items())


def apportion(ready: int, tasks: list[tuple[int, float]]) -> dict[int, int]:
    """Share `ready` agents between the tasks of one skill group that have something to dial, as
    whole agents: each gets ready // n, and the remainder goes to the tasks that got one longest ago
    (`tasks`: (task id, when it last got a remainder agent)), so every ready agent is used and no
    task is starved. A task with nothing due is not in `tasks`.

    >>> apportion(1, [(7, 0.0), (8, 5.0)])
    {7: 1, 8: 0}
    >>> apportion(5, [(7, 9.0), (8, 5.0)])
    {7: 2, 8: 3}
    """
    if not tasks:
        return {}
    base, extra = divmod(ready, len(tasks))
    lucky = {tid for tid, _ in sorted(tasks, key=lambda t: (t[1], t[0]))[:extra]}
    return {tid: base + (1 if tid in lucky else 0) for tid, _ in tasks}
