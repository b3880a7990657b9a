"""The chat side of the CRM: a visitor linked to a contact (found by the phone or e-mail they give, or
created), tags and a note saved in one click, messages left while nobody was online (a CRM note and
an item in the group's inbox), and a contact's chats beside their calls in one history."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlmodel import Session, col

from callcenter.errors import Conflict, Invalid, NotFound
from chat import rooms, services
from chat.messages import ChatInboxAdded
from chat.models import ChatInboxItem, ChatParticipant, ChatRoom, ChatVisitor, RoomState
from chat.validation import clean_text
from crm import services as crm

INBOX_MAX = 200


def link(
    session: Session,
    *,
    room: ChatRoom,
    name: str,
    phone: str,
    email: str,
    region: str,
    owner_id: int | None = None,
) -> dict[str, Any]:
    """Link the room and its visitor to the contact with this phone (else e-mail), created when none
    has it. Answers the contact and whether it was created."""
    name = " ".join(name.split())[:128]
    view, created = crm.find_or_create(
        session, name=name, phone=phone, email=email, region=region, owner_id=owner_id
    )
    visitor = session.get(ChatVisitor, room.visitor_id)
    if visitor is not None:
        visitor.contact_id = view.id
        if name and not visitor.name:
            visitor.name = name
        visitor.phone = visitor.phone or phone.strip()[:32]
        visitor.email = visitor.email or email.strip()[:254]
        session.add(visitor)
    session.execute(update(ChatRoom).where(col(ChatRoom.id) == room.id).values(contact_id=view.id))
    return {"contact": view.as_dict(), "created": created}


def save(
    session: Session,
    *,
    room: ChatRoom,
    tags: list[str] | None,
    note: str,
    author_id: int,
) -> dict[str, Any]:
    """The console's one click: the linked contact's tags (replaced when given) and a note that names
    the chat it was taken in."""
    if room.contact_id is None:
        raise Conflict("link the chat to a contact first", field="contact_id")
    out: dict[str, Any] = {"contact_id": room.contact_id, "tags": None, "note": None}
    if tags is not None:
        out["tags"] = crm.set_tags(session, contact_id=room.contact_id, tags=tags)
    if note.strip():
        out["note"] = crm.add_note(
            session, contact_id=room.contact_id, author_id=author_id, body=f"[chat #{room.id}] {note.strip()}"
        )
    return out


def leave_message(
    session: Session,
    *,
    visitor: ChatVisitor,
    group_id: int,
    name: str,
    phone: str,
    email: str,
    body: str,
    region: str,
    now: float,
    out: services.Outbox,
) -> ChatInboxItem:
    """Nobody online: the message becomes a note on the contact (found or created by phone or e-mail)
    and an open item in the group's chat inbox. The visitor's queued room, if any, is closed."""
    body = clean_text(body, limit=2000, name="message").strip()
    name = " ".join(name.split())
    if len(name) > 128:
        raise Invalid("a name has at most 128 characters", field="name")
    if services.group_config(session, group_id) is None:
        raise NotFound(f"no chat for group {group_id}", field="group_id")
    room = services.open_room_of(session, visitor.id or 0)
    contact = link(session, room=room, name=name, phone=phone, email=email, region=region) if room else None
    if contact is None:
        view, _ = crm.find_or_create(session, name=name, phone=phone, email=email, region=region)
        visitor.contact_id = view.id
        session.add(visitor)
        contact_id = view.id
    else:
        contact_id = contact["contact"]["id"]
    assert contact_id is not None
    note = crm.add_note(
        session, contact_id=contact_id, author_id=None, body=f"Chat message left: {body}"[:4000]
    )
    item = ChatInboxItem(
        skill_group_id=group_id,
        room_id=room.id if room else None,
        visitor_id=visitor.id,
        contact_id=contact_id,
        note_id=note["id"],
        name=name,
        phone=phone.strip()[:32],
        email=email.strip()[:254],
        body=body,
        created_at=now,
    )
    session.add(item)
    session.flush()
    assert item.id is not None
    if room is not None and room.state == RoomState.QUEUED.value:
        move = rooms.apply(
            session,
            room_id=room.id or 0,
            event=rooms.RoomEvent.CLOSE,
            actor="visitor",
            now=now,
            note="left_message",
        )
        services.announce(session, move=move, out=out)
    out.messages.append(
        ChatInboxAdded(
            group_id=group_id,
            item_id=item.id,
            name=name,
            phone=item.phone,
            email=item.email,
            body=body,
            contact_id=contact_id,
            at=now,
        )
    )
    return item


def inbox_dict(item: ChatInboxItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "group_id": item.skill_group_id,
        "room_id": item.room_id,
        "contact_id": item.contact_id,
        "note_id": item.note_id,
        "name": item.name,
        "phone": item.phone,
        "email": item.email,
        "body": item.body,
        "state": item.state,
        "created_at": item.created_at,
        "done_by": item.done_by,
        "done_at": item.done_at,
    }


def inbox(
    session: Session, *, group_ids: list[int], state: str = "open", limit: int = 100
) -> list[dict[str, Any]]:
    if state not in ("open", "done"):
        raise Invalid("state is open or done", field="state")
    rows = session.scalars(
        select(ChatInboxItem)
        .where(col(ChatInboxItem.skill_group_id).in_(group_ids), col(ChatInboxItem.state) == state)
        .order_by(col(ChatInboxItem.created_at).desc())
        .limit(max(1, min(limit, INBOX_MAX)))
    )
    return [inbox_dict(r) for r in rows]


def inbox_done(
    session: Session, *, item_id: int, group_ids: list[int] | None, user_id: int, now: float
) -> dict[str, Any]:
    """Mark an inbox item handled (`group_ids` None = any group: a supervisor)."""
    item = session.get(ChatInboxItem, item_id)
    if item is None or (group_ids is not None and item.skill_group_id not in group_ids):
        raise NotFound(f"no inbox item {item_id}")
    if item.state != "done":
        item.state, item.done_by, item.done_at = "done", user_id, now
        session.add(item)
        session.flush()
    return inbox_dict(item)


def contact_chats(session: Session, *, contact_id: int, limit: int = 100) -> list[dict[str, Any]]:
    """The contact's chats as history entries (`kind` "chat"), newest first."""
    first_text = (
        select(services.MESSAGE.c.text)
        .where(services.MESSAGE.c.room_id == col(ChatRoom.id), services.MESSAGE.c.sender == "visitor")
        .order_by(services.MESSAGE.c.seq)
        .limit(1)
        .scalar_subquery()
    )
    agents = select(func.count()).where(col(ChatParticipant.room_id) == ChatRoom.id).scalar_subquery()
    rows = session.execute(
        select(
            col(ChatRoom.id),
            col(ChatRoom.created_at),
            col(ChatRoom.ended_at),
            col(ChatRoom.state),
            col(ChatRoom.channel),
            col(ChatRoom.handler),
            col(ChatRoom.satisfaction),
            col(ChatRoom.last_seq),
            first_text,
            agents,
        )
        .where(col(ChatRoom.contact_id) == contact_id)
        .order_by(col(ChatRoom.created_at).desc())
        .limit(max(1, min(limit, 500)))
    ).all()
    return [
        {
            "kind": "chat",
            "room_id": rid,
            "at": created,
            "ended_at": ended,
            "state": state,
            "channel": channel,
            "handler": handler,
            "satisfaction": rating,
            "messages": last_seq,
            "first_text": (first or "")[:200],
            "agents": n_agents,
        }
        for rid, created, ended, state, channel, handler, rating, last_seq, first, n_agents in rows
    ]


def history(session: Session, *, contact_id: int, limit: int = 100) -> list[dict[str, Any]]:
    """The contact's calls and chats in one list, newest first."""
    crm.get_contact(session, contact_id=contact_id)
    return crm.contact_history(
        session,
        contact_id=contact_id,
        limit=limit,
        extra=contact_chats(session, contact_id=contact_id, limit=limit),
    )
