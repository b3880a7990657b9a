"""Request bodies of the chat API (bounded: every text has a length, every list a size)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ChatStart(BaseModel):
    group_id: int
    name: str = Field("", max_length=128)
    email: str = Field("", max_length=254)
    phone: str = Field("", max_length=32)
    page_url: str = Field("", max_length=500)


class VisitorText(BaseModel):
    text: str = Field(min_length=1, max_length=4000)
    client_id: str | None = Field(None, max_length=64)


class VisitorChoice(BaseModel):
    seq: int = Field(ge=1)
    button_id: str = Field(min_length=1, max_length=64)
    client_id: str | None = Field(None, max_length=64)


class Marks(BaseModel):
    delivered_seq: int | None = Field(None, ge=0)
    read_seq: int | None = Field(None, ge=0)


class Typing(BaseModel):
    typing: bool = True


class Survey(BaseModel):
    rating: int = Field(ge=1, le=5)
    comment: str = Field("", max_length=500)


class ContactLink(BaseModel):
    name: str = Field("", max_length=128)
    phone: str = Field("", max_length=32)
    email: str = Field("", max_length=254)


class LeaveMessage(BaseModel):
    group_id: int
    name: str = Field("", max_length=128)
    phone: str = Field("", max_length=32)
    email: str = Field("", max_length=254)
    message: str = Field(min_length=1, max_length=2000)


class ButtonIn(BaseModel):
    id: str = Field(min_length=1, max_length=64)
    label: str = Field(min_length=1, max_length=40)


class CardIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    summary: str = Field("", max_length=1000)
    image_url: str = Field("", max_length=500)
    link: str = Field("", max_length=500)


class AgentMessage(BaseModel):
    kind: Literal["text", "buttons", "card"] = "text"
    text: str = Field("", max_length=4000)
    buttons: list[ButtonIn] = Field(default_factory=list, max_length=8)
    card: CardIn | None = None
    client_id: str | None = Field(None, max_length=64)


class Availability(BaseModel):
    available: bool


class AgentPatch(BaseModel):
    available: bool | None = None
    capacity: int | None = Field(None, ge=1, le=50)


class Transfer(BaseModel):
    agent_id: int | None = None
    skill_group_id: int | None = None
    note: str = Field("", max_length=500)


class EndRoom(BaseModel):
    note: str = Field("", max_length=32)


class CrmSave(BaseModel):
    tags: list[str] | None = Field(None, max_length=20)
    note: str = Field("", max_length=3900)


class GroupConfigIn(BaseModel):
    enabled: bool = True
    greeting: str = Field("", max_length=1000)
    unmatched_text: str = Field("", max_length=1000)
    handoff_text: str = Field("", max_length=1000)
    offline_text: str = Field("", max_length=1000)
    bot_mode: Literal["local", "webhook", "off"] = "local"
    bot_threshold: float = Field(0.5, ge=0.05, le=1.0)
    webhook_url: str = Field("", max_length=500)


class KbEntryIn(BaseModel):
    skill_group_id: int | None = None
    question: str = Field(min_length=1, max_length=500)
    alternatives: list[str] = Field(default_factory=list, max_length=20)
    answer: str = Field(min_length=1, max_length=4000)
    enabled: bool = True


class KbTest(BaseModel):
    group_id: int
    question: str = Field(min_length=1, max_length=500)


class FlowIn(BaseModel):
    skill_group_id: int | None = None
    name: str = Field(min_length=1, max_length=128)
    triggers: list[str] = Field(min_length=1, max_length=20)
    flow: dict[str, Any]
    enabled: bool = True
