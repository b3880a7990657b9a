"""Chat API under `/api/chat`: the visitor API (public routes authenticated by the visitor token in
`X-Visitor-Token`), the agent API (`multimedia_agent`), the supervisor API (`monitor`), the admin API
(`admin`) and the channel webhooks (public, authenticated by each channel's signature). Thin: validate,
call one service function, commit, hand the outbox to `ChatRuntime.settle` (after the response)."""

from __future__ import annotations

import json
import logging
import time
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import PlainTextResponse, Response
from sqlalchemy import delete
from sqlmodel import Session, col, select

from callcenter.accounts import Principal
from callcenter.errors import DomainError
from callcenter.http import current_principal, get_ctx, get_session, public, require
from callcenter.models import Permission, SkillGroup
from chat import assign, crmlink, live, rooms, services, uploads, views, visitors
from chat import search as chat_search
from chat.bot import admin as bot_admin
from chat.bot import engine as bot_engine
from chat.bot.runner import greeting_of
from chat.channels.base import Inbound, receive
from chat.channels.telegram import SECRET_HEADER, TelegramAdapter, TelegramError
from chat.channels.wechat import WeChatAdapter, WeChatError, parse_xml, reply_xml
from chat.models import (
    BotFlow,
    ChatGroupConfig,
    ChatMessage,
    ChatRoom,
    ChatVisitor,
    KbEntry,
    MessageKind,
    Sender,
)
from chat.runtime import ChatRuntime, runtime_for
from chat.schemas import (
    AgentMessage,
    AgentPatch,
    Availability,
    ChatStart,
    ContactLink,
    CrmSave,
    EndRoom,
    FlowIn,
    GroupConfigIn,
    KbEntryIn,
    KbTest,
    LeaveMessage,
    Marks,
    Survey,
    Transfer,
    Typing,
    VisitorChoice,
    VisitorText,
)
from chat.services import Outbox
from chat.validation import clean_url

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/chat")

STAFF = (Permission.MULTIMEDIA_AGENT, Permission.MONITOR)
START_LIMIT = (20, 3600)  # chats a client address may start per hour
MESSAGE_LIMIT = (60, 60)  # messages a visitor may send per minute


# --- dependencies ---------------------------------------------------------------------------------


def runtime(request: Request) -> ChatRuntime:
    """The process's chat runtime (made on first use, kept on the app context)."""
    return runtime_for(get_ctx(request))


def _visitor_or_none(request: Request, session: Session) -> ChatVisitor | None:
    token = request.headers.get(visitors.HEADER)
    if not token:
        return None
    settings = get_ctx(request).settings
    return visitors.visitor_for_token(
        session,
        token,
        secret=settings.secret_key.get_secret_value(),
        max_age_s=settings.chat_visitor_token_max_age_s,
    )


def current_visitor(request: Request, session: Session = Depends(get_session)) -> ChatVisitor:
    visitor = _visitor_or_none(request, session)
    if visitor is None:
        raise HTTPException(401, f"send the visitor token in the {visitors.HEADER} header")
    return visitor


def _throttle(request: Request, key: str, limit: tuple[int, int]) -> None:
    redis = get_ctx(request).redis
    name = f"cc:chat:rate:{key}"
    count = redis.incr(name)
    if count == 1:
        redis.expire(name, limit[1])
    if count > limit[0]:
        raise HTTPException(429, "too many requests; wait a little")


def _agent_id(principal: Principal) -> int:
    if principal.agent_id is None:
        raise HTTPException(409, "this user has no agent record; ask an admin to add one")
    return principal.agent_id


def _done(session: Session, background: BackgroundTasks, rt: ChatRuntime, out: Outbox) -> None:
    session.commit()
    background.add_task(rt.settle, out)


def _visitor_room(session: Session, visitor: ChatVisitor, *, open_only: bool = True) -> ChatRoom:
    room = services.open_room_of(session, visitor.id or 0)
    if room is None and not open_only:
        room = services.last_room_of(session, visitor.id or 0)
    if room is None:
        raise HTTPException(404, "no open chat: start one first")
    return room


def _visitor_view(session: Session, rt: ChatRuntime, room: ChatRoom, now: float) -> dict[str, Any]:
    return {
        "room": views.room_dict(session, room, for_visitor=True),
        "messages": views.history(session, room_id=room.id or 0, limit=live.HELLO_MESSAGES, for_visitor=True),
        "queue": live.queue_place(session, room=room, settings=rt.settings, now=now),
    }


# --- visitor API ----------------------------------------------------------------------------------


@router.get("/groups", dependencies=[public()])
def groups(
    rt: ChatRuntime = Depends(runtime), session: Session = Depends(get_session)
) -> list[dict[str, Any]]:
    """The skill groups offered in the widget, with how many agents are online for chat now."""
    out = services.chat_groups(session)
    for g in out:
        load = assign.group_load(session, group_id=g["group_id"], settings=rt.settings)
        g["agents_online"] = load.agents_online
    return out


