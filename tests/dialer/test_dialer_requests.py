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
