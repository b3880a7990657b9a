"""Running the queue-stage bot on one visitor message: read the room and the group's knowledge, decide
(locally or through the webhook), and apply the actions as messages and moves."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from callcenter.config import Settings
from chat import rooms, services, views
from chat.bot import engine, webhook
from chat.bot.engine import Action, BotState, Buttons, Card, Click, Handoff, Knowledge, Resolve, Say, Texts
from chat.models import (
    BotMode,
    ChatGroupConfig,
    ChatMessage,
    ChatRoom,
    ChatVisitor,
    MessageKind,
    RoomState,
    Sender,
)
from chat.validation import card_payload

log = logging.getLogger(__name__)
HISTORY_SENT = 10  # messages of context sent to an external bot


def texts_of(config: ChatGroupConfig | None) -> Texts:
    return Texts(
        unmatched=(config.unmatched_text if config and config.unmatched_text else engine.DEFAULT_UNMATCHED),
        handoff=(config.handoff_text if config and config.handoff_text else engine.DEFAULT_HANDOFF),
    )


def greeting_of(config: ChatGroupConfig | None) -> str:
    return config.greeting if config and config.greeting else engine.DEFAULT_GREETING


def _said(session: Session, msg: ChatMessage) -> str | Click | None:
    if msg.kind == MessageKind.TEXT.value:
        return msg.text
    if msg.kind == MessageKind.CHOICE.value:
        payload = json.loads(msg.payload)
        target = session.exec(
            select(ChatMessage).where(
                col(ChatMessage.room_id) == msg.room_id, col(ChatMessage.seq) == payload.get("reply_to")
            )
        ).first()
        meta = json.loads(target.payload).get("meta", {}) if target is not None else {}
        return Click(str(payload.get("button_id", "")), meta if isinstance(meta, dict) else {})
    return None


def _webhook_payload(session: Session, room: ChatRoom, msg: ChatMessage, now: float) -> dict[str, Any]:
    visitor = session.get(ChatVisitor, room.visitor_id)
    recent = views.history(session, room_id=room.id or 0, limit=HISTORY_SENT, for_visitor=True)
    return {
        "event": "message",
        "timestamp": int(now),
        "room_id": room.id,
        "group_id": room.skill_group_id,
        "channel": room.channel,
        "visitor": {"id": room.visitor_id, "name": visitor.name if visitor else ""},
        "message": {
            "seq": msg.seq,
            "kind": msg.kind,
            "text": msg.text,
            **({"choice": json.loads(msg.payload)} if msg.kind == MessageKind.CHOICE.value else {}),
        },
        "history": [
            {"seq": m["seq"], "sender": m["sender"], "kind": m["kind"], "text": m["text"]} for m in recent
        ],
    }


def run(
    session: Session,
    *,
    room_id: int,
    message_id: int,
    now: float,
    settings: Settings,
    knowledge: Callable[[Session, int], Knowledge],
    out: services.Outbox,
) -> list[Action]:
    """The bot's turn after one visitor message (nothing once the room has left the queue)."""
    room = services.load_room(session, room_id)
    msg = session.get(ChatMessage, message_id)
    if msg is None or room.state != RoomState.QUEUED.value or room.bot_handoff:
        return []
    config = services.group_config(session, room.skill_group_id)
    mode = BotMode(config.bot_mode) if config else BotMode.LOCAL
    said = _said(session, msg)
    if mode is BotMode.OFF or said is None:
        return []
    state = BotState(room.bot_flow_id, room.bot_step, room.bot_misses, room.bot_handoff)
    texts = texts_of(config)
    if mode is BotMode.WEBHOOK and config is not None:
        try:
            actions = webhook.call(
                config.webhook_url,
                _webhook_payload(session, room, msg, now),
                secret=settings.chat_bot_webhook_secret.get_secret_value(),
                timeout_s=settings.chat_bot_webhook_timeout_s,
            )
        except webhook.WebhookFailed as exc:
            log.warning("chat bot webhook for group %s failed: %s", room.skill_group_id, exc)
            actions = [Say(texts.handoff), Handoff()]
        new_state = BotState(handoff=any(isinstance(a, Handoff) for a in actions))
    else:
        actions, new_state = engine.decide(
            said, state=state, knowledge=knowledge(session, room.skill_group_id), texts=texts
        )
    apply(session, room=room, actions=actions, state=new_state, now=now, out=out)
    return actions


def apply(
    session: Session,
    *,
    room: ChatRoom,
    actions: list[Action],
    state: BotState,
    now: float,
    out: services.Outbox,
) -> None:
    """Post the bot's messages, keep its state on the room, resolve or hand off."""
    assert room.id is not None
    for action in actions:
        if isinstance(action, Say):
            services.post(
                session,
                room=room,
                sender=Sender.BOT,
                kind=MessageKind.TEXT,
                text=action.text,
                now=now,
                out=out,
            )
        elif isinstance(action, Buttons):
            payload: dict[str, Any] = {
                "buttons": [{"id": i, "label": label} for i, label in action.buttons],
                "meta": action.meta,
            }
            services.post(
                session,
                room=room,
                sender=Sender.BOT,
                kind=MessageKind.BUTTONS,
                text=action.text,
                payload=payload,
                now=now,
                out=out,
            )
        elif isinstance(action, Card):
            payload = card_payload(
                {
                    "title": action.title,
                    "summary": action.summary,
                    "image_url": action.image_url,
                    "link": action.link,
                }
            )
            services.post(
                session,
                room=room,
                sender=Sender.BOT,
                kind=MessageKind.CARD,
                text=action.title,
                payload=payload,
                now=now,
                out=out,
            )
    session.execute(
        update(ChatRoom)
        .where(col(ChatRoom.id) == room.id)
        .values(
            bot_flow_id=state.flow_id, bot_step=state.step, bot_misses=state.misses, bot_handoff=state.handoff
        )
    )
    if any(isinstance(a, Resolve) for a in actions):
        move = rooms.apply(
            session,
            room_id=room.id,
            event=rooms.RoomEvent.BOT_RESOLVE,
            actor="bot",
            now=now,
            note="bot_resolved",
            handler="bot",
        )
        services.announce(session, move=move, out=out, survey=True)
    elif any(isinstance(a, Handoff) for a in actions):
        out.groups.add(room.skill_group_id)
