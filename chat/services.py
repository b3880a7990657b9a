"""Chat service functions: starting a chat, every kind of message, ending, marks, history, search and
the grace sweep. Domain errors only; nothing here knows HTTP or sockets.

Every function takes the session first and keyword-only arguments after, and puts what must happen
after the commit into an `Outbox`: bus messages, queues to route, visitor messages for the bot,
messages to send out through a channel. `chat.runtime.ChatRuntime.settle` carries the outbox out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlmodel import Session, col

from callcenter.errors import Conflict, Invalid, NotFound
from callcenter.messages import BusMessage
from callcenter.models import SkillGroup
from chat import rooms
from chat.messages import ChatMarks, ChatMessagePosted, ChatRoomChanged, ChatTyping
from chat.models import (
    OPEN_STATES,
    Channel,
    ChatGroupConfig,
    ChatMessage,
    ChatParticipant,
    ChatRoom,
    ChatVisitor,
    MessageKind,
    RoomState,
    Sender,
    rowcount,
    table_of,
)
from chat.rooms import RoomEvent, RoomMove
from chat.validation import card_payload, clean_buttons, clean_client_id, clean_text, clean_url
from chat.views import agent_name

ROOM = table_of(ChatRoom)
MESSAGE = table_of(ChatMessage)


@dataclass
class Outbox:
    """What to do once the transaction is committed (see `ChatRuntime.settle`)."""

    messages: list[BusMessage] = field(default_factory=list)
    groups: set[int] = field(default_factory=set)  # route these queues, then publish them
    agents: set[int] = field(default_factory=set)  # publish these agents' chat load
    bot: list[tuple[int, int]] = field(default_factory=list)  # (room, message id) for the bot
    deliver: list[int] = field(default_factory=list)  # message ids to send out through their channel

    def extend(self, other: Outbox) -> None:
        self.messages += other.messages
        self.groups |= other.groups
        self.agents |= other.agents
        self.bot += other.bot
        self.deliver += other.deliver


# --- reading --------------------------------------------------------------------------------------


def group_config(session: Session, group_id: int) -> ChatGroupConfig | None:
    return session.get(ChatGroupConfig, group_id)


def load_room(session: Session, room_id: int) -> ChatRoom:
    """The room as it is now in the database (not a stale copy from the session's identity map)."""
    room = session.get(ChatRoom, room_id, populate_existing=True)
    if room is None:
        raise NotFound(f"no chat {room_id}")
    return room


def open_room_of(session: Session, visitor_id: int) -> ChatRoom | None:
    return session.scalars(
        select(ChatRoom)
        .where(col(ChatRoom.visitor_id) == visitor_id, col(ChatRoom.state).in_(OPEN_STATES))
        .order_by(col(ChatRoom.id).desc())
    ).first()


def last_room_of(session: Session, visitor_id: int) -> ChatRoom | None:
    return session.scalars(
        select(ChatRoom).where(col(ChatRoom.visitor_id) == visitor_id).order_by(col(ChatRoom.id).desc())
    ).first()


# --- posting --------------------------------------------------------------------------------------


def post(
    session: Session,
    *,
    room: ChatRoom,
    sender: Sender,
    kind: MessageKind,
    now: float,
    out: Outbox,
    text: str = "",
    payload: dict[str, Any] | None = None,
    agent_id: int | None = None,
    client_id: str | None = None,
) -> ChatMessage:
    """Store one message with the room's next `seq` and queue its bus message (and its delivery
    through the room's channel when it goes to a Telegram or WeChat visitor). A repeated `client_id`
    answers the message stored the first time."""
    assert room.id is not None
    if client_id is not None:
        existing = session.scalars(
            select(ChatMessage).where(
                col(ChatMessage.room_id) == room.id, col(ChatMessage.client_id) == client_id
            )
        ).first()
        if existing is not None:
            return existing
    seq = session.execute(
        update(ROOM)
        .where(ROOM.c.id == room.id)
        .values(last_seq=ROOM.c.last_seq + 1, last_message_at=now)
        .returning(ROOM.c.last_seq)
    ).scalar_one()
    row = ChatMessage(
        room_id=room.id,
        seq=seq,
        at=now,
        sender=sender.value,
        agent_id=agent_id,
        kind=kind.value,
        text=text,
        payload=json.dumps(payload or {}, ensure_ascii=False, separators=(",", ":")),
        client_id=client_id,
    )
    session.add(row)
    session.flush()
    room.last_seq = seq
    visitor_name = ""
    if sender is Sender.VISITOR:
        visitor = session.get(ChatVisitor, room.visitor_id)
        visitor_name = visitor.name if visitor else ""
    name = {
        Sender.AGENT: lambda: agent_name(session, agent_id),
        Sender.BOT: lambda: "Bot",
        Sender.SYSTEM: lambda: "",
        Sender.VISITOR: lambda: visitor_name,
    }[sender]()
    agent_ids = [room.agent_id] if room.agent_id is not None else []
    out.messages.append(ChatMessagePosted.of(row, sender_name=name, agent_ids=agent_ids))
    if room.channel != Channel.WEB.value and sender is not Sender.VISITOR and row.id is not None:
        out.deliver.append(row.id)
    return row


def notice(
    session: Session, *, room: ChatRoom, code: str, text: str, now: float, out: Outbox, **extra: Any
) -> None:
    post(
        session,
        room=room,
        sender=Sender.SYSTEM,
        kind=MessageKind.NOTICE,
        text=text,
        payload={"code": code, **extra},
        now=now,
        out=out,
    )


def announce(session: Session, *, move: RoomMove, out: Outbox, survey: bool = False) -> ChatRoom:
    """After a move: the room's bus message, its system notice, the queues and loads it changed."""
    room = load_room(session, move.room_id)
    visitor = session.get(ChatVisitor, room.visitor_id)
    name = agent_name(session, move.agent_id)
    ended = move.new in rooms.FINAL
    out.messages.append(
        ChatRoomChanged.of_move(
            move,
            agent_name=name,
            visitor_name=visitor.name if visitor else "",
            channel=room.channel,
            survey=ended and survey,
        )
    )
    if move.event in (RoomEvent.ASSIGN, RoomEvent.ACCEPT):
        notice(
            session,
            room=room,
            code="joined",
            text=f"{name or 'An agent'} joined the chat",
            now=move.at,
            out=out,
            agent_name=name,
        )
    elif move.event is RoomEvent.TRANSFER:
        target = name or _group_name(session, move.group_id)
        notice(
            session,
            room=room,
            code="transferred",
            text=f"You are being transferred to {target}",
            now=move.at,
            out=out,
            to=target,
        )
    elif ended:
        code = "completed" if move.new is RoomState.COMPLETED else "closed"
        text = "The chat is resolved. Thank you!" if code == "completed" else "The chat has ended."
        notice(
            session,
            room=room,
            code=code,
            text=text,
            now=move.at,
            out=out,
            reason=move.note or move.event.value,
            survey=survey,
        )
    out.groups |= (
        {move.old_group_id, move.group_id}
        if (move.old in _WAITING or move.new in _WAITING or ended)
        else set()
    )
    out.agents |= {a for a in (move.old_agent_id, move.agent_id) if a is not None}
    if ended or move.new is RoomState.TRANSFERRED:
        out.groups.add(move.group_id)  # a slot was freed (or a room now waits in that group)
    return room


_WAITING = (RoomState.QUEUED, RoomState.TRANSFERRED)


def _group_name(session: Session, group_id: int) -> str:
    group = session.get(SkillGroup, group_id)
    return group.name if group else "another team"


# --- the visitor's side ---------------------------------------------------------------------------


def chat_groups(session: Session) -> list[dict[str, Any]]:
    """The skill groups offered in the widget."""
    rows = session.execute(
        select(col(SkillGroup.id), col(SkillGroup.name))
        .join(ChatGroupConfig, col(ChatGroupConfig.skill_group_id) == col(SkillGroup.id))
        .where(col(ChatGroupConfig.enabled).is_(True))
        .order_by(col(SkillGroup.id))
    ).all()
    return [{"group_id": gid, "name": name} for gid, name in rows]


def default_group(session: Session, name: str = "") -> int:
    """The group that takes a channel's chats: the named one, else the first chat-enabled group."""
    if name:
        gid = session.execute(select(col(SkillGroup.id)).where(col(SkillGroup.name) == name)).scalar()
        if gid is None:
            raise NotFound(f"no skill group {name!r}", field="skill_group")
        return int(gid)
    groups = chat_groups(session)
    if not groups:
        raise Conflict("no skill group has chat enabled", field="group_id")
    return int(groups[0]["group_id"])


def start(
    session: Session,
    *,
    visitor: ChatVisitor,
    group_id: int,
    now: float,
    out: Outbox,
    page_url: str = "",
    greeting: str,
) -> ChatRoom:
    """The visitor's open room, or a new one queued in `group_id` with the bot's greeting."""
    existing = open_room_of(session, visitor.id or 0)
    if existing is not None:
        return existing
    config = group_config(session, group_id)
    if config is None or not config.enabled:
        raise NotFound(f"no chat for group {group_id}", field="group_id")
    room = ChatRoom(
        visitor_id=visitor.id or 0,
        channel=visitor.channel,
        skill_group_id=group_id,
        state=RoomState.QUEUED.value,
        contact_id=visitor.contact_id,
        created_at=now,
        queued_at=now,
        visitor_seen_at=now,
        page_url=clean_url(page_url, name="page_url") if page_url else "",
    )
    session.add(room)
    session.flush()
    assert room.id is not None
    session.add(
        rooms.ChatRoomAudit(room_id=room.id, at=now, actor="visitor", event="created", old="", new=room.state)
    )
    out.messages.append(
        ChatRoomChanged.created(
            room_id=room.id, group_id=group_id, at=now, visitor_name=visitor.name, channel=room.channel
        )
    )
    if config.bot_mode != "off" and greeting:
        post(session, room=room, sender=Sender.BOT, kind=MessageKind.TEXT, text=greeting, now=now, out=out)
    out.groups.add(group_id)
    return room


def visitor_says(
    session: Session,
    *,
    room: ChatRoom,
    text: str,
    now: float,
    out: Outbox,
    limit: int,
    client_id: str | None = None,
) -> ChatMessage:
    """A text from the visitor; while queued the bot gets it too."""
    if not rooms.is_open(room.state):
        raise Conflict("this chat has ended; start a new one", field="state")
    text = clean_text(text, limit=limit)
    msg = post(
        session,
        room=room,
        sender=Sender.VISITOR,
        kind=MessageKind.TEXT,
        text=text,
        now=now,
        out=out,
        client_id=clean_client_id(client_id),
    )
    _after_visitor(room, msg, out)
    return msg


def _after_visitor(room: ChatRoom, msg: ChatMessage, out: Outbox) -> None:
    if room.state in (RoomState.QUEUED.value,) and msg.id is not None:
        out.bot.append((room.id or 0, msg.id))
        out.groups.add(room.skill_group_id)  # the queue shows the last question


def visitor_clicks(
    session: Session,
    *,
    room: ChatRoom,
    seq: int,
    button_id: str,
    now: float,
    out: Outbox,
    client_id: str | None = None,
) -> ChatMessage:
    """The visitor clicked a button of the buttons message `seq`: stored as a choice (its label as the
    text), for the bot while queued or for the agent."""
    if not rooms.is_open(room.state):
        raise Conflict("this chat has ended; start a new one", field="state")
    target = session.scalars(
        select(ChatMessage).where(col(ChatMessage.room_id) == room.id, col(ChatMessage.seq) == seq)
    ).first()
    if target is None or target.kind != MessageKind.BUTTONS.value:
        raise NotFound(f"no buttons message {seq} in this chat", field="seq")
    payload = json.loads(target.payload)
    button = next((b for b in payload.get("buttons", []) if b.get("id") == button_id), None)
    if button is None:
        raise Invalid(f"no button {button_id!r} on message {seq}", field="button_id")
    msg = post(
        session,
        room=room,
        sender=Sender.VISITOR,
        kind=MessageKind.CHOICE,
        text=str(button["label"]),
        payload={"reply_to": seq, "button_id": button_id},
        now=now,
        out=out,
        client_id=clean_client_id(client_id),
    )
    _after_visitor(room, msg, out)
    return msg


def visitor_leaves(session: Session, *, room: ChatRoom, now: float, out: Outbox) -> ChatRoom:
    move = rooms.apply(
        session,
        room_id=room.id or 0,
        event=RoomEvent.VISITOR_LEFT,
        actor="visitor",
        now=now,
        note="visitor_left",
        handler="visitor",
    )
    return announce(session, move=move, out=out, survey=True)


def survey(
    session: Session, *, room: ChatRoom, rating: int, comment: str, now: float, window_s: int
) -> ChatRoom:
    """The visitor's 1-5 rating of an ended chat, once, within the survey window."""
    if room.ended_at is None:
        raise Conflict("a chat is rated once it has ended", field="state")
    if room.surveyed_at is not None:
        raise Conflict("this chat has been rated already", field="rating")
    if now - room.ended_at > window_s:
        raise Conflict("this chat can no longer be rated", field="rating")
    if not 1 <= rating <= 5:
        raise Invalid("rating is 1 to 5", field="rating")
    comment = clean_text(comment, limit=500, name="comment", required=False).strip()
    result = session.execute(
        update(ROOM)
        .where(ROOM.c.id == room.id, ROOM.c.surveyed_at.is_(None))
        .values(satisfaction=rating, satisfaction_comment=comment, surveyed_at=now)
    )
    if rowcount(result) != 1:
        raise Conflict("this chat has been rated already", field="rating")
    return load_room(session, room.id or 0)


# --- the agent's side -----------------------------------------------------------------------------


def held_room(session: Session, *, room_id: int, agent_id: int) -> ChatRoom:
    """A room this agent holds (active) or that was transferred to them; NotFound otherwise."""
    room = load_room(session, room_id)
    if room.agent_id != agent_id or not rooms.is_open(room.state):
        raise NotFound(f"no chat {room_id} held by you")
    return room


def is_participant(session: Session, *, room_id: int, agent_id: int) -> bool:
    return (
        session.execute(
            select(col(ChatParticipant.agent_id)).where(
                col(ChatParticipant.room_id) == room_id, col(ChatParticipant.agent_id) == agent_id
            )
        ).first()
        is not None
    )


def agent_says(
    session: Session,
    *,
    room_id: int,
    agent_id: int,
    now: float,
    out: Outbox,
    limit: int,
    kind: MessageKind = MessageKind.TEXT,
    text: str = "",
    buttons: Sequence[tuple[str, str]] = (),
    card: dict[str, str] | None = None,
    client_id: str | None = None,
) -> ChatMessage:
    """A message from the agent holding the room: text, buttons or a card. A room transferred to the
    agent is accepted by their first message."""
    from chat import assign

    room = held_room(session, room_id=room_id, agent_id=agent_id)
    if room.state == RoomState.TRANSFERRED.value:
        move = assign.take(session, room_id=room_id, agent_id=agent_id, now=now, actor=f"agent:{agent_id}")
        room = announce(session, move=move, out=out)
    client_id = clean_client_id(client_id)
    payload: dict[str, Any] = {}
    if kind is MessageKind.TEXT:
        text = clean_text(text, limit=limit)
    elif kind is MessageKind.BUTTONS:
        text = clean_text(text, limit=1000, required=False)
        payload = {"buttons": clean_buttons(buttons)}
    elif kind is MessageKind.CARD:
        payload = card_payload(card or {})
        text = payload["title"]
    else:
        raise Invalid("an agent sends text, buttons or a card (images are uploaded)", field="kind")
    return post(
        session,
        room=room,
        sender=Sender.AGENT,
        kind=kind,
        text=text,
        payload=payload,
        agent_id=agent_id,
        now=now,
        out=out,
        client_id=client_id,
    )


def end(
    session: Session,
    *,
    room_id: int,
    event: RoomEvent,
    actor: str,
    agent_id: int | None,
    now: float,
    out: Outbox,
    note: str = "",
) -> ChatRoom:
    """Resolve (completed) or close a room. `agent_id` None = a supervisor or the system."""
    if event not in (RoomEvent.RESOLVE, RoomEvent.CLOSE):
        raise Invalid("end a chat by resolve or close", field="event")
    from chat import assign

    assign.lock_room(session, room_id)
    if agent_id is not None:
        held_room(session, room_id=room_id, agent_id=agent_id)
    move = rooms.apply(
        session,
        room_id=room_id,
        event=event,
        actor=actor,
        now=now,
        note=note[:32],
        handler="agent" if agent_id else "system",
    )
    return announce(session, move=move, out=out, survey=True)


def typing(
    session: Session, *, room: ChatRoom, sender: Sender, typing: bool, now: float, agent_id: int | None = None
) -> ChatTyping:
    return ChatTyping(
        room_id=room.id or 0,
        agent_ids=[room.agent_id] if room.agent_id is not None else [],
        sender=sender.value,
        agent_id=agent_id,
        typing=typing,
        at=now,
    )


def marks(
    session: Session, *, room_id: int, side: Sender, delivered: int | None, read: int | None
) -> ChatMarks | None:
    """Move one side's delivered / read watermark up (never down, never past the last message);
    None when nothing moved."""
    prefix = "visitor" if side is Sender.VISITOR else "agent"
    moved = False
    if read is not None:
        delivered = max(delivered or 0, read)  # read implies delivered
    for column, seq in ((f"{prefix}_read_seq", read), (f"{prefix}_delivered_seq", delivered)):
        if seq is None or seq <= 0:
            continue
        result = session.execute(
            update(ROOM)
            .where(ROOM.c.id == room_id, ROOM.c[column] < seq, ROOM.c.last_seq >= seq)
            .values({column: seq})
        )
        moved = moved or bool(rowcount(result))
    if not moved:
        return None
    room = load_room(session, room_id)
    return ChatMarks(
        room_id=room_id,
        agent_ids=[room.agent_id] if room.agent_id is not None else [],
        side=prefix,
        delivered_seq=getattr(room, f"{prefix}_delivered_seq"),
        read_seq=getattr(room, f"{prefix}_read_seq"),
    )


def agent_rooms(session: Session, *, agent_id: int) -> list[ChatRoom]:
    """The open rooms an agent holds or was handed."""
    return list(
        session.scalars(
            select(ChatRoom)
            .where(col(ChatRoom.agent_id) == agent_id, col(ChatRoom.state).in_(OPEN_STATES))
            .order_by(col(ChatRoom.assigned_at))
        )
    )


def last_visitor_text(session: Session, *, room_id: int) -> str:
    row = session.execute(
        select(col(ChatMessage.text))
        .where(
            col(ChatMessage.room_id) == room_id,
            col(ChatMessage.sender) == Sender.VISITOR.value,
            col(ChatMessage.kind) == MessageKind.TEXT.value,
        )
        .order_by(col(ChatMessage.seq).desc())
        .limit(1)
    ).first()
    return str(row[0]) if row else ""
