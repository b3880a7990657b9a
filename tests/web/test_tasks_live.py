"""What the task pages and the monitor rely on, without a browser: the calls-per-minute history, the
gateway and group names on the task API, the monitor's `hello` with every live task's numbers, the
agent's `hello` with a pending preview, the opt-in `tasks` stream, where `/` lands each role, and a
web -> dialer request with no dialer running."""

from __future__ import annotations

import time
import types
import uuid

import pytest

from callcenter import accounts
from callcenter.bus import Bus
from callcenter.db import session_scope
from callcenter.messages import GatewayState, GatewayStatus, TaskStateChanged, TaskStats
from callcenter.models import Agent, Call, CallState, Campaign, CampaignState, GatewayRow, Lead
from callcenter.notifier import Notifier
from tests.conftest import WebHarness
from tests.web import sim
from tests.web.wsclient import recv, recv_until


def _task(
    web: WebHarness, *, state: CampaignState = CampaignState.RUNNING, gateway_id: int | None = None
) -> int:
    with session_scope(web.engine) as s:
        group = accounts.create_skill_group(s, name=f"g-{uuid.uuid4().hex[:6]}")
        row = Campaign(
            name="Renewals", state=state.value, skill_group_id=accounts.row_id(group), gateway_id=gateway_id
        )
        s.add(row)
        s.flush()
        assert row.id is not None
        s.add(Lead(campaign_id=row.id, number="+8613800000001"))
        return row.id


