"""The dialer's copy of the agents: every agent row, each skill group's agents and pacing slots, and
the one place the dialer moves an agent (a compare-and-set through the store, then the copy, then the
bus message).

Rows change elsewhere too (the web sets ready / not ready); `reload` re-reads them all, and a move that
loses its compare-and-set re-reads that agent and raises `Conflict` for the caller to skip.
"""

from __future__ import annotations

from callcenter import agents as agent_table
from callcenter.engine.pacing import AgentSlot
from callcenter.engine.store import AgentRow, Store
from callcenter.errors import Conflict
from callcenter.messages import AgentStateChanged
from callcenter.models import AgentState
from callcenter.notifier import Notifier

AE = agent_table.AgentEvent
_STATES = {s.value: s for s in AgentState}  # row value -> enum, without Enum.__call__ per agent per pace
OFFLINE = AgentState.OFFLINE.value
_RETURN_TO = (AgentState.NOT_READY, AgentState.AWAY)


class Roster:
    def __init__(self, store: Store, notifier: Notifier | None) -> None:
        self.store = store
        self.notifier = notifier
        self.agents: dict[int, AgentRow] = {}
        # Per skill group: (generation, its agents, their pacing slots). The generation moves on every
        # agent move and reload, so pacing reuses the slots while no agent changed.
        self._gen = 0
        self._groups: dict[int, tuple[int, list[AgentRow], tuple[AgentSlot, ...]]] = {}

    def reload(self) -> dict[int, AgentRow]:
        """Re-read every agent; returns the rows as they were before."""
        old, self.agents = self.agents, self.store.agents()
        self._gen += 1
        return old

    def get(self, agent_id: int | None) -> AgentRow | None:
        return self.agents.get(agent_id) if agent_id is not None else None

    def by_extension(self, extension: str) -> int | None:
        found = next((a.id for a in self.agents.values() if a.extension == extension), None)
        return found if found is not None else self.store.agent_by_extension(extension)

    def group(self, group: int) -> tuple[list[AgentRow], tuple[AgentSlot, ...]]:
        """The agents of a skill group and their pacing slots (offline ones left out), cached until
        an agent moves or the rows are reloaded."""
        cached = self._groups.get(group)
        if cached is not None and cached[0] == self._gen:
            return cached[1], cached[2]
        agents = [a for a in self.agents.values() if group in a.groups]
        slots = tuple(AgentSlot(_STATES[a.state], a.since) for a in agents if a.state != OFFLINE)
        self._groups[group] = (self._gen, agents, slots)
        return agents, slots

    def move(
        self,
        agent_id: int,
        event: agent_table.AgentEvent,
        now: float,
        *,
        expect: AgentState | None = None,
        call_id: str | None = None,
        campaign_id: int | None = None,
        reason: str | None = None,
    ) -> AgentState:
        """Move one agent (compare-and-set on its row), keep the copy in step and tell the web.
        Returns the new state; raises Conflict (after re-reading the row) when the row moved on."""
        agent = self.agents.get(agent_id)
        if expect is None and agent is not None:
            expect = _STATES[agent.state]
        try:
            move = self.store.move_agent(
                agent_id=agent_id,
                event=event,
                now=now,
                expect=expect,
                call_id=call_id,
                campaign_id=campaign_id,
                reason=reason,
            )
        except Conflict:
            fresh = self.store.agents().get(agent_id)
            if fresh is not None:
                self.agents[agent_id] = fresh
                self._gen += 1
            raise
        if agent is not None:
            self._gen += 1
            if move.new is not move.old:
                agent.wrap_extra_s = 0.0
            agent.state = move.new.value
            agent.since = now
            if move.new is AgentState.READY:
                agent.idle_since = now
            if event in (AE.RESERVE, AE.MANUAL_CALL):
                agent.call_id, agent.campaign_id = call_id, campaign_id
            elif move.new is not AgentState.ON_CALL and move.new is not AgentState.WRAP_UP:
                agent.call_id, agent.campaign_id = None, None
            if event is AE.MANUAL_CALL:  # as `agents.apply` records it
                agent.after_wrap = move.old.value if move.old in _RETURN_TO else None
            elif move.new is not AgentState.ON_CALL and move.new is not AgentState.WRAP_UP:
                agent.after_wrap = None
            if self.notifier:
                self.notifier.publish(
                    AgentStateChanged(
                        agent_id=agent_id,
                        extension=agent.extension,
                        state=agent.state,
                        since=now,
                        call_id=agent.call_id,
                        campaign_id=agent.campaign_id,
                        reason=reason,
                    )
                )
        return move.new
