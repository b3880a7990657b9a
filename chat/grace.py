"""The grace period of a web visitor who dropped: their rooms are kept (queue place, agent) while a
socket of theirs is open in some web process (each process refreshes `visitor_seen_at` of its
visitors' rooms) and for `CALLCENTER_CHAT_GRACE_S` after the last one closed; then they are closed."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlmodel import Session

from chat import assign, rooms
from chat.models import OPEN_STATES, Channel, ChatRoom, table_of
from chat.rooms import RoomEvent
from chat.services import Outbox, announce

ROOM = table_of(ChatRoom)


def heartbeat(session: Session, *, room_ids: Sequence[int], now: float) -> None:
    """The visitors of these rooms are connected to this process now."""
    if room_ids:
        session.execute(
            update(ROOM)
            .where(ROOM.c.id.in_(list(room_ids)), ROOM.c.state.in_(OPEN_STATES))
            .values(visitor_seen_at=now)
        )


def expire_grace(session: Session, *, now: float, grace_s: float, out: Outbox, limit: int = 100) -> list[int]:
    """Close the web rooms whose visitor has been gone longer than the grace period. Each is a
    compare-and-set guarded by "not seen since the cutoff": when several web processes sweep at
    once, or the visitor comes back meanwhile, exactly one outcome wins. Answers the rooms closed."""
    cutoff = now - grace_s
    due = session.execute(
        select(ROOM.c.id)
        .where(
            ROOM.c.channel == Channel.WEB.value,
            ROOM.c.state.in_(OPEN_STATES),
            ROOM.c.visitor_seen_at < cutoff,
        )
        .order_by(ROOM.c.visitor_seen_at)
        .limit(limit)
    ).all()
    closed = []
    for (room_id,) in due:
        try:
            with session.begin_nested():
                # Write first: on SQLite a savepoint that reads before it writes cannot wait for
                # another process's write lock (a stale snapshot fails at once); this waits.
                assign.lock_room(session, room_id)
                move = rooms.apply(
                    session,
                    room_id=room_id,
                    event=RoomEvent.VISITOR_LEFT,
                    actor="grace",
                    now=now,
                    note="visitor_gone",
                    handler="visitor",
                    guard=ROOM.c.visitor_seen_at < cutoff,
                )
        except rooms.InvalidTransition:
            continue  # another process closed it, or the visitor came back
        announce(session, move=move, out=out, survey=True)
        closed.append(room_id)
    return closed
