"""The dialer's side of a call, done the way the dialer does it: rows in the database, agent moves with
the compare-and-set table, and bus messages through `Notifier` (the pop built by `pop_payload`)."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from callcenter import agents
from callcenter.agents import AgentEvent
from callcenter.bus import Bus
from callcenter.db import session_scope
from callcenter.messages import AgentCallEnded, AgentStateChanged
from callcenter.models import Agent, Call, CallState, Campaign, CampaignState, Lead, SkillGroup
from callcenter.notifier import Notifier
from callcenter.screenpop import pop_payload

_names = itertools.count(1)


def campaign(engine: Engine, *, name: str = "", dispositions: list[str] | None = None) -> int:
    with session_scope(engine) as s:
        group = SkillGroup(name=f"group-{uuid.uuid4().hex[:8]}")
        s.add(group)
        s.flush()
        assert group.id is not None
        row = Campaign(
            name=name or f"Task {next(_names)}",
            state=CampaignState.RUNNING.value,
            skill_group_id=group.id,
        )
        if dispositions is not None:
            row.dispositions = dispositions
        s.add(row)
        s.flush()
        assert row.id is not None
        return row.id


def lead(engine: Engine, *, campaign_id: int, number: str, fields: dict[str, Any]) -> int:
    with session_scope(engine) as s:
        row = Lead(campaign_id=campaign_id, number=number, fields=json.dumps(fields, ensure_ascii=False))
        s.add(row)
        s.flush()
        assert row.id is not None
        return row.id


def agent_id(engine: Engine, extension: str) -> int:
    with session_scope(engine) as s:
        row = s.exec(select(Agent).where(col(Agent.extension) == extension)).one()
        assert row.id is not None
        return row.id


def _publish_state(notifier: Notifier, engine: Engine, agent: int, reason: str | None = None) -> None:
    with session_scope(engine) as s:
        row = s.get(Agent, agent)
        assert row is not None
        notifier.publish(AgentStateChanged.of_agent(row).model_copy(update={"reason": reason}))


def set_ready(engine: Engine, redis: Any, agent: int) -> None:
    notifier = Notifier(Bus(redis))
    with session_scope(engine) as s:
        agents.apply(s, agent_id=agent, event=AgentEvent.SET_READY, now=time.time())
    _publish_state(notifier, engine, agent)


def miss(engine: Engine, redis: Any, agent: int, campaign_id: int | None = None) -> None:
    """A ready agent is reserved for an answered call and their phone rings unanswered: the dialer
    abandons the call and sets them not ready (`AgentEvent.MISS`), saying why."""
    now = time.time()
    with session_scope(engine) as s:
        agents.apply(s, agent_id=agent, event=AgentEvent.RESERVE, now=now - 2, call_id=str(uuid.uuid4()))
        agents.apply(s, agent_id=agent, event=AgentEvent.MISS, now=now, reason="missed_call")
    _publish_state(Notifier(Bus(redis)), engine, agent, reason="missed_call")


def connect(
    engine: Engine,
    redis: Any,
    *,
    agent: int,
    number: str,
    campaign_id: int | None = None,
    lead_id: int | None = None,
    publish: bool = True,
) -> str:
    """Place, answer and connect a call to `agent` (ready, or idle for a manual call) and pop it."""
    call_id = str(uuid.uuid4())
    now = time.time()
    manual = campaign_id is None
    with session_scope(engine) as s:
        s.add(
            Call(
                id=call_id,
                campaign_id=campaign_id,
                lead_id=lead_id,
                number=number,
                direction="manual" if manual else "outbound",
                state=CallState.CONNECTED.value,
                agent_id=agent,
                created_at=now - 8,
                ringing_at=now - 7,
                answered_at=now - 2,
                agent_at=now - 1,
                connected_at=now,
            )
        )
        s.flush()
        if manual:
            agents.apply(s, agent_id=agent, event=AgentEvent.MANUAL_CALL, now=now, call_id=call_id)
        else:
            # The dialer only routes to ready agents; a test that did not make the agent ready first
            # gets it done here, as the agent would have.
            row = s.get(Agent, agent)
            assert row is not None
            if row.state != "ready":
                agents.apply(s, agent_id=agent, event=AgentEvent.SET_READY, now=now - 2)
            agents.apply(
                s,
                agent_id=agent,
                event=AgentEvent.RESERVE,
                now=now - 1,
                call_id=call_id,
                campaign_id=campaign_id,
            )
            agents.apply(s, agent_id=agent, event=AgentEvent.CONNECT, now=now)
    if publish:
        notifier = Notifier(Bus(redis))
        _publish_state(notifier, engine, agent)
        with session_scope(engine) as s:
            payload = pop_payload(s, call_id)
        assert payload is not None
        notifier.publish(payload)
    return call_id


def hang_up(engine: Engine, redis: Any, *, agent: int, call_id: str, talk_s: float = 42.0) -> None:
    """End the call after `talk_s` seconds of talk (stamped, so counters are exact): the agent goes to
    wrap-up and gets `call_ended`."""
    with session_scope(engine) as s:
        call = s.get(Call, call_id)
        assert call is not None and call.connected_at is not None
        call.state = CallState.ENDED.value
        call.ended_at = call.connected_at + talk_s
        call.result = "answered"
        call.cause = 16
        s.add(call)
        at = call.ended_at
        agents.apply(s, agent_id=agent, event=AgentEvent.HANGUP, now=time.time())
    notifier = Notifier(Bus(redis))
    _publish_state(notifier, engine, agent)
    notifier.publish(AgentCallEnded(agent_id=agent, call_id=call_id, result="answered", at=at))
