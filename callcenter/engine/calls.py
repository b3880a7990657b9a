"""The life of one call as the dialer follows it: one table of legal moves, the call record, and what
a call's end means for its result. Pure: no I/O, times passed in.

    preview --dial--> dialing --ring--> ringing
    dialing|ringing --answer--> answered --reserve--> agent_ringing --connect--> connected
                                answered <--agent_failed-- agent_ringing
    dialing|ringing --connect--> connected          (an agent's own call: the far end answered)
    answered|agent_ringing --abandon--> abandoning  (the message plays, the PBX hangs up)
    dialing|ringing --answer_machine|hang_up--> hanging_up  (we asked the PBX to hang up)
    any state but ended --end--> ended

`CallEnded` from the PBX is the only way to `ended` for a call the PBX had; the engine itself ends
only calls that never reached the PBX (a preview skipped, an originate that could not be sent).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from callcenter.engine.events import EndResult
from callcenter.errors import Conflict
from callcenter.models import CallResult, CallState

S = CallState


class CallEvent(StrEnum):
    DIAL = "dial"  # a previewed lead is dialled by its agent's click
    RING = "ring"  # the customer's phone rings
    ANSWER = "answer"  # a person (or an undecided AMD) answered: an agent is needed within 2 s
    ANSWER_MACHINE = "answer_machine"  # AMD says machine: we hang up
    RESERVE = "reserve"  # an agent was reserved and their phone is being rung
    AGENT_FAILED = "agent_failed"  # that agent's phone did not take it: the customer waits again
    CONNECT = "connect"  # bridged to the agent
    ABANDON = "abandon"  # no agent in time: the abandon message plays, then the PBX hangs up
    HANG_UP = "hang_up"  # we asked the PBX to hang up a call not answered yet (pause, stop)
    END = "end"  # the PBX has no channel any more, or the call never reached it


_OPEN = tuple(s for s in S if s is not S.ENDED)
_PLACED = (S.DIALING, S.RINGING)

# (state, event) -> new state. Every legal move of a call is here; anything else raises InvalidMove.
TABLE: dict[tuple[CallState, CallEvent], CallState] = {
    (S.PREVIEW, CallEvent.DIAL): S.DIALING,
    (S.DIALING, CallEvent.RING): S.RINGING,
    **{(s, CallEvent.ANSWER): S.ANSWERED for s in _PLACED},
    **{(s, CallEvent.ANSWER_MACHINE): S.HANGING_UP for s in _PLACED},
    **{(s, CallEvent.HANG_UP): S.HANGING_UP for s in _PLACED},
    (S.ANSWERED, CallEvent.RESERVE): S.AGENT_RINGING,
    (S.AGENT_RINGING, CallEvent.AGENT_FAILED): S.ANSWERED,
    (S.AGENT_RINGING, CallEvent.CONNECT): S.CONNECTED,
    **{(s, CallEvent.CONNECT): S.CONNECTED for s in _PLACED},
    **{(s, CallEvent.ABANDON): S.ABANDONING for s in (S.ANSWERED, S.AGENT_RINGING)},
    **{(s, CallEvent.END): S.ENDED for s in _OPEN},
}

# Pacing stages: which states count as placed-and-ringing, waiting for an agent, being connected.
# A call we are hanging up (paused task, machine) still occupies its line like a ringing one.
RINGING_STAGE = frozenset({*_PLACED, S.HANGING_UP})
WAITING_STAGE = frozenset({S.ANSWERED})
AGENT_STAGE = frozenset({S.AGENT_RINGING})
CONNECTED_STAGE = frozenset({S.CONNECTED})


class InvalidMove(Conflict):
    """The event is not legal for a call in its current state."""

    def __init__(self, state: CallState | str, event: CallEvent | str) -> None:
        super().__init__(f"a call that is {state} cannot {str(event).replace('_', ' ')}", field="state")
        self.state = str(state)
        self.event = str(event)


def next_state(state: CallState | str, event: CallEvent) -> CallState:
    """The state after `event`, or InvalidMove.

    >>> next_state("ringing", CallEvent.ANSWER)
    <CallState.ANSWERED: 'answered'>
    >>> next_state("connected", CallEvent.ABANDON)
    Traceback (most recent call last):
    ...
    callcenter.engine.calls.InvalidMove: a call that is connected cannot abandon
    """
    try:
        return TABLE[(CallState(state), event)]
    except (KeyError, ValueError):
        raise InvalidMove(state, event) from None


def can(state: CallState, event: CallEvent) -> bool:
    return (state, event) in TABLE


@dataclass
class LiveCall:
    """A call this dialer follows (its row in the database is the durable copy). Only `move` changes
    `state`; the times record when each stage was reached."""

    id: str
    campaign_id: int | None
    lead_id: int | None
    number: str
    gateway: str
    created_at: float
    attempt: int = 1
    state: CallState = CallState.DIALING
    direction: str = "outbound"  # outbound | manual
    preview: bool = False  # offered to its agent first: that agent takes it when it is answered
    answered_at: float | None = None
    answer_kind: str = ""  # human | machine | unknown, once answered
    agent_at: float | None = None
    connected_at: float | None = None
    agent_id: int | None = None
    note: str = ""  # why we ended or abandoned it ourselves, kept ahead of the PBX's detail

    def move(self, event: CallEvent) -> CallState:
        """Apply `event` (InvalidMove if illegal) and return the state it left."""
        old = self.state
        self.state = next_state(old, event)
        return old

    @property
    def machine(self) -> bool:
        return self.answer_kind == "machine"


def result_of(call: LiveCall, ended: EndResult) -> CallResult:
    """What an attempt's end means, from where the call was when the PBX reported it (`ended`).

    >>> c = LiveCall("c", 1, 1, "+8613800000001", "default", 0.0, state=CallState.ANSWERED, answered_at=5.0)
    >>> result_of(c, EndResult.ANSWERED)
    <CallResult.ABANDONED: 'abandoned'>
    """
    if call.machine:
        return CallResult.MACHINE
    if ended is EndResult.ANSWERED or (ended is EndResult.LOST and call.answered_at is not None):
        if call.connected_at is not None:
            return CallResult.ANSWERED
        if call.answered_at is not None:
            return CallResult.ABANDONED
        # An agent's own call answered without a bridge we saw, or a PBX that skipped the answer.
        return CallResult.ANSWERED if call.direction == "manual" else CallResult.FAILED
    return CallResult(ended.value)
