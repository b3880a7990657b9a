"""The workstation's drafts and wrap-up: what the agent typed on a call, kept per call until saved
(`callcenter.drafts`), the wrap-up's end with its hold, and "extend"."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from sqlmodel import Session

from callcenter import drafts
from callcenter.accounts import Principal
from callcenter.http import get_session, require
from callcenter.models import Permission
from webui.dialer_client import dialer
from webui.routes.workstation import SaveCall

router = APIRouter(prefix="/api/workstation")


def _agent(principal: Principal) -> int:
    if principal.agent_id is None:
        raise HTTPException(409, "this user has no SIP extension; ask an admin to assign one")
    return principal.agent_id


def _public(draft: Any) -> dict[str, Any]:
    return {
        "call_id": draft.call_id,
        "body": draft.body if isinstance(draft.body, dict) else {},
        "updated_at": draft.updated_at,
        "settled": draft.settled_at is not None,
    }


@router.get("/drafts")
def list_drafts(
    principal: Principal = require(Permission.WORKSTATION), session: Session = Depends(get_session)
) -> list[dict[str, Any]]:
    """The agent's outcomes typed and not saved yet, newest first."""
    return drafts.open_drafts(session, agent_id=_agent(principal))


@router.get("/calls/{call_id}/draft")
def get_draft(
    call_id: str,
    principal: Principal = require(Permission.WORKSTATION),
    session: Session = Depends(get_session),
) -> dict[str, Any] | None:
    draft = drafts.get(session, call_id=call_id, agent_id=_agent(principal))
    return _public(draft) if draft is not None else None


@router.put("/calls/{call_id}/draft")
def put_draft(
    call_id: str,
    body: SaveCall,
    principal: Principal = require(Permission.WORKSTATION),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """Keep the panel as the agent has it now (sent as they type)."""
    draft = drafts.keep(
        session,
        call_id=call_id,
        agent_id=_agent(principal),
        body=body.model_dump(exclude={"day"}),
        now=time.time(),
    )
    return _public(draft)


@router.delete("/calls/{call_id}/draft")
def discard_draft(
    call_id: str,
    request: Request,
    principal: Principal = require(Permission.WORKSTATION),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """The agent drops what they typed: nothing is pending on this call any more."""
    agent_id = _agent(principal)
    drafts.settle(session, call_id=call_id, agent_id=agent_id, now=time.time())
    dialer(request).agent_changed(agent_id)
    return {"ok": True}


@router.get("/wrap")
def get_wrap(
    principal: Principal = require(Permission.WORKSTATION), session: Session = Depends(get_session)
) -> dict[str, Any] | None:
    """The agent's wrap-up (its end, whether it waits for the outcome, extend), or null."""
    return drafts.wrap_view(session, agent_id=_agent(principal))


@router.post("/wrap/extend")
def extend_wrap(
    request: Request,
    principal: Principal = require(Permission.WORKSTATION),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """Add time to the agent's wrap-up (bounded)."""
    agent_id = _agent(principal)
    view = drafts.extend(session, agent_id=agent_id)
    session.commit()
    dialer(request).agent_changed(agent_id)
    return view
