"""Giving rooms to agents under database locks, and the queue as visitors and agents see it.

Several web processes route at once. Two rules keep them from stepping on each other:
- a room is locked before it is read for a move (`FOR UPDATE` on PostgreSQL; on SQLite the first
  statement is a write, which takes the database's single write lock), so it is given once;
- the chat rows of the candidate agents are locked (`FOR UPDATE`, in agent id order, after the room)
  before their loads are counted, so two routers never both fill an agent's last slot.
Loads are counted from the rooms themselves (rooms held: active, or transferred to the agent), never
kept in a counter that could drift. Every function takes the session first, keyword-only arguments
after, and raises only domain errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from callcenter.config import Settings
from callcenter.errors import Conflict, Invalid, NotFound
from callcenter.models import (
    Agent,
    AgentSkill,
    AgentState,
    Permission,
    RolePermission,
    SkillGroup,
    User,
    UserRole,
)
from chat import rooms
from chat.messages import ChatAgentChanged, ChatQueueChanged, QueueEntry
from chat.models import HELD_STATES, ChatAgent, ChatMessage, ChatRoom, ChatVisitor, RoomState, table_of
from chat.routing import Candidate, average_handle_s, pick

QUEUE_SHOWN = 200  # rooms listed in a queue message (the total is counted)
HANDLE_SAMPLE = 50  # recent ended rooms the wait estimate averages

ROOM = table_of(ChatRoom)
CHAT_AGENT = table_of(ChatAgent)
AGENT = table_of(Agent)
SKILL = table_of(AgentSkill)
USER = table_of(User)
USER_ROLE = table_of(UserRole)
ROLE_PERM = table_of(RolePermission)
VISITOR = table_of(ChatVisitor)
MESSAGE = table_of(ChatMessage)
WAITING = (RoomState.QUEUED.value, RoomState.TRANSFERRED.value)


def _pg(db: Session | Connection) -> bool:
    bind = db.get_bind() if isinstance(db, Session) else db
    return bind.dialect.name == "postgresql"


def lock_room(db: Session | Connection, room_id: int) -> None:
    """Hold the room's row until the transaction ends (see the module docstring)."""
    if _pg(db):
        db.execute(select(ROOM.c.id).where(ROOM.c.id == room_id).with_for_update())
    else:
        db.execute(update(ROOM).where(ROOM.c.id == room_id).values(id=ROOM.c.id))


def _lock_agents(db: Session | Connection, agent_ids: list[int]) -> None:
    if agent_ids and _pg(db):
        db.execute(
            select(CHAT_AGENT.c.agent_id)
            .where(CHAT_AGENT.c.agent_id.in_(agent_ids))
            .order_by(CHAT_AGENT.c.agent_id)
            .with_for_update()
        )


def _multimedia() -> Any:
    """Agents whose user is active and holds `multimedia_agent` through a role."""
    return exists(
        select(USER_ROLE.c.user_id)
        .join(ROLE_PERM, ROLE_PERM.c.role_id == USER_ROLE.c.role_id)
        .where(
            USER_ROLE.c.user_id == AGENT.c.user_id,
            ROLE_PERM.c.permission == Permission.MULTIMEDIA_AGENT.value,
        )
    )


def loads(db: Session | Connection, agent_ids: list[int]) -> dict[int, int]:
    """Rooms each agent holds now."""
    if not agent_ids:
        return {}
    rows = db.execute(
        select(ROOM.c.agent_id, func.count())
        .where(ROOM.c.agent_id.in_(agent_ids), ROOM.c.state.in_(HELD_STATES))
        .group_by(ROOM.c.agent_id)
    ).all()
    found = {int(a): int(n) for a, n in rows}
    return {a: found.get(a, 0) for a in agent_ids}


