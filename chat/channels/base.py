"""The channel adapter contract. A channel turns its wire into `Inbound` (one visitor message: text, a
button click or an image) which `receive` puts in the visitor's room, and sends `Outgoing` (a reply
by an agent, the bot or the system) back on its wire. The web widget is the first channel: its
inbound is the visitor API and its outbound is the WebSocket hub, so it needs no `send`. Telegram
and WeChat are adapters over their public HTTP APIs (`telegram.py`, `wechat.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlmodel import Session

from callcenter.config import Settings
from chat import services, uploads, views, visitors
from chat.models import Channel, ChatMessage, ChatUpload, MessageKind, Sender


@dataclass(frozen=True)
class Inbound:
    channel: Channel
    user_id: str  # the channel's id of the person (Telegram chat id, WeChat openid)
    name: str = ""
    text: str = ""
    choice: tuple[int, str] | None = None  # (seq of the buttons message, button id)
    image: bytes | None = None
    message_key: str = ""  # the channel's message id (a redelivery is stored once)


@dataclass(frozen=True)
class Outgoing:
    kind: str  # text | buttons | card | image | notice
    text: str = ""
    seq: int = 0
    buttons: list[dict[str, str]] = field(default_factory=list)
    card: dict[str, str] = field(default_factory=dict)
    image: bytes | None = None
    image_mime: str = ""


class ChannelAdapter(Protocol):
    name: str

    def send(self, user_id: str, message: Outgoing) -> None:
        """Deliver one message to the person on this channel; raise on failure (logged by the caller)."""


def outgoing(session: Session, msg: ChatMessage, *, data_dir: Path) -> Outgoing:
    """What a stored message looks like to a channel."""
    data = views.message_dict(msg, for_visitor=True)
    content: dict[str, Any] = data["content"]
    if msg.kind == MessageKind.IMAGE.value:
        upload = session.get(ChatUpload, content.get("upload_id", ""))
        if upload is not None:
            body, mime = uploads.read(upload, data_dir=data_dir)
            return Outgoing("image", seq=msg.seq, image=body, image_mime=mime)
    if msg.kind == MessageKind.BUTTONS.value:
        return Outgoing("buttons", text=msg.text, seq=msg.seq, buttons=list(content.get("buttons", [])))
    if msg.kind == MessageKind.CARD.value:
        return Outgoing("card", text=msg.text, seq=msg.seq, card={k: str(v) for k, v in content.items()})
    return Outgoing("notice" if msg.kind == MessageKind.NOTICE.value else "text", text=msg.text, seq=msg.seq)


def receive(
    session: Session,
    *,
    inbound: Inbound,
    group_id: int,
    greeting: str,
    settings: Settings,
    now: float,
    out: services.Outbox,
) -> ChatMessage:
    """Put one inbound channel message in the visitor's open room (a new room when there is none)."""
    visitor = visitors.channel_visitor(
        session, channel=inbound.channel, external_id=inbound.user_id, name=inbound.name, now=now
    )
    room = services.open_room_of(session, visitor.id or 0)
    if room is None:
        room = services.start(
            session, visitor=visitor, group_id=group_id, now=now, out=out, greeting=greeting
        )
    key = f"{inbound.channel.value}:{inbound.message_key}"[:64] if inbound.message_key else None
    if inbound.choice is not None:
        return services.visitor_clicks(
            session,
            room=room,
            seq=inbound.choice[0],
            button_id=inbound.choice[1],
            now=now,
            out=out,
            client_id=key,
        )
    if inbound.image is not None:
        return uploads.store(
            session,
            room=room,
            sender=Sender.VISITOR,
            data=inbound.image,
            data_dir=settings.data_dir,
            max_bytes=settings.chat_upload_max_bytes,
            now=now,
            out=out,
            client_id=key,
        )
    return services.visitor_says(
        session,
        room=room,
        text=inbound.text,
        now=now,
        out=out,
        limit=settings.chat_max_message_chars,
        client_id=key,
    )


def adapters_for(settings: Settings, redis: Any) -> dict[str, ChannelAdapter]:
    """The adapters the settings configure (a channel without its secrets is off)."""
    from chat.channels.telegram import TelegramAdapter
    from chat.channels.wechat import WeChatAdapter

    out: dict[str, ChannelAdapter] = {}
    if settings.chat_telegram_bot_token.get_secret_value():
        out[Channel.TELEGRAM.value] = TelegramAdapter.from_settings(settings)
    if settings.chat_wechat_app_id and settings.chat_wechat_app_secret.get_secret_value():
        out[Channel.WECHAT.value] = WeChatAdapter.from_settings(settings, redis)
    return out
