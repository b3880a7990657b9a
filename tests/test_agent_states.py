"""The agent state table: every legal move, every illegal one, and compare-and-set on the row."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from callcenter import accounts
from callcenter.agents import TABLE, AgentEvent, InvalidTransition, apply, next_state
from callcenter.db import session_scope
from callcenter.models import Agent, AgentState
from tests.conftest import WebHarness


@pytest.mark.parametrize("state", list(AgentState))
@pytest.mark.parametrize("event", list(AgentEvent))
def test_table_is_total_and_explicit(state: AgentState, event: AgentEvent) -> None:
    if (state, event) in TABLE:
        assert next_state(state, event) is TABLE[(state, event)]
    else:
        with pytest.raises(InvalidTransition):
            next_state(state, event)


def test_on_call_agent_cannot_go_offline_or_be_reserved() -> None:
    for event in (AgentEvent.LOGOUT, AgentEvent.RESERVE, AgentEvent.SET_READY, AgentEvent.SET_AWAY):
        with pytest.raises(InvalidTransition):
            next_state(AgentState.ON_CALL, event)


def test_outbound_call_cycle() -> None:
    state = AgentState.READY
    for event, expected in [
        (AgentEvent.RESERVE, "reserved"),
        (AgentEvent.CONNECT, "on_call"),
        (AgentEvent.HANGUP, "wrap_up"),
        (AgentEvent.WRAP_UP_DONE, "ready"),
    ]:
        state = next_state(state, event)
        assert state == expected


def _agent(engine: Engine) -> int:
    with session_scope(engine) as s:
        user = accounts.create_user(s, username="ag", password="password-1", roles=["agent"])
        agent = accounts.create_agent(s, user_id=accounts.row_id(user), extension="1001")
        return accounts.row_id(agent)


def test_apply_compare_and_set_on_both_databases(engine: Engine) -> None:
    agent_id = _agent(engine)
    with session_scope(engine) as s:
        apply(s, agent_id=agent_id, event=AgentEvent.SET_READY, now=100.0)
    with session_scope(engine) as s:
        move = apply(
            s,
            agent_id=agent_id,
            event=AgentEvent.RESERVE,
            now=101.0,
            expect=AgentState.READY,
            call_id="c1",
            campaign_id=7,
        )
        assert (move.old, move.new) == (AgentState.READY, AgentState.RESERVED)
    # A second dialer that still believes the agent is ready loses the race.
    with pytest.raises(InvalidTransition), session_scope(engine) as s:
        apply(
            s, agent_id=agent_id, event=AgentEvent.RESERVE, now=101.5, expect=AgentState.READY, call_id="c2"
        )
    with session_scope(engine) as s:
        agent = s.get(Agent, agent_id)
        assert agent is not None
        assert (agent.state, agent.call_id, agent.campaign_id, agent.idle_since) == (
            "reserved",
            "c1",
            7,
            100.0,
        )


def test_agent_sets_own_state_over_the_api(web: WebHarness) -> None:
    web.user("ann", ["agent"], extension="1001")
    h = web.headers("ann")
    assert web.client.get("/api/agent/me", headers=h).json()["state"] == "offline"
    with web.redis.pubsub() as ps:
        ps.psubscribe("cc:*")
        ps.get_message(timeout=1)
        resp = web.client.post("/api/agent/state", json={"state": "ready"}, headers=h)
        assert resp.status_code == 200 and resp.json()["state"] == "ready"
        got = []
        for _ in range(5):
            msg = ps.get_message(timeout=1)
            if msg and msg["type"] == "pmessage":
                got.append(msg["channel"])
    assert {"cc:monitor", "cc:dialer"} <= set(got) and any(c.startswith("cc:agent:") for c in got)
    bad = web.client.post("/api/agent/state", json={"state": "on_call"}, headers=h)
    assert bad.status_code == 422 and "state" in bad.text


def test_user_without_extension_gets_a_clear_409(web: WebHarness) -> None:
    web.user("sup", ["supervisor"])
    resp = web.client.get("/api/agent/me", headers=web.headers("sup"))
    assert resp.status_code == 409 and "extension" in resp.json()["detail"]
