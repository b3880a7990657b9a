"""Chat tables. Times are float seconds since the epoch, like the core tables; enums are stored as their
string values; structured fields (buttons, card, flow steps, alternative phrasings) are JSON text.

- `ChatVisitor`     a person on a channel (the web widget, a Telegram chat, a WeChat openid)
- `ChatRoom`        one conversation: its state (`chat.rooms`), skill group, agent, bot stage, marks,
                    survey and CRM contact
- `ChatRoomAudit`   one row per state move (who, when, from, to, event)
- `ChatParticipant` every agent who held the room (history, search, access to its images)
- `ChatMessage`     every message, numbered per room (`seq`)
- `ChatUpload`      an image sent in a room, stored under the data folder
- `ChatAgent`       an agent's chat availability, capacity and idle time (routing reads it)
- `ChatGroupConfig` per skill group: greeting and bot texts, bot mode, threshold, webhook
- `KbEntry`, `BotFlow`  the local bot's knowledge base and multi-turn flows
- `ChatInboxItem`   a message left while nobody was online, for the group's inbox
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import Index, Table, UniqueConstraint
from sqlmodel import Field, SQLModel

from callcenter.models import now
from crm.models import Contact, Note

# The CRM tables chat rows point at (importing them registers them with the metadata).
CONTACT_ID = f"{Contact.__tablename__}.id"
NOTE_ID = f"{Note.__tablename__}.id"


def table_of(model: type[SQLModel]) -> Table:
    """The Core table of a model: compare-and-set UPDATEs, counts and joins are written on it."""
    return SQLModel.metadata.tables[str(model.__tablename__)]


def rowcount(result: Any) -> int:
    """Rows an UPDATE matched (the compare-and-set's verdict)."""
    return int(result.rowcount)


class RoomState(StrEnum):
    QUEUED = "queued"  # no agent yet; the visitor may keep typing; the bot talks
    ACTIVE = "active"  # an agent holds the room
    TRANSFERRED = "transferred"  # handed to another agent or group, who takes it over
    CLOSED = "closed"  # ended unresolved, or the visitor left
    COMPLETED = "completed"  # ended resolved (by an agent or the bot)


OPEN_STATES = (RoomState.QUEUED.value, RoomState.ACTIVE.value, RoomState.TRANSFERRED.value)
HELD_STATES = (RoomState.ACTIVE.value, RoomState.TRANSFERRED.value)  # count against an agent's capacity


class Channel(StrEnum):
    WEB = "web"
    TELEGRAM = "telegram"
    WECHAT = "wechat"


class Sender(StrEnum):
    VISITOR = "visitor"
    AGENT = "agent"
    BOT = "bot"
    SYSTEM = "system"


class MessageKind(StrEnum):
    TEXT = "text"
    IMAGE = "image"
    BUTTONS = "buttons"  # a choice list; the visitor's click comes back as a `choice`
    CHOICE = "choice"  # the visitor clicked a button
    CARD = "card"  # image-text card: title, summary, image, link
    NOTICE = "notice"  # system notice: joined, transferred, closed ...


class ChatVisitor(SQLModel, table=True):
    __tablename__ = "chat_visitor"
    __table_args__ = (UniqueConstraint("channel", "external_id", name="ux_chat_visitor_channel_external"),)
    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(default=Channel.WEB.value, max_length=16)
    # The channel's id of this person (Telegram chat id, WeChat openid); a random key for the web.
    external_id: str = Field(max_length=128)
    # Part of every visitor token: changing it revokes the tokens issued before.
    nonce: str = Field(max_length=32)
    name: str = Field(default="", max_length=128)
    email: str = Field(default="", max_length=254)
    phone: str = Field(default="", max_length=32)
    contact_id: int | None = Field(default=None, foreign_key=CONTACT_ID, ondelete="SET NULL")
    created_at: float = Field(default_factory=now)
    last_seen_at: float = Field(default_factory=now)


class ChatRoom(SQLModel, table=True):
    __tablename__ = "chat_room"
    __table_args__ = (
        Index("ix_chat_room_queue", "skill_group_id", "state", "queued_at"),
        Index("ix_chat_room_agent_state", "agent_id", "state"),
        Index("ix_chat_room_visitor", "visitor_id", "state"),
    )
    id: int | None = Field(default=None, primary_key=True)
    visitor_id: int = Field(foreign_key="chat_visitor.id", ondelete="CASCADE")
    channel: str = Field(default=Channel.WEB.value, max_length=16)
    skill_group_id: int = Field(foreign_key="skill_group.id")
    state: str = Field(default=RoomState.QUEUED.value, max_length=16)
    # The agent holding the room (active) or the one it was transferred to (transferred); None while
    # queued or transferred to a group.
    agent_id: int | None = Field(default=None, foreign_key="agent.id", ondelete="SET NULL")
    handler: str = Field(default="", max_length=8)  # who ended it: agent | bot | visitor | system
    contact_id: int | None = Field(default=None, foreign_key=CONTACT_ID, ondelete="SET NULL", index=True)
    created_at: float = Field(default_factory=now)
    queued_at: float = Field(default_factory=now)  # queue order; kept across a transfer to a group
    assigned_at: float | None = None  # when the current agent got it
    first_assigned_at: float | None = None
    ended_at: float | None = None
    close_reason: str = Field(default="", max_length=32)
    # Grace period: a web visitor whose sockets are all gone since before now - grace is gone.
    visitor_seen_at: float = Field(default_factory=now)
    last_seq: int = 0
    last_message_at: float | None = None
    # Delivered / read marks, as watermarks of `seq`: what each side has received and read.
    visitor_delivered_seq: int = 0
    visitor_read_seq: int = 0
    agent_delivered_seq: int = 0
    agent_read_seq: int = 0
    # Bot stage (queued only): a running flow and its step, unanswered questions, a hand-off asked.
    bot_flow_id: int | None = None
    bot_step: str = Field(default="", max_length=64)
    bot_misses: int = 0
    bot_handoff: bool = False
    transfer_note: str = Field(default="", max_length=500)
    satisfaction: int | None = None  # 1-5, asked when the room ends
    satisfaction_comment: str = Field(default="", max_length=500)
    surveyed_at: float | None = None
    page_url: str = Field(default="", max_length=500)


class ChatRoomAudit(SQLModel, table=True):
    """One row per state move of a room."""

    __tablename__ = "chat_room_audit"
    id: int | None = Field(default=None, primary_key=True)
    room_id: int = Field(foreign_key="chat_room.id", index=True, ondelete="CASCADE")
    at: float = Field(default_factory=now)
    actor: str = Field(max_length=64)
    event: str = Field(max_length=16)
    old: str = Field(max_length=16)
    new: str = Field(max_length=16)
    agent_id: int | None = None
    note: str = Field(default="", max_length=500)


class ChatParticipant(SQLModel, table=True):
    """An agent who held (or was handed) a room: their history, search and the room's images."""

    __tablename__ = "chat_participant"
    room_id: int = Field(foreign_key="chat_room.id", primary_key=True, ondelete="CASCADE")
    agent_id: int = Field(foreign_key="agent.id", primary_key=True, index=True, ondelete="CASCADE")
    joined_at: float = Field(default_factory=now)
    left_at: float | None = None


class ChatMessage(SQLModel, table=True):
    __tablename__ = "chat_message"
    __table_args__ = (
        UniqueConstraint("room_id", "seq", name="ux_chat_message_room_seq"),
        UniqueConstraint("room_id", "client_id", name="ux_chat_message_room_client"),
        Index("ix_chat_message_at", "at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    room_id: int = Field(foreign_key="chat_room.id", ondelete="CASCADE")
    seq: int
    at: float = Field(default_factory=now)
    sender: str = Field(max_length=8)  # Sender
    agent_id: int | None = Field(default=None, foreign_key="agent.id", ondelete="SET NULL")
    kind: str = Field(max_length=8)  # MessageKind
    text: str = Field(default="", max_length=4000)  # plain text, never HTML; the browser escapes it
    payload: str = Field(default="{}", max_length=20000)  # JSON: buttons, card, image, notice code
    client_id: str | None = Field(default=None, max_length=64)  # the sender's idempotency key


class ChatUpload(SQLModel, table=True):
    """An image sent in a room. `id` is random (not guessable); access is checked on every read."""

    __tablename__ = "chat_upload"
    id: str = Field(primary_key=True, max_length=32)
    room_id: int = Field(foreign_key="chat_room.id", index=True, ondelete="CASCADE")
    sender: str = Field(max_length=8)
    mime: str = Field(max_length=32)
    size: int
    width: int
    height: int
    path: str = Field(max_length=255)  # relative to the data folder
    thumb_path: str = Field(default="", max_length=255)
    sha256: str = Field(max_length=64)
    created_at: float = Field(default_factory=now)


class ChatAgent(SQLModel, table=True):
    """An agent's chat side: the availability toggle, how many rooms at once, idle since when."""

    __tablename__ = "chat_agent"
    agent_id: int = Field(foreign_key="agent.id", primary_key=True, ondelete="CASCADE")
    available: bool = False
    capacity: int = 3
    available_since: float | None = None
    # Routing prefers the least busy, then the longest idle: the later of becoming available and the
    # last room given to them.
    idle_since: float = Field(default_factory=now)


class BotMode(StrEnum):
    LOCAL = "local"  # the knowledge base and flows here
    WEBHOOK = "webhook"  # an external bot over a signed HTTP webhook
    OFF = "off"


class ChatGroupConfig(SQLModel, table=True):
    """Chat settings of a skill group. A group is offered in the widget only when `enabled`."""

    __tablename__ = "chat_group_config"
    skill_group_id: int = Field(foreign_key="skill_group.id", primary_key=True, ondelete="CASCADE")
    enabled: bool = True
    greeting: str = Field(default="", max_length=1000)
    unmatched_text: str = Field(default="", max_length=1000)
    handoff_text: str = Field(default="", max_length=1000)
    offline_text: str = Field(default="", max_length=1000)
    bot_mode: str = Field(default=BotMode.LOCAL.value, max_length=8)
    bot_threshold: float = 0.5
    webhook_url: str = Field(default="", max_length=500)
    updated_at: float = Field(default_factory=now)


class KbEntry(SQLModel, table=True):
    """A question and its answer; `alternatives` (JSON list) are other ways of asking it."""

    __tablename__ = "chat_kb_entry"
    id: int | None = Field(default=None, primary_key=True)
    skill_group_id: int | None = Field(
        default=None, foreign_key="skill_group.id", index=True, ondelete="CASCADE"
    )
    question: str = Field(max_length=500)
    alternatives: str = Field(default="[]", max_length=10000)
    answer: str = Field(max_length=4000)
    enabled: bool = True
    updated_at: float = Field(default_factory=now)


class BotFlow(SQLModel, table=True):
    """A multi-turn flow: started when a visitor's question matches a trigger, then a small tree of
    steps (`chat.bot.flows`), JSON in `steps`."""

    __tablename__ = "chat_bot_flow"
    id: int | None = Field(default=None, primary_key=True)
    skill_group_id: int | None = Field(
        default=None, foreign_key="skill_group.id", index=True, ondelete="CASCADE"
    )
    name: str = Field(max_length=128)
    triggers: str = Field(default="[]", max_length=10000)
    steps: str = Field(max_length=50000)
    enabled: bool = True
    updated_at: float = Field(default_factory=now)


class ChatInboxItem(SQLModel, table=True):
    """A message left on the widget when no agent was online: a CRM note and an item to call back."""

    __tablename__ = "chat_inbox"
    __table_args__ = (Index("ix_chat_inbox_group_state", "skill_group_id", "state", "created_at"),)
    id: int | None = Field(default=None, primary_key=True)
    skill_group_id: int = Field(foreign_key="skill_group.id", ondelete="CASCADE")
    room_id: int | None = Field(default=None, foreign_key="chat_room.id", ondelete="SET NULL")
    visitor_id: int | None = Field(default=None, foreign_key="chat_visitor.id", ondelete="SET NULL")
    contact_id: int | None = Field(default=None, foreign_key=CONTACT_ID, ondelete="SET NULL")
    note_id: int | None = Field(default=None, foreign_key=NOTE_ID, ondelete="SET NULL")
    name: str = Field(default="", max_length=128)
    phone: str = Field(default="", max_length=32)
    email: str = Field(default="", max_length=254)
    body: str = Field(max_length=2000)
    state: str = Field(default="open", max_length=8)  # open | done
    created_at: float = Field(default_factory=now)
    done_by: int | None = Field(default=None, foreign_key="users.id", ondelete="SET NULL")
    done_at: float | None = None
