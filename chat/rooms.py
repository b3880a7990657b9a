"""Chat room lifecycle: one state table, a pure step over a room's routing fields, and one function that
applies a move to the database with a compare-and-set and writes the audit row.

    queued ──assign──> active ──resolve──> completed
      │                 │  ^
      │              transfer accept
      │                 v  │
      │              transferred ──transfer──> transferred
      ├─bot_resolve──> completed
      └─close / visitor_left (from queued, active, transferred) ──> closed

`closed` and `completed` are final. The agent a room is held by (`agent_id`) moves with the state:
None while queued; set by assign; on transfer it becomes the target agent (or None for a transfer to
a group, which the router then gives to an agent of that group with `accept`); cleared on the end.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Connection
from sqlmodel import Session, select

from callcenter.errors import Conflict, Invalid, NotFound
from chat.models import ChatParticipant, ChatRoom, ChatRoomAudit, RoomState, rowcount, table_of

R = RoomState


class RoomEvent(StrEnum):
    ASSIGN = "assign"  # routing (or an agent picking from the queue) gives the room to an agent
    TRANSFER = "transfer"  # the holder (or a supervisor) hands it to another agent or group
    ACCEPT = "accept"  # the agent it was transferred to (or one of the target group) takes over
    RESOLVE = "resolve"  # the agent marks it done
    BOT_RESOLVE = "bot_resolve"  # the bot answered and the visitor said so (handler = bot)
    CLOSE = "close"  # ended unresolved by an agent, supervisor or the system
    VISITOR_LEFT = "visitor_left"  # the visitor left, or the grace period after a drop ran out


# (state, event) -> new state: every legal move of a room, on one screen.
TABLE: dict[tuple[RoomState, RoomEvent], RoomState] = {
    (R.QUEUED, RoomEvent.ASSIGN): R.ACTIVE,
    (R.QUEUED, RoomEvent.BOT_RESOLVE): R.COMPLETED,
    (R.QUEUED, RoomEvent.CLOSE): R.CLOSED,
    (R.QUEUED, RoomEvent.VISITOR_LEFT): R.CLOSED,
    (R.ACTIVE, RoomEvent.TRANSFER): R.TRANSFERRED,
    (R.ACTIVE, RoomEvent.RESOLVE): R.COMPLETED,
    (R.ACTIVE, RoomEvent.CLOSE): R.CLOSED,
    (R.ACTIVE, RoomEvent.VISITOR_LEFT): R.CLOSED,
    (R.TRANSFERRED, RoomEvent.ACCEPT): R.ACTIVE,
    (R.TRANSFERRED, RoomEvent.TRANSFER): R.TRANSFERRED,
    (R.TRANSFERRED, RoomEvent.CLOSE): R.CLOSED,
    (R.TRANSFERRED, RoomEvent.VISITOR_LEFT): R.CLOSED,
}

FINAL = frozenset({R.CLOSED, R.COMPLETED})
# Events that name the agent who gets the room (None = a transfer to a group).
NEEDS_AGENT = frozenset({RoomEvent.ASSIGN, RoomEvent.ACCEPT})


class InvalidTransition(Conflict):
    """The event is not legal in the room's current state."""

    def __init__(self, state: RoomState | str, event: RoomEvent | str) -> None:
        state, event = str(state), str(event)
        super().__init__(f"a chat that is {state} cannot {event.replace('_', ' ')}", field="state")
        self.state = state
        self.event = event


def next_state(state: RoomState | str, event: RoomEvent) -> RoomState:
    """The state after `event`, or InvalidTransition.

    >>> next_state("queued", RoomEvent.ASSIGN)
    <RoomState.ACTIVE: 'active'>
    """
    try:
        return TABLE[(RoomState(state), event)]
    except (KeyError, ValueError):
        raise InvalidTransition(state, event) from None


@dataclass(frozen=True)
class Snapshot:
    """The fields of a room a move changes: what the pure step works on and the property test checks."""

    state: RoomState
    agent_id: int | None
    skill_group_id: int
    ended: bool = False


def step(
    room: Snapshot, event: RoomEvent, *, agent_id: int | None = None, group_id: int | None = None
) -> Snapshot:
    """The room after `event`. `agent_id` is the agent who gets it (assign, accept; transfer to an
    agent), `group_id` the group of a transfer (None: the room's own group)."""
    new = next_state(room.state, event)
    if event in NEEDS_AGENT:
        if agent_id is None:
            raise Invalid(f"{event.value} needs an agent", field="agent_id")
        if event is RoomEvent.ACCEPT and room.agent_id is not None and room.agent_id != agent_id:
            raise Conflict("this chat was transferred to another agent", field="agent_id")
        return replace(room, state=new, agent_id=agent_id)
    if event is RoomEvent.TRANSFER:
        if agent_id is not None and agent_id == room.agent_id and room.state is R.ACTIVE:
            raise Invalid("a chat cannot be transferred to the agent who holds it", field="agent_id")
        return replace(room, state=new, agent_id=agent_id, skill_group_id=group_id or room.skill_group_id)
    return replace(room, state=new, agent_id=None, ended=new in FINAL)