def candidates(
    db: Session | Connection, *, group_id: int, route_during_call: bool, lock: bool = False
) -> list[Candidate]:
    """The available multimedia agents of a group with their loads (locked when `lock`)."""
    stmt = (
        select(CHAT_AGENT.c.agent_id, CHAT_AGENT.c.capacity, CHAT_AGENT.c.idle_since)
        .join(AGENT, AGENT.c.id == CHAT_AGENT.c.agent_id)
        .join(SKILL, and_(SKILL.c.agent_id == AGENT.c.id, SKILL.c.skill_group_id == group_id))
        .join(USER, USER.c.id == AGENT.c.user_id)
        .where(CHAT_AGENT.c.available.is_(True), USER.c.is_active.is_(True), _multimedia())
        .order_by(CHAT_AGENT.c.agent_id)
    )
    if not route_during_call:
        stmt = stmt.where(AGENT.c.state.not_in([AgentState.RESERVED.value, AgentState.ON_CALL.value]))
    rows = db.execute(stmt).all()
    ids = [int(r[0]) for r in rows]
    if lock:
        _lock_agents(db, ids)
    held = loads(db, ids)
    return [Candidate(int(a), held[int(a)], int(cap), float(idle)) for a, cap, idle in rows]


# --- moves ----------------------------------------------------------------------------------------


def route_room(session: Session, *, room_id: int, now: float, settings: Settings) -> rooms.RoomMove | None:
    """Give one waiting room (queued, or transferred to its group) to the best agent of its group, or
    leave it waiting. Call in a transaction of its own and commit right after."""
    lock_room(session, room_id)
    row = session.execute(
        select(ROOM.c.state, ROOM.c.agent_id, ROOM.c.skill_group_id).where(ROOM.c.id == room_id)
    ).first()
    if row is None or row[0] not in WAITING or row[1] is not None:
        return None
    found = candidates(
        session, group_id=int(row[2]), route_during_call=settings.chat_route_during_call, lock=True
    )
    agent_id = pick(found)
    if agent_id is None:
        return None
    event = rooms.RoomEvent.ASSIGN if row[0] == RoomState.QUEUED.value else rooms.RoomEvent.ACCEPT
    move = rooms.apply(session, room_id=room_id, event=event, actor="router", now=now, agent_id=agent_id)
    session.execute(update(CHAT_AGENT).where(CHAT_AGENT.c.agent_id == agent_id).values(idle_since=now))
    return move


def waiting_rooms(db: Session | Connection, *, group_id: int, limit: int) -> list[int]:
    """Rooms of a group waiting for an agent, oldest first."""
    rows = db.execute(
        select(ROOM.c.id)
        .where(ROOM.c.skill_group_id == group_id, ROOM.c.state.in_(WAITING), ROOM.c.agent_id.is_(None))
        .order_by(ROOM.c.queued_at, ROOM.c.id)
        .limit(limit)
    ).all()
    return [int(r[0]) for r in rows]


def take(session: Session, *, room_id: int, agent_id: int, now: float, actor: str) -> rooms.RoomMove:
    """An agent picks a waiting room of one of their groups (from the queue list), or accepts a room
    transferred to them. Capacity is checked under the lock."""
    lock_room(session, room_id)
    room = session.execute(
        select(ROOM.c.state, ROOM.c.agent_id, ROOM.c.skill_group_id).where(ROOM.c.id == room_id)
    ).first()
    if room is None:
        raise NotFound(f"no chat {room_id}")
    state, holder, group_id = room
    if state == RoomState.TRANSFERRED.value and holder == agent_id:
        return rooms.apply(
            session, room_id=room_id, event=rooms.RoomEvent.ACCEPT, actor=actor, now=now, agent_id=agent_id
        )
    if state not in WAITING or holder is not None:
        raise rooms.InvalidTransition(state, rooms.RoomEvent.ASSIGN)
    in_group = session.execute(
        select(SKILL.c.agent_id).where(SKILL.c.agent_id == agent_id, SKILL.c.skill_group_id == group_id)
    ).first()
    if in_group is None:
        raise NotFound(f"no chat {room_id} in your groups")
    _check_capacity(session, agent_id=agent_id)
    event = rooms.RoomEvent.ASSIGN if state == RoomState.QUEUED.value else rooms.RoomEvent.ACCEPT
    move = rooms.apply(session, room_id=room_id, event=event, actor=actor, now=now, agent_id=agent_id)
    session.execute(update(CHAT_AGENT).where(CHAT_AGENT.c.agent_id == agent_id).values(idle_since=now))
    return move


