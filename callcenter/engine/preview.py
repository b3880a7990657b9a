"""Preview mode, pure: which agents are offered a lead to look at before anything is dialled.

Each ready agent of the task's skill group gets one lead, longest idle first; the agent's click dials
it (or skips it, and the next lead comes). A previewed call that is answered goes to the agent who
dialled it, so the UK rule's "guaranteed agent" holds for its retries (`policy.after_attempt`).
"""

from __future__ import annotations

from collections.abc import Iterable

from callcenter.engine.routing import longest_idle_first
from callcenter.engine.store import AgentRow


def agents_to_offer(group_agents: Iterable[AgentRow]) -> list[AgentRow]:
    """The agents to offer a lead now, in order: every ready one (a reserved agent already has one).

    >>> a = AgentRow(1, "1001", "ready", 0.0, 50.0, None, None, False)
    >>> b = AgentRow(2, "1002", "reserved", 0.0, 10.0, "c1", 7, False)
    >>> [x.id for x in agents_to_offer([a, b])]
    [1]
    """
    return longest_idle_first(group_agents)
