"""Web -> dialer requests over Redis with a real dialer process: preview clicks and supervisor spy."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from callcenter.db import make_engine
from callcenter.engine.simulation import seed_world
from tests.conftest import WebFactory
from tests.dialer.test_processes import start_dialer, wait_for

pytestmark = pytest.mark.processes


def test_preview_dial_and_spy_go_through_the_dialer(
    sqlite_url: str, redis_url: str, tmp_path: Path, web_factory: WebFactory
) -> None:
    engine = make_engine(sqlite_url)
    cid = seed_world(
        engine, agents=0, leads=20, now=time.time(), campaign={"pacing_mode": "preview", "ring_timeout_s": 15}
    )
    group = engine.connect().execute(text("SELECT skill_group_id FROM campaign")).scalar_one()
    web = web_factory(engine)
    web.user("ann", ["agent"], extension="1001", skill_group_ids=[group])
    web.user("bob", ["agent"], extension="1002", skill_group_ids=[group])
    web.user("sue", ["supervisor"], extension="1900")
    dialer = start_dialer(sqlite_url, redis_url, "req", tmp_path)
    try:
        ann, bob, sue = web.headers("ann"), web.headers("bob"), web.headers("sue")
        assert web.client.post("/api/agent/state", json={"state": "ready"}, headers=ann).status_code == 200

        def offered() -> list:
            with engine.connect() as c:
                return list(c.execute(text("SELECT id, agent_id FROM call WHERE state = 'preview'")))

        wait_for(lambda: len(offered()) == 1, timeout=20)
        call_id, offered_to = offered()[0]
        assert offered_to == 1
        assert web.client.get("/api/agent/me", headers=ann).json()["state"] == "reserved"
        stolen = web.client.post(f"/api/agent/preview/{call_id}/dial", headers=bob)
        assert stolen.status_code == 409 and "no longer yours" in stolen.json()["detail"]
        dialled = web.client.post(f"/api/agent/preview/{call_id}/dial", headers=ann)
        assert dialled.status_code == 200 and dialled.json()["ok"] is True
        wait_for(lambda: not offered() or offered()[0][0] != call_id, timeout=10)
        spy = web.client.post("/api/monitor/spy", json={"agent_id": 2, "mode": "listen"}, headers=sue)
        assert spy.status_code == 409 and "no call" in spy.json()["detail"]
        assert (
            web.client.post(
                "/api/monitor/spy", json={"agent_id": 2, "mode": "listen"}, headers=ann
            ).status_code
            == 403
        )
    finally:
        dialer.send_signal(signal.SIGTERM)
        dialer.wait(15)
    assert cid


def test_a_workstation_left_closed_sets_its_ready_agent_not_ready(
    sqlite_url: str, redis_url: str, tmp_path: Path, web_factory: WebFactory
) -> None:
    """An agent who closed the browser kept getting calls with no screen pop. Ready with no workstation
    open for `CALLCENTER_AGENT_DISCONNECT_S`: not ready, saying why; with one open: stays ready."""
    engine = make_engine(sqlite_url)
    seed_world(engine, agents=0, leads=0, now=time.time())
    web = web_factory(engine, agent_disconnect_s=2.0)
    web.user("ann", ["agent"], extension="1001")
    web.user("bob", ["agent"], extension="1002")
    dialer = start_dialer(sqlite_url, redis_url, "presence", tmp_path, CALLCENTER_AGENT_DISCONNECT_S="2")
    try:
        ann, bob = web.headers("ann"), web.headers("bob")

        def me(h: dict[str, str]) -> dict[str, object]:
            return dict(web.client.get("/api/agent/me", headers=h).json())

        with web.client.websocket_connect("/ws", headers=ann):  # ann's workstation is open
            assert (
                web.client.post("/api/agent/state", json={"state": "ready"}, headers=ann).status_code == 200
            )
            assert (
                web.client.post("/api/agent/state", json={"state": "ready"}, headers=bob).status_code == 200
            )
            wait_for(lambda: me(bob)["state"] == "not_ready", timeout=20)
            assert me(ann)["state"] == "ready"
        row = engine.connect().execute(text("SELECT state_reason FROM agent WHERE extension = '1002'"))
        assert row.scalar_one() == "workstation_disconnected"
        # Closed: after the same grace, ann too.
        wait_for(lambda: me(ann)["state"] == "not_ready", timeout=20)
    finally:
        dialer.send_signal(signal.SIGTERM)
        dialer.wait(15)


def test_one_supervisor_phone_listens_to_one_call_and_the_monitor_shows_who_listens(
    sqlite_url: str, redis_url: str, tmp_path: Path, web_factory: WebFactory
) -> None:
    import json

    engine = make_engine(sqlite_url)
    seed_world(
        engine,
        agents=0,
        leads=1,
        now=time.time(),
        numbers=["+8613800000001"],
        campaign={"pacing_mode": "preview", "ring_timeout_s": 15},
    )
    group = engine.connect().execute(text("SELECT skill_group_id FROM campaign")).scalar_one()
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"+8613800000001": {"outcome": "human", "ring_s": 0.2, "talk_s": 2000}}))
    web = web_factory(engine)
    web.user("ann", ["agent"], extension="1001", skill_group_ids=[group])
    web.user("sue", ["supervisor"], extension="1900")
    dialer = start_dialer(sqlite_url, redis_url, "spy", tmp_path, CALLCENTER_SIM_SCRIPT=str(script))
    try:
        ann, sue = web.headers("ann"), web.headers("sue")
        with web.client.websocket_connect("/ws", headers=ann):
            web.client.post("/api/agent/state", json={"state": "ready"}, headers=ann)

            def call() -> list:
                with engine.connect() as c:
                    return list(c.execute(text("SELECT id, state FROM call")))

            wait_for(lambda: len(call()) == 1, timeout=20)
            web.client.post(f"/api/agent/preview/{call()[0][0]}/dial", headers=ann)
            try:
                wait_for(lambda: call()[0][1] == "connected", timeout=20)
            except AssertionError:
                with engine.connect() as c:
                    ev = list(c.execute(text("SELECT kind, detail FROM call_event ORDER BY at, id")))
                raise AssertionError(f"{call()} {ev} {(tmp_path / 'spy.log').read_text()[-2000:]}") from None
            first = web.client.post("/api/monitor/spy", json={"agent_id": 1, "mode": "whisper"}, headers=sue)
            assert first.status_code == 200, first.text
            second = web.client.post("/api/monitor/spy", json={"agent_id": 1, "mode": "listen"}, headers=sue)
            assert second.status_code == 409 and "already listening" in second.json()["detail"]
            with web.client.websocket_connect("/ws?streams=monitor", headers=sue) as monitor:
                hello = monitor.receive_json()
            assert [
                (s["supervisor_extension"], s["target_extension"], s["mode"]) for s in hello["spies"]
            ] == [("1900", "1001", "whisper")]
            with engine.connect() as c:
                ladder = [r[0] for r in c.execute(text("SELECT detail FROM call_event WHERE kind = 'spy'"))]
            assert ladder == ["whisper by 1900 started"]
    finally:
        dialer.send_signal(signal.SIGTERM)
        dialer.wait(15)