def _check_capacity(session: Session, *, agent_id: int) -> None:
    _lock_agents(session, [agent_id])
    cap = session.execute(select(CHAT_AGENT.c.capacity).where(CHAT_AGENT.c.agent_id == agent_id)).scalar()
    if cap is None:
        raise Conflict("turn chat on first", field="available")
    held = loads(session, [agent_id])[agent_id]
    if held >= cap:
        raise Conflict(f"the agent already holds {held} of {cap} chats", field="capacity")


def transfer(
    session: Session,
    *,
    room_id: int,
    actor: str,
    by_agent_id: int | None,
    to_agent_id: int | None,
    to_group_id: int | None,
    note: str,
    now: float,
) -> rooms.RoomMove:
    """Hand an active (or transferred) room to another agent, who must accept it, or to a skill group,
    whose agents get it through routing. `by_agent_id` None = a supervisor."""
    if (to_agent_id is None) == (to_group_id is None):
        raise Invalid("transfer to an agent or to a skill group (one of them)", field="agent_id")
    if len(note) > 500:
        raise Invalid("a transfer note has at most 500 characters", field="note")
    lock_room(session, room_id)
    room = session.execute(select(ROOM.c.state, ROOM.c.agent_id).where(ROOM.c.id == room_id)).first()
    if room is None:
        raise NotFound(f"no chat {room_id}")
    if by_agent_id is not None and room[1] != by_agent_id:
        raise NotFound(f"no chat {room_id} held by you")
    if to_group_id is not None and session.get(SkillGroup, to_group_id) is None:
        raise NotFound(f"no skill group {to_group_id}", field="skill_group_id")
    if to_agent_id is not None:
        ok = session.execute(select(AGENT.c.id).where(AGENT.c.id == to_agent_id, _multimedia())).first()
        if ok is None:
            raise NotFound(f"no chat agent {to_agent_id}", field="agent_id")
        available = session.execute(
            select(CHAT_AGENT.c.available).where(CHAT_AGENT.c.agent_id == to_agent_id)
        ).scalar()
        if not available:
            raise Conflict("that agent is not available for chat", field="agent_id")
        if to_agent_id != room[1]:
            _check_capacity(session, agent_id=to_agent_id)
    return rooms.apply(
        session,
        room_id=room_id,
        event=rooms.RoomEvent.TRANSFER,
        actor=actor,
        now=now,
        agent_id=to_agent_id,
        group_id=to_group_id,
        note=note,
    )


# --- availability ---------------------------------------------------------------------------------


def chat_agent(session: Session, *, agent_id: int, settings: Settings, now: float) -> ChatAgent:
    """The agent's chat row, created (unavailable, default capacity) on first use."""
    row = session.get(ChatAgent, agent_id)
    if row is not None:
        return row
    if session.get(Agent, agent_id) is None:
        raise NotFound(f"no agent {agent_id}", field="agent_id")
    try:
        with session.begin_nested():
            row = ChatAgent(agent_id=agent_id, capacity=settings.chat_default_capacity, idle_since=now)
            session.add(row)
    except IntegrityError:
        row = session.get(ChatAgent, agent_id)
        assert row is not None
    return row


