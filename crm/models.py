"""Minimal CRM tables: contacts, their phones (E.164, unique, indexed for the screen-pop lookup), tags and
notes. Calls are not copied here: a contact's calls are the `callcenter.models.Call` rows whose number is
one of the contact's phones.

Times are float seconds since the epoch, like the core tables.
"""

from __future__ import annotations

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from callcenter.models import now


class Contact(SQLModel, table=True):
    __tablename__ = "crm_contact"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(default="", max_length=128, index=True)
    company: str = Field(default="", max_length=128)
    email: str = Field(default="", max_length=254)
    owner_id: int | None = Field(default=None, foreign_key="users.id", ondelete="SET NULL")
    created_at: float = Field(default_factory=now)
    updated_at: float = Field(default_factory=now)


class ContactPhone(SQLModel, table=True):
    """One phone of a contact. A number belongs to one contact only: the unique index is what the screen
    pop looks a caller up by, and what stops two agents saving the same new number twice."""

    __tablename__ = "crm_contact_phone"
    __table_args__ = (Index("ux_crm_contact_phone_number", "number", unique=True),)
    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(foreign_key="crm_contact.id", index=True, ondelete="CASCADE")
    number: str = Field(max_length=20)  # E.164, e.g. +8613800138000
    label: str = Field(default="", max_length=32)


class Tag(SQLModel, table=True):
    __tablename__ = "crm_tag"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64)


class ContactTag(SQLModel, table=True):
    __tablename__ = "crm_contact_tag"
    contact_id: int = Field(foreign_key="crm_contact.id", primary_key=True, ondelete="CASCADE")
    tag_id: int = Field(foreign_key="crm_tag.id", primary_key=True, ondelete="CASCADE")


class Note(SQLModel, table=True):
    """A note on a contact, by an author at a time; `call_id` ties it to the call it was taken on."""

    __tablename__ = "crm_note"
    __table_args__ = (Index("ix_crm_note_contact_at", "contact_id", "created_at"),)
    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(foreign_key="crm_contact.id", ondelete="CASCADE")
    author_id: int | None = Field(default=None, foreign_key="users.id", ondelete="SET NULL")
    call_id: str | None = Field(default=None, foreign_key="call.id", max_length=64, ondelete="SET NULL")
    body: str = Field(max_length=4000)
    created_at: float = Field(default_factory=now)
