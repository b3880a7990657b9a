"""Sessions end when they should: signing out ends that session on the server (a copied cookie is
dead), and a password change, a deactivation or a role change closes the user's open sockets in every
web process and takes a withdrawn agent out of routing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlmodel import Session

from callcenter.bus import DIALER_TOPIC
from callcenter.models import Agent
from tests.conftest import WebFactory, WebHarness
from tests.web import sim
from tests.web.wsclient import Closed, recv, recv_until

ADMIN_PATCH = "/api/admin/users/{uid}"


def _sign_in(web: WebHarness, username: str) -> str:
    """Sign in with a fresh cookie jar as a browser does; the session cookie's value."""
    web.client.cookies.clear()
    web.login(username)
    cookie = web.client.cookies.get("cc_session")
    assert cookie
    return str(cookie)


def _me(web: WebHarness, cookie: str) -> int:
    web.client.cookies.clear()
    return int(web.client.get("/api/me", headers={"Cookie": f"cc_session={cookie}"}).status_code)


def test_a_cookie_copied_before_sign_out_is_dead_after_it(web: WebHarness) -> None:
    web.user("ann", ["agent"])
    first = _sign_in(web, "ann")
    second = _sign_in(web, "ann")  # the same user on another computer
    assert _me(web, first) == _me(web, second) == 200
    web.client.cookies.set("cc_session", first)
    web.client.headers["X-CSRF-Token"] = web.csrf_token()
    assert web.client.post("/logout", follow_redirects=False).status_code == 303
    assert _me(web, first) == 401  # the copy kept by an attacker no longer works ...
    assert _me(web, second) == 200  # ... and the other session is not touched


def _drain_until_closed(ws: Any, timeout: float = 3.0) -> int:
    with pytest.raises(Closed) as closed:
        while True:
            recv(ws, timeout)
    return closed.value.code


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"password": "another-pass-1"}, 4401),
        ({"is_active": False}, 4401),
        ({"roles": ["supervisor"]}, 4409),  # permissions changed: the browser reconnects
    ],
)
def test_an_account_change_closes_the_users_sockets_in_every_web_process(
    web: WebHarness, web_factory: WebFactory, change: dict[str, Any], code: int
) -> None:
    uid = web.user("ann", ["agent"], extension="1001")
    web.user("bob", ["agent"], extension="1002")
    web.user("root", ["admin"])
    admin = web.headers("root")
    other = web_factory(web.engine)  # a second web process on the same Redis
    with (
        other.client.websocket_connect("/ws", headers=web.headers("ann")) as ann_ws,
        web.client.websocket_connect("/ws", headers=web.headers("bob")) as bob_ws,
    ):
        recv_until(ann_ws, "hello")
        recv_until(bob_ws, "hello")
        resp = web.client.patch(ADMIN_PATCH.format(uid=uid), json=change, headers=admin)
        assert resp.status_code == 200, resp.text
        assert _drain_until_closed(ann_ws) == code
        assert not any(c.principal.username == "ann" for c in other.app.state.hub.conns)
        # Bob's socket is still served.
        sim.set_ready(web.engine, web.redis, sim.agent_id(web.engine, "1002"))
        assert recv_until(bob_ws, "agent_state")["state"] == "ready"


def test_signing_out_closes_that_sessions_sockets_only(web: WebHarness) -> None:
    web.user("ann", ["agent"], extension="1001")
    first = _sign_in(web, "ann")
    second = _sign_in(web, "ann")
    web.client.cookies.clear()
    with (
        web.client.websocket_connect("/ws", headers={"Cookie": f"cc_session={first}"}) as first_ws,
        web.client.websocket_connect("/ws", headers={"Cookie": f"cc_session={second}"}) as second_ws,
    ):
        recv_until(first_ws, "hello")
        recv_until(second_ws, "hello")
        web.client.cookies.set("cc_session", first)
        web.client.headers["X-CSRF-Token"] = web.csrf_token()
        web.client.post("/logout")
        assert _drain_until_closed(first_ws) == 4401
        sim.set_ready(web.engine, web.redis, sim.agent_id(web.engine, "1001"))
        assert recv_until(second_ws, "agent_state")["state"] == "ready"


@pytest.mark.parametrize("change", [{"is_active": False}, {"roles": ["supervisor"]}])
def test_a_withdrawn_agent_is_set_offline_and_the_dialer_told(
    web: WebHarness, change: dict[str, Any]
) -> None:
    uid = web.user("ann", ["agent"], extension="1001")
    ann = sim.agent_id(web.engine, "1001")
    web.user("root", ["admin"])
    admin = web.headers("root")
    sim.set_ready(web.engine, web.redis, ann)
    pubsub = web.redis.pubsub()
    pubsub.subscribe(DIALER_TOPIC)
    confirmed = pubsub.get_message(timeout=2)
    assert confirmed is not None and confirmed["type"] == "subscribe"
    try:
        resp = web.client.patch(ADMIN_PATCH.format(uid=uid), json=change, headers=admin)
        assert resp.status_code == 200, resp.text
        with Session(web.engine) as s:
            agent = s.get(Agent, ann)
            assert agent is not None and agent.state == "offline"
        told = pubsub.get_message(timeout=2)
        assert told is not None and json.loads(told["data"]) == {
            "type": "agent_changed",
            "agent_id": ann,
            "request_id": "",
        }
    finally:
        pubsub.close()


def test_a_name_change_leaves_the_agent_where_they_are(web: WebHarness) -> None:
    uid = web.user("ann", ["agent"], extension="1001")
    ann = sim.agent_id(web.engine, "1001")
    web.user("root", ["admin"])
    admin = web.headers("root")
    sim.set_ready(web.engine, web.redis, ann)
    resp = web.client.patch(ADMIN_PATCH.format(uid=uid), json={"display_name": "Ann B."}, headers=admin)
    assert resp.status_code == 200
    with Session(web.engine) as s:
        agent = s.get(Agent, ann)
        assert agent is not None and agent.state == "ready"
