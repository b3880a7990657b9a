"""The room state table: every legal move on one screen, no event sequence reaching an illegal room,
and the database move as a compare-and-set with an audit row."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import Session, col, select

from callcenter.errors import Conflict, Invalid
from chat import rooms
from chat.models import ChatRoomAudit, RoomState
from chat.rooms import FINAL, TABLE, InvalidTransition, RoomEvent, Snapshot, check, next_state, step
from tests.chat.conftest import World

R = RoomState


def test_final_states_have_no_moves_and_every_open_state_can_end() -> None:
    for state, _event in TABLE:
        assert state not in FINAL
    for state in (R.QUEUED, R.ACTIVE, R.TRANSFERRED):
        assert next_state(state, RoomEvent.VISITOR_LEFT) is R.CLOSED
        assert next_state(state, RoomEvent.CLOSE) is R.CLOSED
    assert next_state(R.ACTIVE, RoomEvent.RESOLVE) is R.COMPLETED
    assert next_state(R.QUEUED, RoomEvent.BOT_RESOLVE) is R.COMPLETED


@pytest.mark.parametrize(
    ("state", "event"),
    [
        ("closed", RoomEvent.ASSIGN),
        ("queued", RoomEvent.RESOLVE),
        ("active", RoomEvent.ACCEPT),
        ("completed", RoomEvent.CLOSE),
        ("nonsense", RoomEvent.CLOSE),
    ],
)
def test_illegal_moves_raise_invalid_transition(state: str, event: RoomEvent) -> None:
    with pytest.raises(InvalidTransition) as info:
        next_state(state, event)
    assert info.value.status == 409 and info.value.field == "state"


events = st.tuples(
    st.sampled_from(list(RoomEvent)),
    st.one_of(st.none(), st.integers(1, 4)),
    st.one_of(st.none(), st.integers(1, 3)),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(events, max_size=30))
def test_no_event_sequence_reaches_an_illegal_room(
    sequence: list[tuple[RoomEvent, int | None, int | None]],
) -> None:
    room = Snapshot(R.QUEUED, None, 1)
    check(room)
    for event, agent, group in sequence:
        try:
            after = step(room, event, agent_id=agent, group_id=group)
        except (InvalidTransition, Conflict, Invalid):
            continue  # refused: the room is unchanged
        assert (room.state, event) in TABLE
        assert after.state is TABLE[(room.state, event)]
        check(after)
        if room.state in FINAL:
            pytest.fail("a final room moved")
        room = after


def test_accept_is_only_for_the_agent_the_room_was_transferred_to() -> None:
    room = step(
        step(Snapshot(R.QUEUED, None, 1), RoomEvent.ASSIGN, agent_id=1), RoomEvent.TRANSFER, agent_id=2
    )
    assert room.state is R.TRANSFERRED and room.agent_id == 2
    with pytest.raises(Conflict):
        step(room, RoomEvent.ACCEPT, agent_id=3)
    assert step(room, RoomEvent.ACCEPT, agent_id=2).state is R.ACTIVE


def test_database_move_is_compare_and_set_with_an_audit_row(world: World) -> None:
    world.group("sales")
    room_id, _ = world.visit("sales")
    with Session(world.engine) as session:
        move = rooms.apply(
            session, room_id=room_id, event=RoomEvent.CLOSE, actor="sup", now=world.tick(), note="spam"
        )
        session.commit()
    assert (move.old, move.new) == (R.QUEUED, R.CLOSED)
    with Session(world.engine) as session:
        # A second process that read the room as queued loses: the row is no longer queued.
        with pytest.raises(InvalidTransition):
            rooms.apply(
                session, room_id=room_id, event=RoomEvent.VISITOR_LEFT, actor="grace", now=world.tick()
            )
        audit = session.exec(
            select(ChatRoomAudit).where(col(ChatRoomAudit.room_id) == room_id).order_by(col(ChatRoomAudit.id))
        ).all()
    assert [(a.event, a.old, a.new) for a in audit] == [
        ("created", "", "queued"),
        ("close", "queued", "closed"),
    ]
    room = world.room(room_id)
    assert room.ended_at is not None and room.close_reason == "spam"
