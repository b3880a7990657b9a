"""What else makes a CRM contact visible to an agent, from the feature packages the CRM may not import
(`crm.routes.ALSO_VISIBLE`): the contacts of the chats they hold, and of the open inbox items (messages
left while nobody was online) of their skill groups - the chat side of "the contact of their current
call"."""

from __future__ import annotations

from typing import Any

from sqlalchemy import union
from sqlmodel import col, select

from callcenter.accounts import Principal
from callcenter.http import AppContext
from callcenter.models import AgentSkill
from chat.models import HELD_STATES, ChatInboxItem, ChatRoom
from crm.routes import ALSO_VISIBLE


def chat_contacts(principal: Principal) -> Any:
    """Contact ids of the agent's held chats and their groups' open inbox items; None for a user who
    is not an agent."""
    if principal.agent_id is None:
        return None
    held = select(ChatRoom.contact_id).where(
        col(ChatRoom.agent_id) == principal.agent_id,
        col(ChatRoom.state).in_(HELD_STATES),
        col(ChatRoom.contact_id).is_not(None),
    )
    groups = select(AgentSkill.skill_group_id).where(col(AgentSkill.agent_id) == principal.agent_id)
    inbox = select(ChatInboxItem.contact_id).where(
        col(ChatInboxItem.skill_group_id).in_(groups),
        col(ChatInboxItem.state) == "open",
        col(ChatInboxItem.contact_id).is_not(None),
    )
    return union(held, inbox)


def install(ctx: AppContext) -> None:
    providers: list[Any] = ctx.extras.setdefault(ALSO_VISIBLE, [])
    if chat_contacts not in providers:
        providers.append(chat_contacts)
