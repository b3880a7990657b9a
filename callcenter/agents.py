"""Agent states: one table of legal moves, one function that applies it to a row.

Both the web (an agent sets ready / not ready / away) and the dialer (reserve, connect, hang up,
wrap-up timeout) move agents. Every move is a compare-and-set on the row (`WHERE state = <from>`),
so two processes can never both act on the same agent: the loser gets `InvalidTransition` or
`StaleState` and re-reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection
from sqlmodel import Session

from callcenter.errors import Conflict, NotFound
from callcenter.models import Agent, AgentState, AgentStateLog

S = AgentState


class AgentEvent(StrEnum):
    SET_READY = "set_ready"  # the agent (or the wrap-up timeout) makes them available
    SET_NOT_READY = "set_not_ready"
    SET_AWAY = "set_away"
    LOGOUT = "logout"
    RESERVE = "reserve"  # the dialer picked this agent for an answered call
    RELEASE = "release"  # the reserved call went away before it reached the agent
    MISS = "miss"  # the agent's phone did not take the reserved call in time (or could not be reached)
    CONNECT = "connect"  # the call is bridged to the agent
    MANUAL_CALL = "manual_call"  # the agent dialled out by hand from their phone
    HANGUP = "hangup"  # the agent's call ended: after-call work begins
    WRAP_UP_DONE = "wrap_up_done"  # wrap-up time is over


_IDLE = (S.OFFLINE, S.NOT_READY, S.AWAY, S.WRAP_UP)

# (state, event) -> new state. Every legal move is here; anything else raises InvalidTransition.
TABLE: dict[tuple[AgentState, AgentEvent], AgentState] = {
    **{(s, AgentEvent.SET_READY): S.READY for s in (S.OFFLINE, S.NOT_READY, S.AWAY, S.WRAP_UP, S.READY)},
    **{
        (s, AgentEvent.SET_NOT_READY): S.NOT_READY
        for s in (S.OFFLINE, S.READY, S.AWAY, S.WRAP_UP, S.NOT_READY)
    },
    **{(s, AgentEvent.SET_AWAY): S.AWAY for s in (S.READY, S.NOT_READY, S.WRAP_UP, S.AWAY)},
    **{(s, AgentEvent.LOGOUT): S.OFFLINE for s in (S.READY, S.NOT_READY, S.AWAY, S.WRAP_UP, S.OFFLINE)},
    (S.READY, AgentEvent.RESERVE): S.RESERVED,
    (S.RESERVED, AgentEvent.RELEASE): S.READY,
    # A missed call takes the agent out of routing (like a queue's auto-pause): a phone that is off the
    # hook, unregistered or unattended would otherwise be handed every next answered customer, each
    # one abandoned. The agent is back with one click on Ready.
    (S.RESERVED, AgentEvent.MISS): S.NOT_READY,
    (S.RESERVED, AgentEvent.CONNECT): S.ON_CALL,
    **{(s, AgentEvent.MANUAL_CALL): S.ON_CALL for s in (S.READY, *_IDLE)},
    (S.ON_CALL, AgentEvent.HANGUP): S.WRAP_UP,
    (S.RESERVED, AgentEvent.HANGUP): S.READY,  # the customer left while the agent's phone rang
    (S.WRAP_UP, AgentEvent.WRAP_UP_DONE): S.READY,
}

# What an agent may choose from the workstation.
AGENT_CHOICES: dict[AgentState, AgentEvent] = {
    S.READY: AgentEvent.SET_READY,
    S.NOT_READY: AgentEvent.SET_NOT_READY,
    S.AWAY: AgentEvent.SET_AWAY,
    S.OFFLINE: AgentEvent.LOGOUT,
}


class InvalidTransition(Conflict):
    """The event is not legal in the agent's current state."""

    def __init__(self, state: AgentState | str, event: AgentEvent | str) -> None:
        state, event = str(state), str(event)
        super().__init__(f"an agent in state {state} cannot {event.replace('_', ' ')}", field="state")
        self.state = state
        self.event = event


def next_state(state: AgentState | str, event: AgentEvent) -> AgentState:
    """The state after `event`; raises InvalidTransition when the table has no such move.

    >>> next_state("ready", AgentEvent.RESERVE)
    <AgentState.RESERVED: 'reserved'>
    """
    try:
        return TABLE[(AgentState(state), event)]
    except (KeyError, ValueError):
        raise InvalidTransition(state, event) from None


@dataclass(frozen=True)
class AgentMove:
    agent_id: int
    old: AgentState
    new: AgentState
    at: float
    call_id: str | None
    campaign_id: int | None


_AGENT = Agent.__table__  # type: ignore[attr-defined]
_LOG = insert(AgentStateLog)
_STATE = select(_AGENT.c.state).where(_AGENT.c.id == bindparam("aid"))


@lru_cache(maxsize=64)
def _cas(keys: tuple[str, ...]) -> Any:
    """The compare-and-set UPDATE for one set of columns (built once: this is on the dialer's hot path)."""
    return (
        update(_AGENT)
        .where(_AGENT.c.id == bindparam("aid"), _AGENT.c.state == bindparam("old"))
        .values({k: bindparam(k) for k in keys})
    )


def apply(
    conn: Connection | Session,
    *,
    agent_id: int,
    event: AgentEvent,
    now: float,
    expect: AgentState | None = None,
    call_id: str | None = None,
    campaign_id: int | None = None,
    reason: str | None = None,
) -> AgentMove:
    """Move one agent with a compare-and-set. `expect` pins the state the caller saw; without it the
    current row is read first. `call_id` / `campaign_id` are recorded for reserve / connect / manual;
    `reason` (why the dialer made the move) is kept until the next move."""
    if expect is None:
        row = conn.execute(_STATE, {"aid": agent_id}).first()
        if row is None:
            raise NotFound(f"no agent {agent_id}")
        expect = AgentState(row[0])
    new = next_state(expect, event)
    values: dict[str, object] = {"state": new.value}
    values["state_reason"] = reason  # a reason belongs to this one move: any later move clears it
    if new != expect:
        values["state_since"] = now
        values["wrap_extra_s"] = 0.0  # "extend" belongs to one wrap-up
    if new is S.READY and expect is not S.READY:
        values["idle_since"] = now
    if event in (AgentEvent.RESERVE, AgentEvent.MANUAL_CALL):
        values["call_id"] = call_id
        values["campaign_id"] = campaign_id
    elif new in (S.READY, S.NOT_READY, S.AWAY, S.OFFLINE):
        values["call_id"] = None
        values["campaign_id"] = None
    if event is AgentEvent.MANUAL_CALL:
        # A call dialled by hand while not ready (or away) goes back there after its wrap-up.
        values["after_wrap"] = expect.value if expect in (S.NOT_READY, S.AWAY) else None
    elif new not in (S.ON_CALL, S.WRAP_UP):
        values["after_wrap"] = None
    result = conn.execute(_cas(tuple(sorted(values))), {"aid": agent_id, "old": expect.value, **values})
    if result.rowcount != 1:  # type: ignore[attr-defined]
        current = conn.execute(_STATE, {"aid": agent_id}).first()
        if current is None:
            raise NotFound(f"no agent {agent_id}")
        raise InvalidTransition(current[0], event)
    if new != expect:  # the history the reports add up
        conn.execute(
            _LOG,
            {
                "agent_id": agent_id,
                "at": now,
                "state": new.value,
                "reason": reason,
                "call_id": values.get("call_id", call_id),
            },
        )
    return AgentMove(agent_id, expect, new, now, values.get("call_id", call_id), campaign_id)  # type: ignore[arg-type]
