"""What an agent types on a call's panel, kept per call until the outcome is saved, and the wrap-up
the agent is in (its end, the hold, "extend"): the services behind the workstation's drafts.

A draft belongs to the agent the call was given to; nobody else reads or writes it. Saving the
outcome (or discarding the draft) settles it: the dialer's wrap-up hold then lets the agent go.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from callcenter.engine import wrapup
from callcenter.errors import Conflict, NotFound
from callcenter.models import Agent, AgentState, Call, CallDraft, Campaign

MANUAL_WRAP_UP_S = 30.0  # as the dialer's, for a call dialled by hand (no task)
MAX_OPEN = 20  # unsaved drafts listed on the workstation, newest first


def _own_call(session: Session, *, call_id: str, agent_id: int) -> Call:
    call = session.get(Call, call_id)
    if call is None or call.agent_id != agent_id:
        raise NotFound(f"no call {call_id} of this agent")
    return call


def keep(session: Session, *, call_id: str, agent_id: int, body: dict[str, Any], now: float) -> CallDraft:
    """Keep what the agent typed on their call (the whole panel, replacing the last draft); a draft
    already settled stays settled until the agent types again, when it is open once more."""
    _own_call(session, call_id=call_id, agent_id=agent_id)
    draft = session.get(CallDraft, call_id)
    if draft is None:
        draft = CallDraft(call_id=call_id, agent_id=agent_id, body=body, updated_at=now)
        session.add(draft)
    else:
        draft.body, draft.updated_at, draft.settled_at = body, now, None
    session.flush()
    return draft


def get(session: Session, *, call_id: str, agent_id: int) -> CallDraft | None:
    _own_call(session, call_id=call_id, agent_id=agent_id)
    return session.get(CallDraft, call_id)


def settle(session: Session, *, call_id: str, agent_id: int, now: float) -> None:
    """The outcome was saved (or the agent discarded the draft): nothing is pending on this call."""
    call = _own_call(session, call_id=call_id, agent_id=agent_id)
    draft = session.get(CallDraft, call_id)
    if draft is None:
        session.add(CallDraft(call_id=call.id, agent_id=agent_id, body={}, updated_at=now, settled_at=now))
    else:
        draft.settled_at = now
    session.flush()


def open_drafts(session: Session, *, agent_id: int) -> list[dict[str, Any]]:
    """The agent's drafts not saved yet, newest first, with the call's number and time."""
    rows = session.exec(
        select(CallDraft, Call)
        .join(Call, col(Call.id) == col(CallDraft.call_id))
        .where(col(CallDraft.agent_id) == agent_id, col(CallDraft.settled_at).is_(None))
        .order_by(col(CallDraft.updated_at).desc())
        .limit(MAX_OPEN)
    ).all()
    return [
        {
            "call_id": d.call_id,
            "number": c.number,
            "at": c.connected_at or c.created_at,
            "updated_at": d.updated_at,
            "body": d.body if isinstance(d.body, dict) else {},
        }
        for d, c in rows
    ]


def _wrap_s(session: Session, campaign_id: int | None) -> tuple[float, bool]:
    task = session.get(Campaign, campaign_id) if campaign_id is not None else None
    return (float(task.wrap_up_s), bool(task.wrap_up_hold)) if task else (MANUAL_WRAP_UP_S, False)


def wrap_view(session: Session, *, agent_id: int) -> dict[str, Any] | None:
    """The agent's wrap-up as the workstation shows it (its end, the hold, extend), or None."""
    agent = session.get(Agent, agent_id)
    if agent is None or agent.state != AgentState.WRAP_UP.value or not agent.call_id:
        return None
    wrap_s, hold = _wrap_s(session, agent.campaign_id)
    draft = session.get(CallDraft, agent.call_id)
    call = session.get(Call, agent.call_id)
    saved = bool((draft and draft.settled_at is not None) or (call and call.disposition))
    v = wrapup.view(
        since=agent.state_since, wrap_s=wrap_s, extra_s=agent.wrap_extra_s, hold=hold, saved=saved
    )
    return {
        "call_id": agent.call_id,
        "ends_at": v.ends_at,
        "hold": v.hold,
        "saved": v.saved,
        "held": v.held,
        "extra_s": v.extra_s,
        "can_extend": v.can_extend,
        "step_s": wrapup.EXTEND_STEP_S,
        "max_extra_s": wrapup.MAX_EXTRA_S,
    }


def extend(session: Session, *, agent_id: int) -> dict[str, Any]:
    """Add one step to the agent's wrap-up (bounded by `wrapup.MAX_EXTRA_S`); Conflict when the
    agent is not in wrap-up or has used it all. A compare-and-set: it never extends a later state."""
    agent = session.get(Agent, agent_id)
    if agent is None:
        raise NotFound(f"no agent {agent_id}")
    if agent.state != AgentState.WRAP_UP.value:
        raise Conflict("only a wrap-up can be extended", field="state")
    extra = wrapup.extended(agent.wrap_extra_s)
    if extra <= agent.wrap_extra_s:
        raise Conflict("this wrap-up cannot be extended any more", field="state")
    done = session.execute(
        update(Agent)
        .where(
            col(Agent.id) == agent_id,
            col(Agent.state) == AgentState.WRAP_UP.value,
            col(Agent.state_since) == agent.state_since,
        )
        .values(wrap_extra_s=extra)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("the wrap-up ended meanwhile", field="state")
    session.flush()
    session.expire(agent)
    view = wrap_view(session, agent_id=agent_id)
    assert view is not None
    return view
