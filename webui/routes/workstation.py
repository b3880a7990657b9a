"""The agent workstation: the page, and the one-click save of a call's outcome to the CRM.

Everything live on the page (state, pops, call end, counters) comes over `/ws`; the state switch uses
`POST /api/agent/state` (webui.routes.agents).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field
from sqlmodel import Session

from callcenter import drafts
from callcenter.accounts import Principal
from callcenter.http import get_ctx, get_session, require
from callcenter.models import Permission
from crm import services as crm
from webui import live
from webui.i18n import keys_with_prefix
from webui.templating import render

router = APIRouter()

# Translation keys the workstation's script uses (rendered into the page as JSON).
JS_KEYS = keys_with_prefix("ws.", "state.", "live.", "dir.", "result.", "reason.")


class ContactIn(BaseModel):
    name: str = Field("", max_length=128)
    company: str = Field("", max_length=128)
    email: str = Field("", max_length=254)


class SaveCall(BaseModel):
    """Everything the agent fills on the call panel, saved with one click."""

    contact: ContactIn = Field(default_factory=ContactIn)
    tags: list[str] = Field(default_factory=list, max_length=crm.MAX_TAGS)
    note: str = Field("", max_length=4000)
    disposition: str = Field("", max_length=64)
    day: float | None = None  # the browser's local midnight, for the counters it gets back


@router.get("/workstation")
def page(request: Request, principal: Principal = require(Permission.WORKSTATION)) -> Any:
    return render(request, "workstation.html", {"active": "workstation", "js_keys": JS_KEYS})


@router.post("/api/workstation/calls/{call_id}/save")
def save_call(
    call_id: str,
    body: SaveCall,
    request: Request,
    principal: Principal = require(Permission.WORKSTATION),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """Upsert the contact by the call's number, set its tags, add the note, set the call's outcome.
    Answers what was saved and the agent's counters for today."""
    if principal.agent_id is None:
        raise HTTPException(409, "this user has no SIP extension; ask an admin to assign one")
    if not principal.can(Permission.CRM):
        raise HTTPException(403, "this needs the crm permission")
    saved = crm.save_call_outcome(
        session,
        call_id=call_id,
        agent_id=principal.agent_id,
        user_id=principal.user_id,
        outcome=crm.CallOutcome(
            contact=crm.ContactFields(
                name=body.contact.name, company=body.contact.company, email=body.contact.email, tags=body.tags
            ),
            disposition=body.disposition,
            note=body.note,
        ),
        region=get_ctx(request).settings.default_region,
    )
    now = time.time()
    drafts.settle(session, call_id=call_id, agent_id=principal.agent_id, now=now)
    day = body.day if body.day is not None and now - 36 * 3600 <= body.day <= now else now - now % 86400
    session.flush()
    saved["counters"] = live.today_counters(session, agent_id=principal.agent_id, since=day)
    return saved
