"""Finding rooms: by contact, agent, group, state, date and text (a message, or the visitor's name,
e-mail or phone)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlmodel import Session, col

from callcenter.errors import Invalid
from chat.models import ChatMessage, ChatParticipant, ChatRoom, ChatVisitor, RoomState
from chat.validation import clean_text
from chat.views import room_dict


def search(
    session: Session,
    *,
    text: str = "",
    contact_id: int | None = None,
    agent_id: int | None = None,
    group_id: int | None = None,
    state: str | None = None,
    since: float | None = None,
    until: float | None = None,
    only_agent: int | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Rooms by contact, agent (anyone who held it), group, state, date (created) and text (a message,
    or the visitor's name, e-mail or phone), newest first. `only_agent` limits to that agent's rooms."""
    text = clean_text(text, limit=200, name="q", required=False).strip()
    if state is not None and state not in {s.value for s in RoomState}:
        raise Invalid(f"state is one of {', '.join(s.value for s in RoomState)}", field="state")
    stmt = select(ChatRoom).join(ChatVisitor, col(ChatVisitor.id) == col(ChatRoom.visitor_id))
    if text:
        like = f"%{text}%"
        in_messages = select(col(ChatMessage.room_id)).where(col(ChatMessage.text).ilike(like))
        stmt = stmt.where(
            or_(
                col(ChatRoom.id).in_(in_messages),
                col(ChatVisitor.name).ilike(like),
                col(ChatVisitor.email).ilike(like),
                col(ChatVisitor.phone).ilike(like),
            )
        )
    for who in (agent_id, only_agent):
        if who is not None:
            stmt = stmt.where(
                col(ChatRoom.id).in_(
                    select(col(ChatParticipant.room_id)).where(col(ChatParticipant.agent_id) == who)
                )
            )
    if contact_id is not None:
        stmt = stmt.where(col(ChatRoom.contact_id) == contact_id)
    if group_id is not None:
        stmt = stmt.where(col(ChatRoom.skill_group_id) == group_id)
    if state is not None:
        stmt = stmt.where(col(ChatRoom.state) == state)
    if since is not None:
        stmt = stmt.where(col(ChatRoom.created_at) >= since)
    if until is not None:
        stmt = stmt.where(col(ChatRoom.created_at) < until)
    stmt = (
        stmt.order_by(col(ChatRoom.created_at).desc(), col(ChatRoom.id).desc())
        .limit(max(1, min(limit, 200)))
        .offset(max(0, offset))
    )
    found = list(session.scalars(stmt))
    out = []
    for room in found:
        item = room_dict(session, room)
        if text:
            hit = session.execute(
                select(col(ChatMessage.seq), col(ChatMessage.text))
                .where(col(ChatMessage.room_id) == room.id, col(ChatMessage.text).ilike(f"%{text}%"))
                .order_by(col(ChatMessage.seq))
                .limit(1)
            ).first()
            item["match"] = {"seq": hit[0], "text": hit[1][:300]} if hit else None
        out.append(item)
    return out
