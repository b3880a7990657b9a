"""The workstation's one-click save, and what the next pop of the same number shows."""

from __future__ import annotations

import json
import time

import httpx
from sqlmodel import Session

from callcenter.models import Call
from tests.conftest import WebHarness
from tests.web import sim
from tests.web.wsclient import recv, recv_until


def _save(web: WebHarness, user: str, call_id: str, **body: object) -> httpx.Response:
    return web.client.post(f"/api/workstation/calls/{call_id}/save", json=body, headers=web.headers(user))


def test_save_then_next_pop_of_the_number_shows_what_was_saved(web: WebHarness) -> None:
    web.user("ann", ["agent"], extension="1001")
    ann = sim.agent_id(web.engine, "1001")
    task = sim.campaign(web.engine, name="Renewals", dispositions=["interested", "not interested"])
    lead = sim.lead(web.engine, campaign_id=task, number="+8613800138000", fields={"plan": "Gold"})
    first = sim.connect(
        web.engine,
        web.redis,
        agent=ann,
        number="+8613800138000",
        campaign_id=task,
        lead_id=lead,
        publish=False,
    )
    resp = _save(
        web,
        "ann",
        first,
        contact={"name": "Wang Fang", "company": "ACME", "email": "wf@example.com"},
        tags=["vip", "gold plan"],
        note="Renews in December",
        disposition="interested",
        day=time.time() - 60,
    )
    assert resp.status_code == 200, resp.text
    saved = resp.json()
    assert saved["contact"]["phones"] == ["+8613800138000"] and saved["contact"]["tags"] == [
        "gold plan",
        "vip",
    ]
    assert saved["note"]["body"] == "Renews in December" and saved["note"]["author"] == "ann"
    assert saved["counters"]["calls"] == 1 and saved["counters"]["saved"] == 1
    with Session(web.engine) as s:
        call = s.get(Call, first)
        assert call is not None and call.disposition == "interested"
    sim.hang_up(web.engine, web.redis, agent=ann, call_id=first)

    lead2 = sim.lead(web.engine, campaign_id=task, number="+8613800138000", fields={"plan": "Gold"})
    with web.client.websocket_connect("/ws", headers=web.headers("ann")) as ws:
        recv(ws)
        second = sim.connect(
            web.engine, web.redis, agent=ann, number="+8613800138000", campaign_id=task, lead_id=lead2
        )
        pop = recv_until(ws, "screen_pop")
    crm = pop["crm"]
    assert pop["call_id"] == second
    assert crm["contact"]["id"] == saved["contact"]["id"] and crm["contact"]["name"] == "Wang Fang"
    assert crm["contact"]["tags"] == ["gold plan", "vip"] and crm["contact"]["company"] == "ACME"
    assert [n["body"] for n in crm["notes"]] == ["Renews in December"]
    assert [(c["call_id"], c["disposition"], c["campaign_name"]) for c in crm["calls"]] == [
        (first, "interested", "Renewals")
    ]


def test_save_is_refused_for_another_agents_call_a_foreign_outcome_or_no_extension(web: WebHarness) -> None:
    web.user("ann", ["agent"], extension="1001")
    web.user("bob", ["agent"], extension="1002")
    web.user("sue", ["supervisor"])
    call_id = sim.connect(web.engine, web.redis, agent=sim.agent_id(web.engine, "1001"), number="13800138000")
    assert _save(web, "bob", call_id, disposition="interested").status_code == 404
    bad = _save(web, "ann", call_id, disposition="made up")
    assert bad.status_code == 422 and bad.json()["field"] == "disposition"
    assert _save(web, "sue", call_id).status_code == 409
    email = _save(web, "ann", call_id, contact={"email": "not-an-address"})
    assert email.status_code == 422 and email.json()["field"] == "email"
    assert _save(web, "ann", "no-such-call").status_code == 404


def test_pages_render_for_their_permission(web: WebHarness) -> None:
    web.user("ann", ["agent"], extension="1001")
    web.user("sue", ["supervisor"])
    web.user("root", ["admin"])

    def page(user: str, path: str) -> httpx.Response:
        web.client.cookies.clear()
        web.client.post("/login", data={"username": user, "password": "password-123"})
        return web.client.get(path, follow_redirects=False)

    ws = page("ann", "/workstation")
    assert ws.status_code == 200 and 'id="call-panel"' in ws.text and "1001" in ws.text
    assert 'href="/workstation"' in ws.text and 'href="/monitor"' not in ws.text
    assert page("ann", "/monitor").status_code == 403
    assert page("ann", "/admin/users").status_code == 403
    sup = page("sue", "/workstation")
    assert sup.status_code == 200 and 'id="call-panel"' not in sup.text and "extension" in sup.text
    mon = page("sue", "/monitor")
    assert mon.status_code == 200 and 'id="agents-grid"' in mon.text and '<section id="tasks"' in mon.text
    assert 'href="/admin/users"' not in mon.text
    for path in ("/admin/users", "/admin/roles", "/admin/skill-groups", "/admin/agents"):
        resp = page("root", path)
        assert resp.status_code == 200, path
        assert 'href="/admin/users"' in resp.text
    assert "ann" in page("root", "/admin/users").text
    assert page("root", "/admin").headers["location"] == "/admin/users"
    web.client.cookies.clear()
    assert page("nobody", "/workstation").status_code == 303


def test_pages_speak_chinese(web: WebHarness) -> None:
    web.user("ann", ["agent"], extension="1001")
    web.client.post("/login", data={"username": "ann", "password": "password-123"})
    web.client.cookies.set("lang", "zh")
    text = web.client.get("/workstation").text
    assert "坐席工作台" in text and "就绪" in text and "保存到客户资料" in text
    # The script's strings come as JSON in the page.
    block = text.split('<script type="application/json" id="i18n">', 1)[1].split("</script>", 1)[0]
    strings = json.loads(block)
    assert strings["state.on_call"] == "通话中" and strings["ws.saved"] == "已保存"
