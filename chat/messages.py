"""The chat module's bus messages, one typed class each (subclasses of `callcenter.messages.BusMessage`),
each built in one place (a `build`/`of` class method) and published on the topics it names
(`callcenter.bus`: `chat:room:<id>`, `chat:group:<id>`, `chat:monitor`).

Who receives what is decided by the hub (`webui.ws`) from these fields:
- on a room topic: the room's visitor sockets get `for_visitor()` (None = not for the visitor), the
  agents listed in `agent_ids` get the message, supervisors watching the room get it, and every chat
  monitor gets `chat_room` (the state changes of all rooms);
- on a group topic: the group's agents and chat monitors get it; a visitor queued in the group gets
  `ChatQueueChanged.for_visitor(room_id)`: only their own position and estimated wait;
- on the monitor topic: chat monitors, and the agent named in `chat_agent`.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from callcenter.bus import CHAT_MONITOR_TOPIC, chat_group_topic, chat_room_topic
from callcenter.messages import BusMessage
from chat.models import ChatMessage
from chat.rooms import RoomMove
from chat.routing import estimate_from_totals


class RoomMessage(BusMessage):
    """A message about one room; `agent_ids` are the agents who receive it."""

    room_id: int
    agent_ids: list[int] = Field(default_factory=list)

    def topics(self) -> tuple[str, ...]:
        return (chat_room_topic(self.room_id),)

    def for_visitor(self) -> dict[str, Any] | None:
        """What the room's visitor sees of this message, or None."""
        return None


class ChatMessagePosted(RoomMessage):
    TYPE: ClassVar[str] = "chat_message"
    seq: int
    message_id: int
    at: float
    sender: str  # visitor | agent | bot | system
    agent_id: int | None = None
    sender_name: str = ""
    kind: str
    text: str = ""
    content: dict[str, Any] = Field(default_factory=dict)  # buttons, card, image, notice code
    client_id: str | None = None

    @classmethod
    def of(cls, row: ChatMessage, *, sender_name: str, agent_ids: list[int]) -> ChatMessagePosted:
        assert row.id is not None
        return cls(
            room_id=row.room_id,
            agent_ids=agent_ids,
            seq=row.seq,
            message_id=row.id,
            at=row.at,
            sender=row.sender,
            agent_id=row.agent_id,
            sender_name=sender_name,
            kind=row.kind,
            text=row.text,
            content=json.loads(row.payload or "{}"),
            client_id=row.client_id,
        )

    def for_visitor(self) -> dict[str, Any] | None:
        return self.payload_for_visitor()

    def payload_for_visitor(self) -> dict[str, Any]:
        out = self.payload()
        out.pop("agent_ids", None)
        out.pop("agent_id", None)
        if self.sender != "visitor":
            out.pop("client_id", None)
        return out


class ChatRoomChanged(RoomMessage):
    """A room moved in the state table (or was created: `event` "created", `old` "")."""

    TYPE: ClassVar[str] = "chat_room"
    event: str
    old: str
    new: str
    at: float
    group_id: int
    old_group_id: int | None = None
    agent_id: int | None = None
    old_agent_id: int | None = None
    agent_name: str = ""
    visitor_name: str = ""
    channel: str = "web"
    actor: str = ""
    note: str = ""  # a transfer note: for staff only
    survey: bool = False  # the visitor is asked for a rating now

    @classmethod
    def of_move(
        cls, move: RoomMove, *, agent_name: str, visitor_name: str, channel: str, survey: bool
    ) -> ChatRoomChanged:
        """A move of the state table; the old and the new agent receive it."""
        return cls(
            room_id=move.room_id,
            agent_ids=sorted({a for a in (move.old_agent_id, move.agent_id) if a is not None}),
            event=move.event.value,
            old=move.old.value,
            new=move.new.value,
            at=move.at,
            group_id=move.group_id,
            old_group_id=move.old_group_id,
            agent_id=move.agent_id,
            old_agent_id=move.old_agent_id,
            agent_name=agent_name,
            visitor_name=visitor_name,
            channel=channel,
            actor=move.actor,
            note=move.note,
            survey=survey,
        )

    @classmethod
    def created(
        cls, *, room_id: int, group_id: int, at: float, visitor_name: str, channel: str
    ) -> ChatRoomChanged:
        """A room was opened (queued)."""
        return cls(
            room_id=room_id,
            event="created",
            old="",
            new="queued",
            at=at,
            group_id=group_id,
            visitor_name=visitor_name,
            channel=channel,
            actor="visitor",
        )

    def for_visitor(self) -> dict[str, Any] | None:
        return {
            "type": self.TYPE,
            "room_id": self.room_id,
            "event": self.event,
            "state": self.new,
            "at": self.at,
            "agent_name": self.agent_name,
            "survey": self.survey,
        }