def check(room: Snapshot) -> None:
    """The invariants every reachable room keeps (the property test asserts them after every step)."""
    assert room.state in RoomState
    if room.state is R.QUEUED:
        assert room.agent_id is None
    if room.state is R.ACTIVE:
        assert room.agent_id is not None
    if room.state in FINAL:
        assert room.agent_id is None and room.ended
    else:
        assert not room.ended


# --- applying a move -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoomMove:
    room_id: int
    event: RoomEvent
    old: RoomState
    new: RoomState
    old_agent_id: int | None
    agent_id: int | None
    old_group_id: int
    group_id: int
    at: float
    actor: str
    note: str = ""


def snapshot_of(room: ChatRoom) -> Snapshot:
    return Snapshot(
        state=RoomState(room.state),
        agent_id=room.agent_id,
        skill_group_id=room.skill_group_id,
        ended=room.ended_at is not None,
    )


_ROOM = table_of(ChatRoom)


def apply(
    db: Session | Connection,
    *,
    room_id: int,
    event: RoomEvent,
    actor: str,
    now: float,
    agent_id: int | None = None,
    group_id: int | None = None,
    note: str = "",
    handler: str = "",
    values: dict[str, Any] | None = None,
    guard: Any = None,
) -> RoomMove:
    """Move one room with a compare-and-set on (state, agent_id, group) as read, and write the audit row.
    A concurrent move of the same room makes this one raise InvalidTransition; the caller re-reads.
    `values` are extra columns written with the move (bot stage, transfer note ...); `guard` is one more
    condition of the compare-and-set (the grace sweep's "not seen since")."""
    row = db.execute(
        select(_ROOM.c.state, _ROOM.c.agent_id, _ROOM.c.skill_group_id, _ROOM.c.ended_at).where(
            _ROOM.c.id == room_id
        )
    ).first()
    if row is None:
        raise NotFound(f"no chat {room_id}")
    before = Snapshot(RoomState(row[0]), row[1], row[2], row[3] is not None)
    after = step(before, event, agent_id=agent_id, group_id=group_id)
    sets: dict[str, Any] = {"state": after.state.value, "agent_id": after.agent_id}
    sets["skill_group_id"] = after.skill_group_id
    if event in NEEDS_AGENT:
        sets["assigned_at"] = now
        sets["transfer_note"] = ""
        if event is RoomEvent.ASSIGN:
            sets["first_assigned_at"] = now
    if event is RoomEvent.TRANSFER:
        sets["transfer_note"] = note[:500]
        sets["assigned_at"] = now if after.agent_id is not None else None
    if after.state in FINAL:
        sets["ended_at"] = now
        sets["handler"] = handler or ("bot" if event is RoomEvent.BOT_RESOLVE else "")
        sets["close_reason"] = (note or event.value)[:32]
        sets["bot_flow_id"] = None
        sets["bot_step"] = ""
    sets.update(values or {})
    where = [_ROOM.c.id == room_id, _ROOM.c.state == before.state.value]
    where.append(
        _ROOM.c.agent_id.is_(None) if before.agent_id is None else _ROOM.c.agent_id == before.agent_id
    )
    if guard is not None:
        where.append(guard)
    result = db.execute(update(_ROOM).where(*where).values(**sets))
    if rowcount(result) != 1:
        current = db.execute(select(_ROOM.c.state).where(_ROOM.c.id == room_id)).first()
        raise InvalidTransition(current[0] if current else "gone", event)
    db.execute(
        table_of(ChatRoomAudit)
        .insert()
        .values(
            room_id=room_id,
            at=now,
            actor=actor[:64],
            event=event.value,
            old=before.state.value,
            new=after.state.value,
            agent_id=after.agent_id if after.agent_id is not None else before.agent_id,
            note=note[:500],
        )
    )
    _participants(db, room_id=room_id, old=before.agent_id, new=after.agent_id, now=now)
    return RoomMove(
        room_id=room_id,
        event=event,
        old=before.state,
        new=after.state,
        old_agent_id=before.agent_id,
        agent_id=after.agent_id,
        old_group_id=before.skill_group_id,
        group_id=after.skill_group_id,
        at=now,
        actor=actor,
        note=note,
    )


_PART = table_of(ChatParticipant)


def _participants(
    db: Session | Connection, *, room_id: int, old: int | None, new: int | None, now: float
) -> None:
    """Keep `chat_participant`: the agent who gets the room joins (once), the one who loses it leaves."""
    if old is not None and old != new:
        db.execute(
            update(_PART).where(_PART.c.room_id == room_id, _PART.c.agent_id == old).values(left_at=now)
        )
    if new is not None and new != old:
        exists = db.execute(
            select(_PART.c.agent_id).where(_PART.c.room_id == room_id, _PART.c.agent_id == new)
        ).first()
        if exists is None:
            db.execute(_PART.insert().values(room_id=room_id, agent_id=new, joined_at=now, left_at=None))
        else:
            db.execute(
                update(_PART).where(_PART.c.room_id == room_id, _PART.c.agent_id == new).values(left_at=None)
            )


def get(session: Session, room_id: int) -> ChatRoom:
    room = session.get(ChatRoom, room_id)
    if room is None:
        raise NotFound(f"no chat {room_id}")
    return room


def is_open(state: str) -> bool:
    return RoomState(state) not in FINAL
