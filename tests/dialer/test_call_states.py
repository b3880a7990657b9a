"""The call lifecycle table (`callcenter.engine.calls`): every legal move in one place, and no sequence
of events can put a call in a state the table does not lead to."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callcenter.engine.calls import (
    TABLE,
    CallEvent,
    InvalidMove,
    LiveCall,
    can,
    next_state,
    result_of,
)
from callcenter.engine.events import EndResult
from callcenter.models import CallResult, CallState

S = CallState


def reachable(start: CallState) -> set[CallState]:
    seen, todo = {start}, [start]
    while todo:
        state = todo.pop()
        for (frm, _), to in TABLE.items():
            if frm is state and to not in seen:
                seen.add(to)
                todo.append(to)
    return seen


def test_every_state_but_ended_can_end_and_ended_is_final() -> None:
    for state in CallState:
        if state is S.ENDED:
            assert not any(frm is S.ENDED for frm, _ in TABLE)
        else:
            assert next_state(state, CallEvent.END) is S.ENDED


def test_every_state_is_reached_from_a_placed_or_previewed_call() -> None:
    assert reachable(S.PREVIEW) | reachable(S.DIALING) == set(CallState)


def test_an_illegal_move_raises_naming_the_state_and_the_event() -> None:
    with pytest.raises(InvalidMove) as err:
        next_state(S.CONNECTED, CallEvent.RESERVE)
    assert "connected" in err.value.message and "reserve" in err.value.message


@given(st.sampled_from([S.PREVIEW, S.DIALING]), st.lists(st.sampled_from(list(CallEvent)), max_size=30))
def test_no_sequence_of_events_leaves_the_table(start: CallState, events: list[CallEvent]) -> None:
    """Apply any events, skipping the illegal ones as the engine does (it asks `can` first, or takes
    the InvalidMove): the state is always one the table leads to, and a call ends at most once."""
    call = LiveCall("c", 1, 1, "+8613800000001", "default", 0.0, state=start)
    allowed = reachable(start)
    ended = 0
    for event in events:
        if can(call.state, event):
            old = call.move(event)
            assert TABLE[(old, event)] is call.state
            ended += call.state is S.ENDED
        else:
            with pytest.raises(InvalidMove):
                call.move(event)
        assert call.state in allowed
    assert ended <= 1


def test_the_result_of_an_end_depends_on_how_far_the_call_got() -> None:
    call = LiveCall("c", 1, 1, "+8613800000001", "default", 0.0, state=S.RINGING)
    assert result_of(call, EndResult.BUSY) is CallResult.BUSY
    assert result_of(call, EndResult.REFUSED) is CallResult.REFUSED
    call.answered_at = 5.0
    assert result_of(call, EndResult.ANSWERED) is CallResult.ABANDONED  # no agent yet
    assert result_of(call, EndResult.LOST) is CallResult.ABANDONED  # reached, then lost: not redialled
    call.connected_at = 6.0
    assert result_of(call, EndResult.LOST) is CallResult.ANSWERED
    call.answer_kind = "machine"
    assert result_of(call, EndResult.ANSWERED) is CallResult.MACHINE