def set_agent(
    session: Session,
    *,
    agent_id: int,
    settings: Settings,
    now: float,
    available: bool | None = None,
    capacity: int | None = None,
) -> ChatAgentChanged:
    """Turn an agent's chat availability on or off, or change their capacity. Rooms they hold stay
    theirs when they turn chat off: they finish them (or a supervisor transfers them)."""
    row = chat_agent(session, agent_id=agent_id, settings=settings, now=now)
    if capacity is not None:
        if not 1 <= capacity <= 50:
            raise Invalid("capacity is between 1 and 50 chats", field="capacity")
        row.capacity = capacity
    if available is not None and available != row.available:
        row.available = available
        row.available_since = now if available else None
        if available:
            row.idle_since = now
    session.add(row)
    session.flush()
    return agent_message(session, agent_id=agent_id, now=now)


def agent_message(db: Session, *, agent_id: int, now: float) -> ChatAgentChanged:
    row = db.get(ChatAgent, agent_id)
    load = loads(db, [agent_id])[agent_id]
    if row is None:
        return ChatAgentChanged(agent_id=agent_id, available=False, capacity=0, load=load, at=now)
    return ChatAgentChanged(
        agent_id=agent_id, available=row.available, capacity=row.capacity, load=load, at=now
    )


# --- the queue ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupLoad:
    agents_online: int
    free: int
    capacity: int
    handle_s: float | None


def group_load(db: Session | Connection, *, group_id: int, settings: Settings) -> GroupLoad:
    found = candidates(db, group_id=group_id, route_during_call=settings.chat_route_during_call)
    recent = db.execute(
        select(ROOM.c.ended_at - ROOM.c.first_assigned_at)
        .where(
            ROOM.c.skill_group_id == group_id,
            ROOM.c.ended_at.is_not(None),
            ROOM.c.first_assigned_at.is_not(None),
        )
        .order_by(ROOM.c.ended_at.desc())
        .limit(HANDLE_SAMPLE)
    ).all()
    return GroupLoad(
        agents_online=len(found),
        free=sum(c.free for c in found),
        capacity=sum(c.capacity for c in found),
        handle_s=average_handle_s([float(r[0]) for r in recent if r[0] is not None]),
    )


def queue_message(
    db: Session | Connection, *, group_id: int, settings: Settings, now: float
) -> ChatQueueChanged:
    """The group's queue in order, for its agents, supervisors and (each their own place) visitors."""
    last_text = (
        select(MESSAGE.c.text)
        .where(MESSAGE.c.room_id == ROOM.c.id, MESSAGE.c.sender == "visitor")
        .order_by(MESSAGE.c.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    waiting = and_(ROOM.c.skill_group_id == group_id, ROOM.c.state.in_(WAITING), ROOM.c.agent_id.is_(None))
    rows = db.execute(
        select(ROOM.c.id, VISITOR.c.name, ROOM.c.channel, ROOM.c.queued_at, ROOM.c.state, last_text)
        .join(VISITOR, VISITOR.c.id == ROOM.c.visitor_id)
        .where(waiting)
        .order_by(ROOM.c.queued_at, ROOM.c.id)
        .limit(QUEUE_SHOWN)
    ).all()
    total = db.execute(select(func.count()).select_from(ROOM).where(waiting)).scalar() or 0
    load = group_load(db, group_id=group_id, settings=settings)
    return ChatQueueChanged(
        group_id=group_id,
        rooms=[
            QueueEntry(
                room_id=r[0],
                visitor_name=r[1] or "",
                channel=r[2],
                queued_at=r[3],
                state=r[4],
                last_text=(r[5] or "")[:200],
            )
            for r in rows
        ],
        total=int(total),
        agents_online=load.agents_online,
        free=load.free,
        capacity=load.capacity,
        handle_s=load.handle_s,
        at=now,
    )


def agent_groups(db: Session | Connection, *, agent_id: int) -> list[int]:
    rows = db.execute(select(SKILL.c.skill_group_id).where(SKILL.c.agent_id == agent_id)).all()
    return sorted(int(r[0]) for r in rows)
