"""The push path over a real Redis: socket authentication, who receives what, enrichment, reconnect
state, several web processes and a lost subscription."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.engine import Engine
from starlette.websockets import WebSocketDisconnect

from callcenter.bus import Bus
from callcenter.messages import AgentCallEnded, GatewayState, GatewayStatus, PreviewOffer, TaskStats
from callcenter.notifier import Notifier
from tests.conftest import WebFactory, WebHarness
from tests.web import sim
from tests.web.wsclient import Closed, recv, recv_until


def _agents(web: WebHarness) -> dict[str, int]:
    web.user("ann", ["agent"], extension="1001")
    web.user("bob", ["agent"], extension="1002")
    web.user("sue", ["supervisor"])
    return {"ann": sim.agent_id(web.engine, "1001"), "bob": sim.agent_id(web.engine, "1002")}


def _marker(web: WebHarness, agent: int, call_id: str = "marker") -> None:
    """A message for `agent` only: sent after something that must not reach it, it arrives first if
    that something never did (one subscription delivers in publish order)."""
    Notifier(Bus(web.redis)).publish(
        AgentCallEnded(agent_id=agent, call_id=call_id, result="answered", at=time.time())
    )


# --- authentication --------------------------------------------------------------------------------


def test_socket_without_credentials_is_closed_with_4401(web: WebHarness) -> None:
    web.user("ann", ["agent"], extension="1001")
    web.app.state.hub.auth_timeout_s = 0.3
    for first in (None, {"type": "auth", "token": "forged"}, {"type": "ping"}, {"type": "auth"}):
        with web.client.websocket_connect("/ws") as ws:
            if first is not None:
                ws.send_json(first)
            with pytest.raises(Closed) as closed:
                recv(ws)
            assert closed.value.code == 4401
    assert not web.app.state.hub.conns


def test_revoked_token_is_refused(web: WebHarness) -> None:
    uid = web.user("ann", ["agent"], extension="1001")
    token = web.token("ann")
    web.client.patch(
        f"/api/admin/users/{uid}", json={"password": "another-pass-1"}, headers=_admin_headers(web)
    )
    with web.client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "auth", "token": token})
        with pytest.raises(Closed) as closed:
            recv(ws)
    assert closed.value.code == 4401
    # Credentials sent and refused are final: no wait for a first message.
    with (
        web.client.websocket_connect("/ws", headers={"Authorization": f"Bearer {token}"}) as ws,
        pytest.raises(Closed) as closed,
    ):
        recv(ws, timeout=1.0)
    assert closed.value.code == 4401


def _admin_headers(web: WebHarness) -> dict[str, str]:
    web.user("root", ["admin"])
    return web.headers("root")


def test_token_in_first_message_bearer_header_and_cookie_authenticate(web: WebHarness) -> None:
    web.user("ann", ["agent"], extension="1001")
    with web.client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "auth", "token": web.token("ann")})
        hello = recv(ws)
    assert hello["type"] == "hello" and hello["user"]["username"] == "ann" and hello["streams"] == ["agent"]
    with web.client.websocket_connect("/ws", headers=web.headers("ann")) as ws:
        assert recv(ws)["agent"]["extension"] == "1001"
    resp = web.client.post(
        "/login", data={"username": "ann", "password": "password-123"}, follow_redirects=False
    )
    assert resp.status_code == 303
    with web.client.websocket_connect("/ws", headers={"Origin": "http://testserver"}) as ws:
        assert recv(ws)["user"]["username"] == "ann"


def test_cookie_socket_opened_by_another_site_is_refused(web: WebHarness) -> None:
    web.user("ann", ["agent"], extension="1001")
    web.client.post("/login", data={"username": "ann", "password": "password-123"})
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        web.client.websocket_connect("/ws", headers={"Origin": "http://evil.example"}),
    ):
        pass
    assert refused.value.code == 4403


def test_streams_are_what_the_user_may_have(web: WebHarness) -> None:
    _agents(web)
    with web.client.websocket_connect("/ws?streams=monitor", headers=web.headers("ann")) as ws:
        with pytest.raises(Closed) as closed:
            recv(ws)
        assert closed.value.code == 4403
    with (
        web.client.websocket_connect("/ws?streams=agent", headers=web.headers("sue")) as ws,
        pytest.raises(Closed),
    ):
        recv(ws)
    with web.client.websocket_connect("/ws", headers=web.headers("sue")) as ws:
        hello = recv(ws)
    assert hello["streams"] == ["monitor"] and "agent" not in hello
    assert [(a["extension"], a["name"], a["state"]) for a in hello["grid"]] == [
        ("1001", "ann", "offline"),
        ("1002", "bob", "offline"),
    ]


# --- who receives what -----------------------------------------------------------------------------


def test_pop_reaches_only_its_agent_and_monitor_data_only_supervisors(
    web_factory: WebFactory, engine: Engine
) -> None:
    # On both databases: SQLite reads the CRM part inline, PostgreSQL on the hub's thread pool.
    web = web_factory(engine)
    assert web.app.state.hub.inline_hot_reads == (engine.dialect.name == "sqlite")
    ids = _agents(web)
    task = sim.campaign(web.engine, name="Renewals", dispositions=["yes", "no"])
    lead = sim.lead(
        web.engine, campaign_id=task, number="+8613800138000", fields={"plan": "Gold", "姓名": "韩梅梅"}
    )
    with (
        web.client.websocket_connect("/ws", headers=web.headers("ann")) as ann,
        web.client.websocket_connect("/ws", headers=web.headers("bob")) as bob,
        web.client.websocket_connect("/ws", headers=web.headers("sue")) as sue,
    ):
        for ws in (ann, bob, sue):
            assert recv(ws)["type"] == "hello"
        call_id = sim.connect(
            web.engine, web.redis, agent=ids["ann"], number="+8613800138000", campaign_id=task, lead_id=lead
        )
        state = recv(ann)
        assert (state["type"], state["state"], state["call_id"]) == ("agent_state", "on_call", call_id)
        pop = recv(ann)
        assert pop["type"] == "screen_pop" and pop["call_id"] == call_id
        assert pop["lead_fields"] == {"plan": "Gold", "姓名": "韩梅梅"} and pop["campaign_name"] == "Renewals"
        assert pop["dispositions"] == ["yes", "no"]
        assert pop["crm"]["contact"]["id"] is None and pop["crm"]["contact"]["name"] == "韩梅梅"

        row = recv(sue)
        assert (row["type"], row["agent_id"], row["state"]) == ("agent_state", ids["ann"], "on_call")
        assert (row["name"], row["number"], row["campaign_name"]) == ("ann", "+8613800138000", "Renewals")

        # Bob got nothing of Ann's: the next thing on his socket is his own marker.
        _marker(web, ids["bob"], "bob-marker")
        assert recv(bob)["call_id"] == "bob-marker"

        # Monitor data never reaches an agent socket.
        Notifier(Bus(web.redis)).publish(TaskStats(campaign_id=task, dialled=5))
        Notifier(Bus(web.redis)).publish(
            GatewayStatus(gateway="pbx", state=GatewayState.DOWN, detail="lost", at=time.time())
        )
        _marker(web, ids["ann"], "ann-marker")
        assert recv(ann)["call_id"] == "ann-marker"
        assert recv(sue)["type"] == "task_stats" and recv(sue)["type"] == "gateway_status"
    assert not web.app.state.hub.conns and not web.app.state.hub.by_agent


def test_manual_call_pops_like_a_task_call(web: WebHarness) -> None:
    ids = _agents(web)
    with web.client.websocket_connect("/ws", headers=web.headers("bob")) as bob:
        recv(bob)
        call_id = sim.connect(web.engine, web.redis, agent=ids["bob"], number="13800138000")
        pop = recv_until(bob, "screen_pop")
    assert pop["call_id"] == call_id and pop["direction"] == "manual" and pop["campaign_name"] == ""
    assert pop["crm"]["number_e164"] == "+8613800138000" and "interested" in pop["dispositions"]


def test_a_preview_lead_gets_the_crm_part_too(web: WebHarness) -> None:
    ids = _agents(web)
    with web.client.websocket_connect("/ws", headers=web.headers("ann")) as ann:
        recv(ann)
        Notifier(Bus(web.redis)).publish(
            PreviewOffer(
                agent_id=ids["ann"], call_id="p1", number="+8613800138000", lead_fields={"name": "Li Lei"}
            )
        )
        offered = recv(ann)
    assert offered["type"] == "preview" and offered["direction"] == "preview"
    assert offered["crm"]["contact"]["name"] == "Li Lei" and offered["crm"]["calls"] == []


def test_several_web_processes_each_feed_their_own_sockets(web: WebHarness, web_factory: WebFactory) -> None:
    ids = _agents(web)
    other = web_factory(web.engine)
    with (
        web.client.websocket_connect("/ws", headers=web.headers("ann")) as ann_1,
        other.client.websocket_connect("/ws", headers=web.headers("ann")) as ann_2,
        other.client.websocket_connect("/ws", headers=web.headers("bob")) as bob_2,
    ):
        for ws in (ann_1, ann_2, bob_2):
            recv(ws)
        call_id = sim.connect(web.engine, web.redis, agent=ids["ann"], number="+8613800138000")
        assert recv_until(ann_1, "screen_pop")["call_id"] == call_id
        assert recv_until(ann_2, "screen_pop")["call_id"] == call_id
        _marker(web, ids["bob"], "bob-marker")
        assert recv(bob_2)["call_id"] == "bob-marker"


# --- state on (re)connect --------------------------------------------------------------------------


def test_reconnect_mid_call_and_in_wrap_up_rebuilds_the_pop(web_factory: WebFactory, engine: Engine) -> None:
    web = web_factory(engine)
    ids = _agents(web)
    task = sim.campaign(web.engine, name="Renewals")
    lead = sim.lead(web.engine, campaign_id=task, number="+8613800138000", fields={"plan": "Gold"})
    call_id = sim.connect(
        web.engine, web.redis, agent=ids["ann"], number="+8613800138000", campaign_id=task, lead_id=lead
    )
    with web.client.websocket_connect("/ws", headers=web.headers("ann")) as ws:
        hello = recv(ws)
    assert hello["agent"]["state"] == "on_call"
    pop = hello["pop"]
    assert (
        pop["call_id"] == call_id
        and pop["lead_fields"] == {"plan": "Gold"}
        and pop["campaign_name"] == "Renewals"
    )
    assert pop["ended_at"] is None and pop["crm"]["contact"]["phones"] == ["+8613800138000"]

    sim.hang_up(web.engine, web.redis, agent=ids["ann"], call_id=call_id, talk_s=30)
    web.client.post(
        f"/api/workstation/calls/{call_id}/save",
        json={"contact": {"name": "Wang"}, "tags": ["vip"], "disposition": "interested"},
        headers=web.headers("ann"),
    )
    with web.client.websocket_connect("/ws", headers=web.headers("ann")) as ws:
        hello = recv(ws)
    assert hello["agent"]["state"] == "wrap_up"
    pop = hello["pop"]
    assert pop["ended_at"] == pytest.approx(pop["connected_at"] + 30) and pop["result"] == "answered"
    assert pop["disposition"] == "interested" and pop["crm"]["contact"]["name"] == "Wang"
    assert pop["crm"]["contact"]["tags"] == ["vip"]

    web.client.post("/api/agent/state", json={"state": "ready"}, headers=web.headers("ann"))
    with web.client.websocket_connect("/ws", headers=web.headers("ann")) as ws:
        hello = recv(ws)
    assert hello["agent"]["state"] == "ready" and hello["pop"] is None


def test_call_end_carries_todays_counters(web: WebHarness) -> None:
    ids = _agents(web)
    midnight = time.time() - 3600
    with web.client.websocket_connect(f"/ws?day={midnight}", headers=web.headers("ann")) as ws:
        assert recv(ws)["counters"]["calls"] == 0
        call_id = sim.connect(web.engine, web.redis, agent=ids["ann"], number="+8613800138000")
        sim.hang_up(web.engine, web.redis, agent=ids["ann"], call_id=call_id, talk_s=42)
        ended = recv_until(ws, "call_ended")
    assert ended["call_id"] == call_id
    assert ended["counters"] == {
        "since": midnight,
        "calls": 1,
        "manual": 1,
        "talk_s": 42.0,
        "avg_talk_s": 42.0,
        "saved": 0,
    }


def test_lost_subscription_is_restored_and_sockets_get_fresh_state(web: WebHarness) -> None:
    ids = _agents(web)
    with web.client.websocket_connect("/ws", headers=web.headers("ann")) as ws:
        recv(ws)
        assert web.redis.client_kill_filter(_type="pubsub") >= 1
        hello = recv_until(ws, "hello")
        assert hello["agent"]["agent_id"] == ids["ann"]
        call_id = sim.connect(web.engine, web.redis, agent=ids["ann"], number="+8613800138000")
        assert recv_until(ws, "screen_pop")["call_id"] == call_id
