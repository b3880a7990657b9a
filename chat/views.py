"""Rooms and messages as the API and the sockets show them: staff see everything, a visitor only
their own room without staff fields (agent ids, visitor ids, contact, transfer notes)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from callcenter.models import Agent, SkillGroup, User
from chat.models import ChatMessage, ChatRoom, ChatVisitor, Sender

HISTORY_MAX = 200


def agent_name(session: Session, agent_id: int | None) -> str:
    if agent_id is None:
        return ""
    row = session.execute(
        select(col(User.display_name))
        .join(Agent, col(Agent.user_id) == col(User.id))
        .where(col(Agent.id) == agent_id)
    ).first()
    return str(row[0]) if row else ""


def message_dict(row: ChatMessage, *, sender_name: str = "", for_visitor: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "room_id": row.room_id,
        "seq": row.seq,
        "message_id": row.id,
        "at": row.at,
        "sender": row.sender,
        "sender_name": sender_name,
        "kind": row.kind,
        "text": row.text,
        "content": json.loads(row.payload or "{}"),
    }
    if not for_visitor:
        out["agent_id"] = row.agent_id
        out["client_id"] = row.client_id
    elif row.sender == Sender.VISITOR.value:
        out["client_id"] = row.client_id
    return out


def history(
    session: Session, *, room_id: int, after_seq: int = 0, limit: int = HISTORY_MAX, for_visitor: bool = False
) -> list[dict[str, Any]]:
    """The room's messages after `after_seq`, oldest first (the last `limit` when not paging)."""
    limit = max(1, min(limit, HISTORY_MAX))
    stmt = (
        select(ChatMessage, col(User.display_name))
        .outerjoin(Agent, col(Agent.id) == col(ChatMessage.agent_id))
        .outerjoin(User, col(User.id) == col(Agent.user_id))
        .where(col(ChatMessage.room_id) == room_id, col(ChatMessage.seq) > after_seq)
    )
    if after_seq:
        rows = session.execute(stmt.order_by(col(ChatMessage.seq)).limit(limit)).all()
    else:
        rows = list(reversed(session.execute(stmt.order_by(col(ChatMessage.seq).desc()).limit(limit)).all()))
    visitor = session.execute(
        select(col(ChatVisitor.name))
        .join(ChatRoom, col(ChatRoom.visitor_id) == col(ChatVisitor.id))
        .where(col(ChatRoom.id) == room_id)
    ).scalar()
    return [
        message_dict(m, sender_name=_sender_name(m, name, visitor), for_visitor=for_visitor)
        for m, name in rows
    ]


def _sender_name(row: ChatMessage, agent: str | None, visitor: str | None) -> str:
    if row.sender == Sender.AGENT.value:
        return agent or ""
    if row.sender == Sender.VISITOR.value:
        return visitor or ""
    return "Bot" if row.sender == Sender.BOT.value else ""


def room_dict(session: Session, room: ChatRoom, *, for_visitor: bool = False) -> dict[str, Any]:
    visitor = session.get(ChatVisitor, room.visitor_id)
    group = session.get(SkillGroup, room.skill_group_id)
    out: dict[str, Any] = {
        "room_id": room.id,
        "state": room.state,
        "channel": room.channel,
        "group_id": room.skill_group_id,
        "group_name": group.name if group else "",
        "agent_name": agent_name(session, room.agent_id),
        "created_at": room.created_at,
        "ended_at": room.ended_at,
        "last_seq": room.last_seq,
        "visitor_read_seq": room.visitor_read_seq,
        "visitor_delivered_seq": room.visitor_delivered_seq,
        "agent_read_seq": room.agent_read_seq,
        "agent_delivered_seq": room.agent_delivered_seq,
        "satisfaction": room.satisfaction,
        "survey_open": room.ended_at is not None and room.surveyed_at is None,
    }
    if not for_visitor:
        out.update(
            agent_id=room.agent_id,
            visitor_id=room.visitor_id,
            visitor_name=visitor.name if visitor else "",
            visitor_email=visitor.email if visitor else "",
            visitor_phone=visitor.phone if visitor else "",
            contact_id=room.contact_id,
            queued_at=room.queued_at,
            assigned_at=room.assigned_at,
            handler=room.handler,
            close_reason=room.close_reason,
            transfer_note=room.transfer_note,
            satisfaction_comment=room.satisfaction_comment,
            page_url=room.page_url,
            bot_handoff=room.bot_handoff,
        )
    return out