def test_history_counts_calls_per_minute_over_the_window(
    web: WebHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    web.user("sue", ["supervisor"])
    task = _task(web)
    now = time.time()
    # The route reads the clock again: pinned to `now`, a minute boundary passing meanwhile cannot
    # shift its window against the rows written here.
    monkeypatch.setattr("webui.routes.tasks.time", types.SimpleNamespace(time=lambda: now))
    minute = now // 60 * 60
    rows = [
        # created, answered, connected, ended, result
        (minute + 1, minute + 3, minute + 4, minute + 30, "answered"),
        (minute + 2, minute + 5, None, minute + 8, "abandoned"),
        (minute - 60 + 1, None, None, minute - 60 + 20, "no_answer"),
        (minute - 7200, minute - 7190, minute - 7189, minute - 7000, "answered"),  # two hours ago
    ]
    with session_scope(web.engine) as s:
        for created, answered, connected, ended, result in rows:
            s.add(
                Call(
                    id=str(uuid.uuid4()),
                    campaign_id=task,
                    number="+8613800000001",
                    state=CallState.ENDED.value,
                    created_at=created,
                    answered_at=answered,
                    connected_at=connected,
                    ended_at=ended,
                    result=result,
                )
            )
        s.add(Call(id="offered", campaign_id=task, number="+8613800000001", state="preview", created_at=now))
    resp = web.client.get(f"/api/tasks/{task}/history?minutes=60", headers=web.headers("sue"))
    assert resp.status_code == 200, resp.text
    buckets = resp.json()["buckets"]
    assert len(buckets) == 60 and buckets[-1]["t"] == minute and buckets[0]["t"] == minute - 59 * 60
    last, before = buckets[-1], buckets[-2]
    assert (last["dialled"], last["answered"], last["connected"], last["abandoned"]) == (2, 2, 1, 1)
    assert last["abandon_pct"] == 50.0
    assert (before["dialled"], before["abandon_pct"]) == (1, None)
    assert sum(b["dialled"] for b in buckets) == 3  # not the one two hours ago, nor the preview
    assert (
        web.client.get(f"/api/tasks/{task}/history?minutes=0", headers=web.headers("sue")).status_code == 422
    )
    assert web.client.get("/api/tasks/999/history", headers=web.headers("sue")).status_code == 404


def test_task_api_names_the_gateway_kind_and_the_skill_group(web: WebHarness) -> None:
    web.user("sue", ["supervisor"])
    with session_scope(web.engine) as s:
        gw = GatewayRow(name="pbx-east", kind="asterisk", host="10.0.0.5")
        s.add(gw)
        s.flush()
        gw_id = gw.id
    default = _task(web)
    asterisk = _task(web, gateway_id=gw_id)
    h = web.headers("sue")
    by_id = {t["id"]: t for t in web.client.get("/api/tasks", headers=h).json()}
    assert (by_id[default]["gateway_kind"], by_id[default]["gateway_name"]) == ("simulated", "default")
    assert (by_id[asterisk]["gateway_kind"], by_id[asterisk]["gateway_name"]) == ("asterisk", "pbx-east")
    assert by_id[default]["skill_group_name"].startswith("g-")
    assert web.client.get(f"/api/tasks/{asterisk}", headers=h).json()["gateway_kind"] == "asterisk"


def test_monitor_hello_carries_every_live_task_with_its_latest_numbers(web: WebHarness) -> None:
    web.user("sue", ["supervisor"])
    running = _task(web)
    paused = _task(web, state=CampaignState.PAUSED)
    _task(web, state=CampaignState.STOPPED)
    Notifier(Bus(web.redis)).publish(
        TaskStats(campaign_id=running, dialled=42, connected=9, state="running", at=time.time())
    )
    with web.client.websocket_connect("/ws?streams=monitor", headers=web.headers("sue")) as ws:
        hello = recv(ws)
    tasks = {t["campaign_id"]: t for t in hello["tasks"]}
    assert set(tasks) == {running, paused}
    assert (tasks[running]["dialled"], tasks[running]["source"]) == (42, "dialer")
    assert (tasks[paused]["leads_left"], tasks[paused]["source"]) == (1, "database")
    assert tasks[paused]["actions"] == ["delete", "edit", "monitor", "resume", "stop"]
    assert tasks[running]["gateway_kind"] == "simulated" and tasks[running]["name"] == "Renewals"


def test_agent_hello_carries_the_lead_offered_in_preview(web: WebHarness) -> None:
    web.user("ann", ["agent"], extension="1001")
    ann = sim.agent_id(web.engine, "1001")
    task = sim.campaign(web.engine, name="Preview list")
    lead = sim.lead(web.engine, campaign_id=task, number="+8613800000002", fields={"company": "ACME"})
    with session_scope(web.engine) as s:
        s.add(
            Call(
                id="offer-1",
                campaign_id=task,
                lead_id=lead,
                number="+8613800000002",
                state="preview",
                agent_id=ann,
            )
        )
        agent = s.get(Agent, ann)
        assert agent is not None
        agent.state, agent.call_id, agent.campaign_id = "reserved", "offer-1", task
        s.add(agent)
    with web.client.websocket_connect("/ws", headers=web.headers("ann")) as ws:
        hello = recv(ws)
    assert hello["pop"] is None
    preview = hello["preview"]
    assert (preview["call_id"], preview["direction"], preview["lead_fields"]) == (
        "offer-1",
        "preview",
        {"company": "ACME"},
    )
    assert preview["crm"]["contact"]["company"] == "ACME"  # a new record pre-filled from the list


def test_tasks_stream_is_opt_in_and_carries_task_state_only(web: WebHarness) -> None:
    web.user("root", ["admin"])
    web.user("ann", ["agent"], extension="1001")
    ann = sim.agent_id(web.engine, "1001")
    notifier = Notifier(Bus(web.redis))
    with web.client.websocket_connect("/ws?streams=tasks", headers=web.headers("root")) as ws:
        assert recv(ws)["streams"] == ["tasks"]
        sim.set_ready(web.engine, web.redis, ann)  # agent_state on the monitor topic: not for this stream
        notifier.publish(TaskStats(campaign_id=5, dialled=1))
        notifier.publish(
            TaskStateChanged(campaign_id=5, name="T", old="stopped", new="running", by="sue", at=time.time())
        )
        msg = recv_until(ws, "task_state")
        assert msg["campaign_id"] == 5
        notifier.publish(GatewayStatus(gateway="default", state=GatewayState.DOWN, at=time.time()))
        notifier.publish(
            TaskStateChanged(campaign_id=5, name="T", old="running", new="paused", by="sue", at=time.time())
        )
        assert recv(ws)["new"] == "paused"  # nothing else came between
    with web.client.websocket_connect("/ws", headers=web.headers("root")) as ws:
        assert "tasks" not in recv(ws)["streams"]  # only when asked for
    with web.client.websocket_connect("/ws?streams=tasks", headers=web.headers("ann")) as ws:
        try:
            recv(ws)
            raise AssertionError("an agent got the tasks stream")
        except Exception as exc:
            assert getattr(exc, "code", None) == 4403


def test_home_takes_each_role_to_its_page(web: WebHarness) -> None:
    web.user("root", ["admin"])
    web.user("sue", ["supervisor"])
    web.user("ann", ["agent"], extension="1001")
    web.user("nobody", [])
    for user, target in (("root", "/tasks"), ("sue", "/monitor"), ("ann", "/workstation")):
        web.client.post("/login", data={"username": user, "password": "password-123"})
        resp = web.client.get("/", follow_redirects=False)
        assert (resp.status_code, resp.headers.get("location")) == (303, target), user
        assert web.client.get(target).status_code == 200, target
    web.client.post("/login", data={"username": "nobody", "password": "password-123"})
    home = web.client.get("/", follow_redirects=False)
    assert home.status_code == 200 and "ask an administrator" in home.text


def test_a_request_for_the_dialer_with_none_running_is_503(web: WebHarness) -> None:
    # The web process's own subscription (`cc:*`) must not be taken for a dialer listening.
    web.user("ann", ["agent"], extension="1001")
    resp = web.client.post("/api/agent/preview/nothing/dial", headers=web.headers("ann"))
    assert resp.status_code == 503 and resp.json()["detail"] == "no dialer is running"