@router.post("/visitor/chats", status_code=201, dependencies=[public()])
def start_chat(
    body: ChatStart,
    request: Request,
    background: BackgroundTasks,
    rt: ChatRuntime = Depends(runtime),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """Start a chat (or get back the open one of the visitor whose token is sent): the token, the
    room, its history, the queue place, and whether anybody is online (else offer the message form)."""
    now = time.time()
    visitor = _visitor_or_none(request, session)
    if visitor is None:
        _throttle(request, f"start:{request.client.host if request.client else '-'}", START_LIMIT)
        visitor = visitors.new_web_visitor(
            session, name=body.name, email=body.email, phone=body.phone, now=now
        )
    config = services.group_config(session, body.group_id)
    out = Outbox()
    room = services.start(
        session,
        visitor=visitor,
        group_id=body.group_id,
        now=now,
        out=out,
        page_url=body.page_url,
        greeting=greeting_of(config),
    )
    load = assign.group_load(session, group_id=room.skill_group_id, settings=rt.settings)
    token = visitors.issue_token(visitor, secret=rt.settings.secret_key.get_secret_value())
    _done(session, background, rt, out)
    return {
        "token": token,
        **_visitor_view(session, rt, room, now),
        "agents_online": load.agents_online,
        "offline_text": (
            config.offline_text if config and config.offline_text else bot_engine.DEFAULT_OFFLINE
        ),
    }


@router.get("/visitor/chat", dependencies=[public()])
def visitor_chat(
    rt: ChatRuntime = Depends(runtime),
    visitor: ChatVisitor = Depends(current_visitor),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """The visitor's open chat (else their last one) with its history: what a reload shows."""
    return _visitor_view(session, rt, _visitor_room(session, visitor, open_only=False), time.time())


@router.get("/visitor/messages", dependencies=[public()])
def visitor_messages(
    after_seq: int = Query(0, ge=0),
    limit: int = Query(100, ge=1, le=views.HISTORY_MAX),
    visitor: ChatVisitor = Depends(current_visitor),
    session: Session = Depends(get_session),
) -> list[dict[str, Any]]:
    room = _visitor_room(session, visitor, open_only=False)
    return views.history(session, room_id=room.id or 0, after_seq=after_seq, limit=limit, for_visitor=True)


@router.post("/visitor/messages", status_code=201, dependencies=[public()])
def visitor_text(
    body: VisitorText,
    request: Request,
    background: BackgroundTasks,
    rt: ChatRuntime = Depends(runtime),
    visitor: ChatVisitor = Depends(current_visitor),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    _throttle(request, f"msg:{visitor.id}", MESSAGE_LIMIT)
    out = Outbox()
    room = _visitor_room(session, visitor)
    msg = services.visitor_says(
        session,
        room=room,
        text=body.text,
        now=time.time(),
        out=out,
        limit=rt.settings.chat_max_message_chars,
        client_id=body.client_id,
    )
    _done(session, background, rt, out)
    return views.message_dict(msg, sender_name=visitor.name, for_visitor=True)


@router.post("/visitor/choices", status_code=201, dependencies=[public()])
def visitor_choice(
    body: VisitorChoice,
    request: Request,
    background: BackgroundTasks,
    rt: ChatRuntime = Depends(runtime),
    visitor: ChatVisitor = Depends(current_visitor),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """A click on a button of a buttons message."""
    _throttle(request, f"msg:{visitor.id}", MESSAGE_LIMIT)
    out = Outbox()
    room = _visitor_room(session, visitor)
    msg = services.visitor_clicks(
        session,
        room=room,
        seq=body.seq,
        button_id=body.button_id,
        now=time.time(),
        out=out,
        client_id=body.client_id,
    )
    _done(session, background, rt, out)
    return views.message_dict(msg, sender_name=visitor.name, for_visitor=True)


@router.post("/visitor/images", status_code=201, dependencies=[public()])
def visitor_image(
    request: Request,
    background: BackgroundTasks,
    file: Annotated[UploadFile, File(description="PNG, JPEG, GIF or WebP")],
    client_id: Annotated[str | None, Form(max_length=64)] = None,
    rt: ChatRuntime = Depends(runtime),
    visitor: ChatVisitor = Depends(current_visitor),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    _throttle(request, f"msg:{visitor.id}", MESSAGE_LIMIT)
    data = file.file.read(rt.settings.chat_upload_max_bytes + 1)
    out = Outbox()
    msg = uploads.store(
        session,
        room=_visitor_room(session, visitor),
        sender=Sender.VISITOR,
        data=data,
        data_dir=rt.settings.data_dir,
        max_bytes=rt.settings.chat_upload_max_bytes,
        now=time.time(),
        out=out,
        client_id=client_id,
    )
    _done(session, background, rt, out)
    return views.message_dict(msg, sender_name=visitor.name, for_visitor=True)


@router.post("/visitor/marks", dependencies=[public()])
def visitor_marks(
    body: Marks,
    background: BackgroundTasks,
    rt: ChatRuntime = Depends(runtime),
    visitor: ChatVisitor = Depends(current_visitor),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """The visitor received / read the agent's messages up to these `seq`s."""
    room = _visitor_room(session, visitor, open_only=False)
    moved = services.marks(
        session, room_id=room.id or 0, side=Sender.VISITOR, delivered=body.delivered_seq, read=body.read_seq
    )
    out = Outbox(messages=[moved] if moved else [])
    _done(session, background, rt, out)
    return {"moved": moved is not None}


@router.post("/visitor/typing", dependencies=[public()])
def visitor_typing(
    body: Typing,
    rt: ChatRuntime = Depends(runtime),
    visitor: ChatVisitor = Depends(current_visitor),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """Typing indicator (never stored; the socket's `typing` message does the same)."""
    room = _visitor_room(session, visitor)
    rt.notifier().publish(
        services.typing(session, room=room, sender=Sender.VISITOR, typing=body.typing, now=time.time())
    )
    return {"ok": True}


@router.post("/visitor/leave", dependencies=[public()])
def visitor_leave(
    background: BackgroundTasks,
    rt: ChatRuntime = Depends(runtime),
    visitor: ChatVisitor = Depends(current_visitor),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """The visitor ends the chat (closed; the survey follows)."""
    out = Outbox()
    room = services.visitor_leaves(session, room=_visitor_room(session, visitor), now=time.time(), out=out)
    _done(session, background, rt, out)
    return views.room_dict(session, room, for_visitor=True)


@router.post("/visitor/survey", dependencies=[public()])
def visitor_survey(
    body: Survey,
    rt: ChatRuntime = Depends(runtime),
    visitor: ChatVisitor = Depends(current_visitor),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """Rate the visitor's last chat, once it has ended: 1-5 and an optional comment."""
    room = services.last_room_of(session, visitor.id or 0)
    if room is None:
        raise HTTPException(404, "no chat to rate")
    room = services.survey(
        session,
        room=room,
        rating=body.rating,
        comment=body.comment,
        now=time.time(),
        window_s=rt.settings.chat_survey_window_s,
    )
    session.commit()
    return views.room_dict(session, room, for_visitor=True)


@router.post("/visitor/contact", dependencies=[public()])
def visitor_contact(
    body: ContactLink,
    rt: ChatRuntime = Depends(runtime),
    visitor: ChatVisitor = Depends(current_visitor),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """The visitor gives a phone or e-mail: the chat is linked to that contact (found or created).
    Only whether it worked is answered: a visitor never reads a contact record."""
    room = _visitor_room(session, visitor, open_only=False)
    crmlink.link(
        session,
        room=room,
        name=body.name,
        phone=body.phone,
        email=body.email,
        region=rt.settings.default_region,
    )
    session.commit()
    return {"linked": True}


@router.post("/visitor/messages-left", status_code=201, dependencies=[public()])
def leave_message(
    body: LeaveMessage,
    request: Request,
    background: BackgroundTasks,
    rt: ChatRuntime = Depends(runtime),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """Nobody online: leave a message (a CRM note and an item in the group's inbox). Works with or
    without a visitor token."""
    now = time.time()
    visitor = _visitor_or_none(request, session)
    if visitor is None:
        _throttle(request, f"start:{request.client.host if request.client else '-'}", START_LIMIT)
        visitor = visitors.new_web_visitor(
            session, name=body.name, email=body.email, phone=body.phone, now=now
        )
    out = Outbox()
    item = crmlink.leave_message(
        session,
        visitor=visitor,
        group_id=body.group_id,
        name=body.name,
        phone=body.phone,
        email=body.email,
        body=body.message,
        region=rt.settings.default_region,
        now=now,
        out=out,
    )
    _done(session, background, rt, out)
    return {"id": item.id, "received": True}


@router.get("/uploads/{upload_id}", dependencies=[public()])
def upload_file(upload_id: str, request: Request, session: Session = Depends(get_session)) -> Response:
    return _serve_upload(upload_id, request, session, thumb=False)


@router.get("/uploads/{upload_id}/thumb", dependencies=[public()])
def upload_thumb(upload_id: str, request: Request, session: Session = Depends(get_session)) -> Response:
    return _serve_upload(upload_id, request, session, thumb=True)


def _serve_upload(upload_id: str, request: Request, session: Session, *, thumb: bool) -> Response:
    """An image, for the visitor of its room (token header), the agents who held the room, and
    supervisors; 404 for anyone else (whether it exists is not told), 401 without credentials."""
    visitor = _visitor_or_none(request, session)
    principal = current_principal(request) if visitor is None else None
    if visitor is None and principal is None:
        raise HTTPException(401, "sign in, or send the visitor token")
    upload = uploads.get(session, upload_id)
    room = services.load_room(session, upload.room_id)
    allowed = (visitor is not None and room.visitor_id == visitor.id) or (
        principal is not None
        and (
            principal.can(Permission.MONITOR)
            or (
                principal.agent_id is not None
                and principal.can(Permission.MULTIMEDIA_AGENT)
                and services.is_participant(session, room_id=room.id or 0, agent_id=principal.agent_id)
            )
        )
    )
    if not allowed:
        raise HTTPException(404, "no such image")
    data, mime = uploads.read(upload, data_dir=get_ctx(request).settings.data_dir, thumb=thumb)
    return Response(
        data,
        media_type=mime,
        headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


# --- agent API ------------------------------------------------------------------------------------


@router.get("/agent/me")
def agent_me(
    rt: ChatRuntime = Depends(runtime),
    principal: Principal = require(Permission.MULTIMEDIA_AGENT),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """Chat availability, capacity, load, held rooms (with their last messages), groups and queues."""
    return live.agent_part(session, agent_id=_agent_id(principal), settings=rt.settings, now=time.time())


@router.post("/agent/availability")
def agent_availability(
    body: Availability,
    background: BackgroundTasks,
    rt: ChatRuntime = Depends(runtime),
    principal: Principal = require(Permission.MULTIMEDIA_AGENT),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """Turn chat on or off for oneself (independent of the phone state)."""
    agent_id = _agent_id(principal)
    now = time.time()
    message = assign.set_agent(
        session, agent_id=agent_id, settings=rt.settings, now=now, available=body.available
    )
    out = Outbox(messages=[message], groups=set(assign.agent_groups(session, agent_id=agent_id)))
    _done(session, background, rt, out)
    return message.payload()


@router.get("/agent/rooms")
def agent_rooms(
    principal: Principal = require(Permission.MULTIMEDIA_AGENT), session: Session = Depends(get_session)
) -> list[dict[str, Any]]:
    return [views.room_dict(session, r) for r in services.agent_rooms(session, agent_id=_agent_id(principal))]


@router.post("/rooms/{room_id}/take")
def take_room(
    room_id: int,
    background: BackgroundTasks,
    rt: ChatRuntime = Depends(runtime),
    principal: Principal = require(Permission.MULTIMEDIA_AGENT),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """Pick a waiting room of one's groups from the queue, or accept a room transferred to oneself."""
    out = Outbox()
    move = assign.take(
        session, room_id=room_id, agent_id=_agent_id(principal), now=time.time(), actor=principal.username
    )
    room = services.announce(session, move=move, out=out)
    _done(session, background, rt, out)
    return live.room_summary(session, room)


def _readable_room(session: Session, principal: Principal, room_id: int) -> ChatRoom:
    """A room a staff user may read: supervisors any, agents those they held."""
    room = services.load_room(session, room_id)
    if principal.can(Permission.MONITOR):
        return room
    if principal.agent_id is not None and services.is_participant(
        session, room_id=room_id, agent_id=principal.agent_id
    ):
        return room
    raise HTTPException(404, f"no chat {room_id}")


@router.get("/rooms/{room_id}")
def room_detail(
    room_id: int, principal: Principal = require(*STAFF), session: Session = Depends(get_session)
) -> dict[str, Any]:
    room = _readable_room(session, principal, room_id)
    return live.room_summary(session, room, messages=views.HISTORY_MAX)


@router.get("/rooms/{room_id}/messages")
def room_messages(
    room_id: int,
    after_seq: int = Query(0, ge=0),
    limit: int = Query(100, ge=1, le=views.HISTORY_MAX),
    principal: Principal = require(*STAFF),
    session: Session = Depends(get_session),
) -> list[dict[str, Any]]:
    _readable_room(session, principal, room_id)
    return views.history(session, room_id=room_id, after_seq=after_seq, limit=limit)


@router.post("/rooms/{room_id}/messages", status_code=201)
def agent_message(
    room_id: int,
    body: AgentMessage,
    background: BackgroundTasks,
    rt: ChatRuntime = Depends(runtime),
    principal: Principal = require(Permission.MULTIMEDIA_AGENT),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """Send text, buttons or an image-text card in a room one holds."""
    out = Outbox()
    msg = services.agent_says(
        session,
        room_id=room_id,
        agent_id=_agent_id(principal),
        now=time.time(),
        out=out,
        limit=rt.settings.chat_max_message_chars,
        kind=MessageKind(body.kind),
        text=body.text,
        buttons=[(b.id, b.label) for b in body.buttons],
        card=body.card.model_dump() if body.card else None,
        client_id=body.client_id,
    )
    _done(session, background, rt, out)
    return views.message_dict(msg, sender_name=principal.display_name)


@router.post("/rooms/{room_id}/images", status_code=201)
def agent_image(
    room_id: int,
    background: BackgroundTasks,
    file: Annotated[UploadFile, File(description="PNG, JPEG, GIF or WebP")],
    client_id: Annotated[str | None, Form(max_length=64)] = None,
    rt: ChatRuntime = Depends(runtime),
    principal: Principal = require(Permission.MULTIMEDIA_AGENT),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    agent_id = _agent_id(principal)
    room = services.held_room(session, room_id=room_id, agent_id=agent_id)
    data = file.file.read(rt.settings.chat_upload_max_bytes + 1)
    out = Outbox()
    msg = uploads.store(
        session,
        room=room,
        sender=Sender.AGENT,
        data=data,
        data_dir=rt.settings.data_dir,
        max_bytes=rt.settings.chat_upload_max_bytes,
        now=time.time(),
        out=out,
        agent_id=agent_id,
        client_id=client_id,
    )
    _done(session, background, rt, out)
    return views.message_dict(msg, sender_name=principal.display_name)


@router.post("/rooms/{room_id}/marks")
def agent_marks(
    room_id: int,
    body: Marks,
    background: BackgroundTasks,
    rt: ChatRuntime = Depends(runtime),
    principal: Principal = require(Permission.MULTIMEDIA_AGENT),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    services.held_room(session, room_id=room_id, agent_id=_agent_id(principal))
    moved = services.marks(
        session, room_id=room_id, side=Sender.AGENT, delivered=body.delivered_seq, read=body.read_seq
    )
    _done(session, background, rt, Outbox(messages=[moved] if moved else []))
    return {"moved": moved is not None}


@router.post("/rooms/{room_id}/typing")
def agent_typing(
    room_id: int,
    body: Typing,
    rt: ChatRuntime = Depends(runtime),
    principal: Principal = require(Permission.MULTIMEDIA_AGENT),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    agent_id = _agent_id(principal)
    room = services.held_room(session, room_id=room_id, agent_id=agent_id)
    rt.notifier().publish(
        services.typing(
            session, room=room, sender=Sender.AGENT, typing=body.typing, now=time.time(), agent_id=agent_id
        )
    )
    return {"ok": True}


@router.post("/rooms/{room_id}/transfer")
def transfer_room(
    room_id: int,
    body: Transfer,
    background: BackgroundTasks,
    rt: ChatRuntime = Depends(runtime),
    principal: Principal = require(*STAFF),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """Hand a room to another agent (who accepts it by `take` or by writing) or to a skill group. The
    holder may transfer their room; a supervisor any open room."""
    by = None if principal.can(Permission.MONITOR) else _agent_id(principal)
    out = Outbox()
    move = assign.transfer(
        session,
        room_id=room_id,
        actor=principal.username,
        by_agent_id=by,
        to_agent_id=body.agent_id,
        to_group_id=body.skill_group_id,
        note=body.note,
        now=time.time(),
    )
    room = services.announce(session, move=move, out=out)
    _done(session, background, rt, out)
    return views.room_dict(session, room)


def _end(
    room_id: int,
    event: rooms.RoomEvent,
    body: EndRoom,
    background: BackgroundTasks,
    rt: ChatRuntime,
    principal: Principal,
    session: Session,
) -> dict[str, Any]:
    by = None if principal.can(Permission.MONITOR) and principal.agent_id is None else _agent_id(principal)
    if by is not None and principal.can(Permission.MONITOR):
        room = services.load_room(session, room_id)
        by = by if room.agent_id == by else None  # a supervisor who is also an agent ends any room
    out = Outbox()
    room = services.end(
        session,
        room_id=room_id,
        event=event,
        actor=principal.username,
        agent_id=by,
        now=time.time(),
        out=out,
        note=body.note,
    )
    _done(session, background, rt, out)
    return views.room_dict(session, room)


@router.post("/rooms/{room_id}/resolve")
def resolve_room(
    room_id: int,
    body: EndRoom,
    background: BackgroundTasks,
    rt: ChatRuntime = Depends(runtime),
    principal: Principal = require(Permission.MULTIMEDIA_AGENT),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """The holder marks the chat resolved (completed); the visitor is asked to rate it."""
    return _end(room_id, rooms.RoomEvent.RESOLVE, body, background, rt, principal, session)


@router.post("/rooms/{room_id}/close")
def close_room(
    room_id: int,
    body: EndRoom,
    background: BackgroundTasks,
    rt: ChatRuntime = Depends(runtime),
    principal: Principal = require(*STAFF),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """End the chat unresolved: the holder, or a supervisor (any open room, queued ones too)."""
    return _end(room_id, rooms.RoomEvent.CLOSE, body, background, rt, principal, session)


@router.get("/rooms/{room_id}/suggestions")
def suggestions(
    room_id: int,
    rt: ChatRuntime = Depends(runtime),
    principal: Principal = require(*STAFF),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """The assistant: the top 3 knowledge base answers for the visitor's last question."""
    room = _readable_room(session, principal, room_id)
    question = services.last_visitor_text(session, room_id=room_id)
    knowledge = rt.knowledge(session, room.skill_group_id)
    return {
        "question": question,
        "suggestions": bot_engine.suggestions(question, knowledge=knowledge) if question else [],
    }


@router.post("/rooms/{room_id}/contact")
def link_contact(
    room_id: int,
    body: ContactLink,
    rt: ChatRuntime = Depends(runtime),
    principal: Principal = require(Permission.MULTIMEDIA_AGENT),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """Link the room's visitor to the contact with this phone or e-mail (created when none has it)."""
    room = services.held_room(session, room_id=room_id, agent_id=_agent_id(principal))
    if not principal.can(Permission.CRM):
        raise HTTPException(403, "this needs the crm permission")
    result = crmlink.link(
        session,
        room=room,
        name=body.name,
        phone=body.phone,
        email=body.email,
        region=rt.settings.default_region,
        owner_id=principal.user_id,
    )
    session.commit()
    return result


@router.post("/rooms/{room_id}/crm")
def crm_save(
    room_id: int,
    body: CrmSave,
    principal: Principal = require(Permission.MULTIMEDIA_AGENT),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """One click: the linked contact's tags and a note on this chat."""
    room = _readable_room(session, principal, room_id)
    if not principal.can(Permission.CRM):
        raise HTTPException(403, "this needs the crm permission")
    result = crmlink.save(session, room=room, tags=body.tags, note=body.note, author_id=principal.user_id)
    session.commit()
    return result


@router.get("/contacts/{contact_id}/history")
def contact_history(
    contact_id: int,
    limit: int = Query(100, ge=1, le=500),
    _principal: Principal = require(Permission.CRM),
    session: Session = Depends(get_session),
) -> list[dict[str, Any]]:
    """The contact's calls and chats in one list, newest first (`kind` "call" or "chat")."""
    return crmlink.history(session, contact_id=contact_id, limit=limit)


@router.get("/search")
def search(
    q: str = Query("", max_length=200),
    contact_id: int | None = None,
    agent_id: int | None = None,
    group_id: int | None = None,
    state: str | None = Query(None, max_length=16),
    since: float | None = None,
    until: float | None = None,
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=100_000),
    principal: Principal = require(*STAFF),
    session: Session = Depends(get_session),
) -> list[dict[str, Any]]:
    """Rooms by text, contact, agent, group, state and date (created, epoch seconds). Agents find the
    rooms they held; supervisors every room."""
    only = None if principal.can(Permission.MONITOR) else _agent_id(principal)
    return chat_search.search(
        session,
        text=q,
        contact_id=contact_id,
        agent_id=agent_id,
        group_id=group_id,
        state=state,
        since=since,
        until=until,
        only_agent=only,
        limit=limit,
        offset=offset,
    )


def _inbox_groups(session: Session, principal: Principal) -> list[int] | None:
    if principal.can(Permission.MONITOR):
        return None
    return assign.agent_groups(session, agent_id=_agent_id(principal))


@router.get("/inbox")
def inbox(
    state: str = Query("open", max_length=8),
    principal: Principal = require(*STAFF),
    session: Session = Depends(get_session),
) -> list[dict[str, Any]]:
    """Messages left while nobody was online: one's groups (supervisors: all)."""
    group_ids = _inbox_groups(session, principal)
    if group_ids is None:
        group_ids = [int(g) for g in session.exec(select(SkillGroup.id)).all() if g is not None]
    return crmlink.inbox(session, group_ids=group_ids, state=state)


@router.post("/inbox/{item_id}/done")
def inbox_done(
    item_id: int, principal: Principal = require(*STAFF), session: Session = Depends(get_session)
) -> dict[str, Any]:
    result = crmlink.inbox_done(
        session,
        item_id=item_id,
        group_ids=_inbox_groups(session, principal),
        user_id=principal.user_id,
        now=time.time(),
    )
    session.commit()
    return result


# --- supervisor API -------------------------------------------------------------------------------


@router.get("/monitor")
def monitor(
    rt: ChatRuntime = Depends(runtime),
    _principal: Principal = require(Permission.MONITOR),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """Every open room, every agent's chat state and every group's queue."""
    return live.monitor_part(session, settings=rt.settings, now=time.time())


@router.patch("/agents/{agent_id}")
def patch_agent(
    agent_id: int,
    body: AgentPatch,
    background: BackgroundTasks,
    rt: ChatRuntime = Depends(runtime),
    _principal: Principal = require(Permission.MONITOR, Permission.ADMIN),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """Set an agent's chat capacity, or turn their chat on or off."""
    message = assign.set_agent(
        session,
        agent_id=agent_id,
        settings=rt.settings,
        now=time.time(),
        available=body.available,
        capacity=body.capacity,
    )
    out = Outbox(messages=[message], groups=set(assign.agent_groups(session, agent_id=agent_id)))
    _done(session, background, rt, out)
    return message.payload()


# --- admin API ------------------------------------------------------------------------------------


def _config_dict(group: SkillGroup, config: ChatGroupConfig | None) -> dict[str, Any]:
    base = config.model_dump() if config else {"enabled": False}
    return {**base, "skill_group_id": group.id, "name": group.name, "configured": config is not None}


@router.get("/admin/groups")
def admin_groups(
    _principal: Principal = require(Permission.ADMIN), session: Session = Depends(get_session)
) -> list[dict[str, Any]]:
    return [
        _config_dict(g, session.get(ChatGroupConfig, g.id)) for g in session.exec(select(SkillGroup)).all()
    ]


@router.put("/admin/groups/{group_id}")
def admin_group_put(
    group_id: int,
    body: GroupConfigIn,
    _principal: Principal = require(Permission.ADMIN),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """A group's chat settings: offered in the widget, greeting and bot texts, bot mode, threshold,
    webhook URL (the secret is a setting)."""
    group = session.get(SkillGroup, group_id)
    if group is None:
        raise HTTPException(404, f"no skill group {group_id}")
    if body.bot_mode == "webhook":
        clean_url(body.webhook_url, name="webhook_url")
        if not body.webhook_url:
            raise HTTPException(422, "webhook mode needs webhook_url")
    config = session.get(ChatGroupConfig, group_id) or ChatGroupConfig(skill_group_id=group_id)
    for key, value in body.model_dump().items():
        setattr(config, key, value)
    config.updated_at = time.time()
    session.add(config)
    session.commit()
    return _config_dict(group, config)


@router.get("/admin/kb")
def kb_list(
    group_id: int | None = None,
    _principal: Principal = require(Permission.ADMIN),
    session: Session = Depends(get_session),
) -> list[dict[str, Any]]:
    stmt = select(KbEntry).order_by(col(KbEntry.id))
    if group_id is not None:
        stmt = stmt.where(col(KbEntry.skill_group_id) == group_id)
    return [bot_admin.entry_dict(e) for e in session.exec(stmt).all()]


@router.post("/admin/kb", status_code=201)
def kb_create(
    body: KbEntryIn,
    _principal: Principal = require(Permission.ADMIN),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    entry = bot_admin.save_entry(session, entry_id=None, now=time.time(), **body.model_dump())
    session.commit()
    return bot_admin.entry_dict(entry)


@router.put("/admin/kb/{entry_id}")
def kb_update(
    entry_id: int,
    body: KbEntryIn,
    _principal: Principal = require(Permission.ADMIN),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    entry = bot_admin.save_entry(session, entry_id=entry_id, now=time.time(), **body.model_dump())
    session.commit()
    return bot_admin.entry_dict(entry)


@router.delete("/admin/kb/{entry_id}", status_code=204)
def kb_delete(
    entry_id: int, _principal: Principal = require(Permission.ADMIN), session: Session = Depends(get_session)
) -> Response:
    session.execute(delete(KbEntry).where(col(KbEntry.id) == entry_id))
    session.commit()
    return Response(status_code=204)


@router.post("/admin/kb/test")
def kb_test(
    body: KbTest,
    rt: ChatRuntime = Depends(runtime),
    _principal: Principal = require(Permission.ADMIN),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """What the bot would match for a question in a group: the best entries with their confidence,
    the flow it would start, and whether the threshold is met."""
    knowledge = rt.knowledge(session, body.group_id)
    flow = knowledge.triggers.search(body.question, limit=1)
    return {
        "threshold": knowledge.threshold,
        "entries": bot_engine.suggestions(body.question, knowledge=knowledge),
        "flow": {"flow_id": flow[0].key, "confidence": flow[0].confidence} if flow else None,
    }


@router.get("/admin/flows")
def flow_list(
    _principal: Principal = require(Permission.ADMIN), session: Session = Depends(get_session)
) -> list[dict[str, Any]]:
    return [bot_admin.flow_dict(f) for f in session.exec(select(BotFlow).order_by(col(BotFlow.id))).all()]


@router.post("/admin/flows", status_code=201)
def flow_create(
    body: FlowIn, _principal: Principal = require(Permission.ADMIN), session: Session = Depends(get_session)
) -> dict[str, Any]:
    row = bot_admin.save_flow(
        session,
        flow_id=None,
        skill_group_id=body.skill_group_id,
        name=body.name,
        triggers=body.triggers,
        flow=body.flow,
        enabled=body.enabled,
        now=time.time(),
    )
    session.commit()
    return bot_admin.flow_dict(row)


@router.put("/admin/flows/{flow_id}")
def flow_update(
    flow_id: int,
    body: FlowIn,
    _principal: Principal = require(Permission.ADMIN),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    row = bot_admin.save_flow(
        session,
        flow_id=flow_id,
        skill_group_id=body.skill_group_id,
        name=body.name,
        triggers=body.triggers,
        flow=body.flow,
        enabled=body.enabled,
        now=time.time(),
    )
    session.commit()
    return bot_admin.flow_dict(row)


@router.delete("/admin/flows/{flow_id}", status_code=204)
def flow_delete(
    flow_id: int, _principal: Principal = require(Permission.ADMIN), session: Session = Depends(get_session)
) -> Response:
    session.execute(delete(BotFlow).where(col(BotFlow.id) == flow_id))
    session.commit()
    return Response(status_code=204)


# --- channels -------------------------------------------------------------------------------------


def _channel_receive(
    session: Session, rt: ChatRuntime, inbound: Inbound, group_name: str, out: Outbox
) -> ChatMessage:
    group_id = services.default_group(session, group_name)
    config = services.group_config(session, group_id)
    return receive(
        session,
        inbound=inbound,
        group_id=group_id,
        greeting=greeting_of(config),
        settings=rt.settings,
        now=time.time(),
        out=out,
    )


@router.post("/channels/telegram/webhook", dependencies=[public()])
async def telegram_webhook(request: Request, background: BackgroundTasks) -> dict[str, Any]:
    """Telegram's updates (setWebhook with secret_token); a wrong secret is refused (403) and logged."""
    rt = runtime(request)
    adapter = rt.channels.get("telegram")
    if not isinstance(adapter, TelegramAdapter):
        raise HTTPException(404, "Telegram is not configured")
    if not adapter.verify(request.headers.get(SECRET_HEADER)):
        log.warning(
            "telegram webhook from %s refused: bad secret token",
            request.client.host if request.client else "-",
        )
        raise HTTPException(403, "bad secret token")
    body = await request.body()
    if len(body) > 1024 * 1024:
        raise HTTPException(413, "update too large")
    try:
        update = json.loads(body)
    except ValueError:
        raise HTTPException(400, "the update is not JSON") from None
    import anyio

    return await anyio.to_thread.run_sync(_telegram_update, rt, adapter, update, background)


def _telegram_update(
    rt: ChatRuntime, adapter: TelegramAdapter, update: Any, background: BackgroundTasks
) -> dict[str, Any]:
    try:
        inbound, callback_id = adapter.parse(update)
    except (TelegramError, httpx.HTTPError) as exc:
        log.warning("telegram update %s dropped: %s", update.get("update_id"), exc)
        return {"ok": True}  # acknowledged: Telegram would resend it forever
    if callback_id:
        background.add_task(adapter.answer_callback, callback_id)
    if inbound is None:
        return {"ok": True}
    out = Outbox()
    with Session(rt.engine, expire_on_commit=False) as session:
        try:
            _channel_receive(session, rt, inbound, rt.settings.chat_telegram_group, out)
        except DomainError as exc:
            log.warning("telegram message from %s refused: %s", inbound.user_id, exc.message)
            return {"ok": True}
        session.commit()
    background.add_task(rt.settle, out)
    return {"ok": True}


def _wechat(request: Request) -> WeChatAdapter:
    rt = runtime(request)
    adapter = rt.channels.get("wechat")
    if not isinstance(adapter, WeChatAdapter):
        raise HTTPException(404, "WeChat is not configured")
    q = request.query_params
    if not adapter.verify(q.get("signature", ""), q.get("timestamp", ""), q.get("nonce", "")):
        log.warning(
            "wechat request from %s refused: bad signature", request.client.host if request.client else "-"
        )
        raise HTTPException(403, "bad signature")
    return adapter


@router.get("/channels/wechat", dependencies=[public()])
def wechat_verify(request: Request, echostr: str = Query("", max_length=128)) -> PlainTextResponse:
    """WeChat's server check: a signed GET answered with `echostr`."""
    _wechat(request)
    return PlainTextResponse(echostr)


@router.post("/channels/wechat", dependencies=[public()])
async def wechat_message(request: Request, background: BackgroundTasks) -> PlainTextResponse:
    """One pushed message; the first bot text goes back as the passive reply, the rest through the
    customer-service API."""
    adapter = _wechat(request)
    body = await request.body()
    try:
        fields = parse_xml(body)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    import anyio

    return await anyio.to_thread.run_sync(_wechat_push, runtime(request), adapter, fields, background)


def _wechat_push(
    rt: ChatRuntime, adapter: WeChatAdapter, fields: dict[str, str], background: BackgroundTasks
) -> PlainTextResponse:
    try:
        inbound = adapter.parse(fields)
    except (WeChatError, httpx.HTTPError) as exc:
        log.warning("wechat message %s dropped: %s", fields.get("MsgId"), exc)
        return PlainTextResponse("success")  # acknowledged: WeChat would resend it
    if inbound is None:
        return PlainTextResponse("success")
    out = Outbox()
    with Session(rt.engine, expire_on_commit=False) as session:
        try:
            _channel_receive(session, rt, inbound, rt.settings.chat_wechat_group, out)
        except DomainError as exc:
            log.warning("wechat message from %s refused: %s", inbound.user_id, exc.message)
            return PlainTextResponse("success")
        session.commit()
    # Route, then let the bot answer now (inside WeChat's 5 s), so its first text can be the passive
    # reply: an agent free at once takes the visitor instead of the bot.
    bot_out = Outbox()
    for group_id in sorted(out.groups):
        rt.route_group(group_id, now=time.time(), out=bot_out)
    out.groups.clear()
    for room_id, message_id in out.bot:
        rt.run_bot(room_id, message_id, time.time(), bot_out)
    out.bot.clear()
    reply = ""
    with Session(rt.engine) as session:
        for message_id in list(bot_out.deliver):
            msg = session.get(ChatMessage, message_id)
            if msg is not None and msg.kind == MessageKind.TEXT.value and msg.sender == Sender.BOT.value:
                reply = msg.text
                bot_out.deliver.remove(message_id)
                break
    out.extend(bot_out)
    background.add_task(rt.settle, out)
    if not reply:
        return PlainTextResponse("success")
    xml = reply_xml(fields.get("FromUserName", ""), fields.get("ToUserName", ""), reply, time.time())
    return PlainTextResponse(xml, media_type="application/xml")
