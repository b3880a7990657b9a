"""What the push path reads for chat sockets: the `hello` a visitor or a staff socket gets when it
(re)connects, and what the sockets send (typing, marks) turned into bus messages. Plain synchronous
functions over a session; `webui.ws` runs them on its thread pool."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlmodel import Session, col

from callcenter.accounts import Principal
from callcenter.config import Settings
from callcenter.messages import BusMessage
from callcenter.models import Agent, SkillGroup, User
from chat import assign, rooms, services, views
from chat.models import OPEN_STATES, ChatAgent, ChatRoom, Sender
from chat.visitors import visitor_for_token

HELLO_MESSAGES = 100  # history a visitor gets back on (re)connect
HELLO_ROOM_MESSAGES = 30  # per room, for an agent's console


def visitor_of_token(session: Session, token: str, *, settings: Settings) -> tuple[int, int, int, str] | None:
    """(visitor id, room id, group id, room state) for a genuine token, or None. The room is the
    visitor's open one, else their last one (to rate it, or read it again)."""
    visitor = visitor_for_token(
        session,
        token,
        secret=settings.secret_key.get_secret_value(),
        max_age_s=settings.chat_visitor_token_max_age_s,
    )
    if visitor is None or visitor.id is None:
        return None
    room = services.open_room_of(session, visitor.id) or services.last_room_of(session, visitor.id)
    if room is None or room.id is None:
        return None
    return visitor.id, room.id, room.skill_group_id, room.state


def visitor_hello(session: Session, *, room_id: int, settings: Settings, now: float) -> dict[str, Any]:
    """The visitor's room, its history and their place in the queue; marks them connected."""
    session.execute(
        update(ChatRoom)
        .where(col(ChatRoom.id) == room_id, col(ChatRoom.state).in_(OPEN_STATES))
        .values(visitor_seen_at=now)
    )
    session.commit()
    room = services.load_room(session, room_id)
    return {
        "type": "hello",
        "server_time": now,
        "room": views.room_dict(session, room, for_visitor=True),
        "messages": views.history(session, room_id=room_id, limit=HELLO_MESSAGES, for_visitor=True),
        "queue": queue_place(session, room=room, settings=settings, now=now),
    }


def queue_place(session: Session, *, room: ChatRoom, settings: Settings, now: float) -> dict[str, Any] | None:
    if room.state not in assign.WAITING or room.agent_id is not None or room.id is None:
        return None
    message = assign.queue_message(session, group_id=room.skill_group_id, settings=settings, now=now)
    return message.for_visitor(room.id)


def room_summary(session: Session, room: ChatRoom, *, messages: int = HELLO_ROOM_MESSAGES) -> dict[str, Any]:
    out = views.room_dict(session, room)
    out["messages"] = views.history(session, room_id=room.id or 0, limit=messages)
    return out


def agent_part(session: Session, *, agent_id: int, settings: Settings, now: float) -> dict[str, Any]:
    """An agent's chat state: availability and load, the rooms they hold, their groups' queues."""
    groups = assign.agent_groups(session, agent_id=agent_id)
    return {
        "agent": assign.agent_message(session, agent_id=agent_id, now=now).payload(),
        "rooms": [room_summary(session, r) for r in services.agent_rooms(session, agent_id=agent_id)],
        "groups": groups,
        "queues": [
            assign.queue_message(session, group_id=g, settings=settings, now=now).payload() for g in groups
        ],
    }


def monitor_part(session: Session, *, settings: Settings, now: float) -> dict[str, Any]:
    """Every open room, every agent's chat state, every group's queue: the supervisor's chat view."""
    open_rooms = session.scalars(
        select(ChatRoom).where(col(ChatRoom.state).in_(OPEN_STATES)).order_by(col(ChatRoom.queued_at))
    )
    agents = session.execute(
        select(col(ChatAgent.agent_id), col(User.display_name), col(Agent.extension))
        .join(Agent, col(Agent.id) == col(ChatAgent.agent_id))
        .join(User, col(User.id) == col(Agent.user_id))
        .order_by(col(Agent.extension))
    ).all()
    group_ids = [
        int(g) for g in session.execute(select(col(SkillGroup.id)).order_by(col(SkillGroup.id))).scalars()
    ]
    return {
        "rooms": [views.room_dict(session, r) for r in open_rooms],
        "agents": [
            {**assign.agent_message(session, agent_id=aid, now=now).payload(), "name": name, "extension": ext}
            for aid, name, ext in agents
        ],
        "queues": [
            assign.queue_message(session, group_id=g, settings=settings, now=now).payload() for g in group_ids
        ],
    }


def staff_hello(
    session: Session, *, principal: Principal, agent: bool, monitor: bool, settings: Settings, now: float
) -> dict[str, Any]:
    """The `chat` part of a staff socket's hello."""
    out: dict[str, Any] = {}
    if agent and principal.agent_id is not None:
        out["agent"] = agent_part(session, agent_id=principal.agent_id, settings=settings, now=now)
    if monitor:
        out["monitor"] = monitor_part(session, settings=settings, now=now)
    return out


def socket_typing(
    session: Session, *, room_id: int, sender: Sender, agent_id: int | None, typing: bool, now: float
) -> BusMessage | None:
    """A typing flag from a socket, for a room the sender is in (None otherwise: dropped)."""
    room = session.get(ChatRoom, room_id)
    if room is None or not rooms.is_open(room.state):
        return None
    if sender is Sender.AGENT and (agent_id is None or room.agent_id != agent_id):
        return None
    return services.typing(session, room=room, sender=sender, typing=typing, now=now, agent_id=agent_id)


def socket_marks(
    session: Session,
    *,
    room_id: int,
    sender: Sender,
    agent_id: int | None,
    delivered: int | None,
    read: int | None,
) -> BusMessage | None:
    """Delivered / read marks from a socket (the agent's only for a room they hold)."""
    room = session.get(ChatRoom, room_id)
    if room is None:
        return None
    if sender is Sender.AGENT and (agent_id is None or room.agent_id != agent_id):
        return None
    result = services.marks(session, room_id=room_id, side=sender, delivered=delivered, read=read)
    session.commit()
    return result


def watchable(session: Session, *, room_id: int) -> bool:
    return session.get(ChatRoom, room_id) is not None
