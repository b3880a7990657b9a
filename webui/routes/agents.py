"""The agent's own state (`GET /api/agent/me`, `POST /api/agent/state`) and preview-mode clicks."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field
from sqlmodel import Session

from callcenter import agents as agent_states
from callcenter import reasons
from callcenter.accounts import Principal
from callcenter.http import get_ctx, get_session, require
from callcenter.messages import AgentStateChanged
from callcenter.models import Agent, AgentState, Permission
from callcenter.notifier import Notifier
from webui.dialer_client import dialer

router = APIRouter(prefix="/api/agent")


class AgentMe(BaseModel):
    agent_id: int
    extension: str
    state: str
    since: float
    call_id: str | None
    campaign_id: int | None
    reason: str | None = None


class StateChange(BaseModel):
    state: Literal["ready", "not_ready", "away", "offline"]
    reason: str | None = Field(None, max_length=32)  # why not ready: break, lunch, training, an admin's


def _agent_of(principal: Principal, session: Session) -> Agent:
    if principal.agent_id is None:
        raise HTTPException(409, "this user has no SIP extension; ask an admin to assign one")
    agent = session.get(Agent, principal.agent_id)
    if agent is None:
        raise HTTPException(404, "no such agent")
    return agent


def _me(agent: Agent) -> AgentMe:
    assert agent.id is not None
    return AgentMe(
        agent_id=agent.id,
        extension=agent.extension,
        state=agent.state,
        since=agent.state_since,
        call_id=agent.call_id,
        campaign_id=agent.campaign_id,
        reason=agent.state_reason,
    )


@router.get("/me")
def get_me(
    principal: Principal = require(Permission.WORKSTATION), session: Session = Depends(get_session)
) -> AgentMe:
    return _me(_agent_of(principal, session))


@router.post("/state")
def set_state(
    body: StateChange,
    request: Request,
    principal: Principal = require(Permission.CALLCENTER_AGENT),
    session: Session = Depends(get_session),
) -> AgentMe:
    """Set ready / not ready (with a reason) / away / offline. Refused (409) while reserved or on a
    call. A not-ready reason is kept on the row (the monitor shows it) and in the state log."""
    import time

    agent = _agent_of(principal, session)
    event = agent_states.AGENT_CHOICES[AgentState(body.state)]
    reason = reasons.check(session, body.reason) if body.state == AgentState.NOT_READY.value else None
    move = agent_states.apply(session, agent_id=agent.id or 0, event=event, now=time.time(), reason=reason)
    session.commit()
    session.refresh(agent)
    Notifier(get_ctx(request).bus).publish(AgentStateChanged.of_agent(agent))
    # Every change, not only to ready: the dialer must never route to an agent who just left.
    dialer(request).agent_changed(move.agent_id)
    return _me(agent)


@router.post("/preview/{call_id}/dial")
async def preview_dial(
    call_id: str, request: Request, principal: Principal = require(Permission.CALLCENTER_AGENT)
) -> dict[str, object]:
    """Dial the lead the dialer offered this agent in preview mode; it is connected to them on answer."""
    if principal.agent_id is None:
        raise HTTPException(409, "this user has no SIP extension")
    await dialer(request).preview_dial(call_id=call_id, agent_id=principal.agent_id)
    return {"ok": True}


@router.post("/preview/{call_id}/skip")
async def preview_skip(
    call_id: str, request: Request, principal: Principal = require(Permission.CALLCENTER_AGENT)
) -> dict[str, object]:
    """Pass on an offered lead (it goes back to the list; the agent gets the next one)."""
    if principal.agent_id is None:
        raise HTTPException(409, "this user has no SIP extension")
    await dialer(request).preview_skip(call_id=call_id, agent_id=principal.agent_id)
    return {"ok": True}