class ChatTyping(RoomMessage):
    """Someone is typing (never stored)."""

    TYPE: ClassVar[str] = "chat_typing"
    sender: str  # visitor | agent
    agent_id: int | None = None
    typing: bool = True
    at: float

    def for_visitor(self) -> dict[str, Any] | None:
        if self.sender != "agent":
            return None
        return {"type": self.TYPE, "room_id": self.room_id, "typing": self.typing, "at": self.at}


class ChatMarks(RoomMessage):
    """One side's delivered / read watermarks moved: every message of the other side with `seq` at or
    below them has been delivered / read."""

    TYPE: ClassVar[str] = "chat_marks"
    side: str  # the side that received / read: visitor | agent
    delivered_seq: int
    read_seq: int

    def for_visitor(self) -> dict[str, Any] | None:
        return self.payload_for_visitor() if self.side == "agent" else None

    def payload_for_visitor(self) -> dict[str, Any]:
        out = self.payload()
        out.pop("agent_ids", None)
        return out


class QueueEntry(BaseModel):
    room_id: int
    visitor_name: str = ""
    channel: str = "web"
    queued_at: float
    state: str = "queued"  # or transferred (to the group)
    last_text: str = ""


class ChatQueueChanged(BusMessage):
    """A group's queue, in order (at most `QUEUE_SHOWN` rooms), and what the wait estimate needs."""

    TYPE: ClassVar[str] = "chat_queue"
    group_id: int
    rooms: list[QueueEntry] = Field(default_factory=list)
    total: int = 0
    agents_online: int = 0
    free: int = 0  # free slots of the available agents
    capacity: int = 0  # total capacity of the available agents
    handle_s: float | None = None
    at: float = 0.0

    def topics(self) -> tuple[str, ...]:
        return (chat_group_topic(self.group_id),)

    def position(self, room_id: int) -> int | None:
        for i, entry in enumerate(self.rooms, 1):
            if entry.room_id == room_id:
                return i
        return None

    def for_visitor(self, room_id: int) -> dict[str, Any] | None:
        position = self.position(room_id)
        if position is None:
            return None
        return {
            "type": self.TYPE,
            "room_id": room_id,
            "position": position,
            "eta_s": estimate_from_totals(
                position, free=self.free, capacity=self.capacity, handle_s=self.handle_s
            ),
            "agents_online": self.agents_online,
            "at": self.at,
        }


class ChatInboxAdded(BusMessage):
    """A visitor left a message for the group (nobody was online)."""

    TYPE: ClassVar[str] = "chat_inbox"
    group_id: int
    item_id: int
    name: str = ""
    phone: str = ""
    email: str = ""
    body: str = ""
    contact_id: int | None = None
    at: float

    def topics(self) -> tuple[str, ...]:
        return (chat_group_topic(self.group_id),)


class ChatAgentChanged(BusMessage):
    """An agent's chat availability, capacity or load changed."""

    TYPE: ClassVar[str] = "chat_agent"
    agent_id: int
    available: bool
    capacity: int
    load: int
    at: float

    def topics(self) -> tuple[str, ...]:
        return (CHAT_MONITOR_TOPIC,)
