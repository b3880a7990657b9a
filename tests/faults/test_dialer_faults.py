"""The dialer process and the web against PostgreSQL and Redis that go away and come back, and a gateway
row that cannot be used. After each fault the invariants hold: every lead dialled at most once per
attempt, no call left open once nothing dials, no agent on two calls at once, counters equal to rows."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from itertools import pairwise
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from callcenter.db import make_engine
from callcenter.engine.simulation import seed_world
from callcenter.messages import gateway_status_key, stats_key
from callcenter.stats import snapshot_from_db
from tests.faults.conftest import Postgres, Processes, RedisServer, wait_until

pytestmark = pytest.mark.processes


def rows(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(text(sql), params)]


def count(engine: Engine, sql: str, **params: Any) -> int:
    try:
        return int(rows(engine, sql, **params)[0]["n"])
    except Exception:  # the database is down for the test's own reads too
        return -1


def dialer(procs: Processes, db_url: str, redis_url: str, name: str = "fault-dialer") -> Any:
    env = procs.env(
        CALLCENTER_DATABASE_URL=db_url,
        CALLCENTER_REDIS_URL=redis_url,
        CALLCENTER_GATEWAY="simulated",
        CALLCENTER_SIM_TIME_SCALE="20",
        CALLCENTER_DIALER_ID=name,
        CALLCENTER_LOG_LEVEL="INFO",
    )
    return procs.spawn("dialer", env=env, name=name)


def seed(engine: Engine, *, leads: int = 400, **campaign: Any) -> int:
    return seed_world(
        engine,
        agents=6,
        leads=leads,
        now=time.time(),
        campaign={
            "agent_ratio": 2.0,
            "max_concurrency": 12,
            "wrap_up_s": 1,
            "ring_timeout_s": 15,
            "retry_delays": '{"busy": 1, "no_answer": 1, "lost": 0}',
            "max_attempts": 5,
            **campaign,
        },
    )


def pause_and_settle(engine: Engine, campaign_id: int, timeout: float = 60) -> None:
    """Pause the task the way the web does (the dialer re-reads tasks every second) and wait until no
    call is left open: nothing stays live without a PBX channel."""
    with engine.begin() as c:
        c.execute(text("UPDATE campaign SET state = 'paused' WHERE id = :i"), {"i": campaign_id})
    wait_until(
        lambda: count(engine, "SELECT COUNT(*) AS n FROM call WHERE state != 'ended'") == 0,
        timeout,
        "every call ended after the pause",
    )


def assert_invariants(engine: Engine, campaign_id: int) -> None:
    # Every attempt a lead counts has exactly one call row (no lead dialled twice for one attempt).
    for lead in rows(engine, "SELECT id, attempts FROM lead WHERE campaign_id = :c", c=campaign_id):
        attempts = count(
            engine,
            "SELECT COUNT(*) AS n FROM call WHERE lead_id = :l "
            "AND result NOT IN ('cancelled', 'not_dialled', 'refused', '')",
            l=lead["id"],
        )
        assert attempts == lead["attempts"], lead
    # No agent connected to two customers at once.
    spans: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for call in rows(
        engine, "SELECT agent_id, connected_at, ended_at FROM call WHERE connected_at IS NOT NULL"
    ):
        spans[call["agent_id"]].append((call["connected_at"], call["ended_at"]))
    for agent_id, times in spans.items():
        times.sort()
        for (_, end), (start, _) in pairwise(times):
            assert start >= end, f"agent {agent_id} on two calls"
    assert count(engine, "SELECT COUNT(*) AS n FROM call WHERE state != 'ended'") == 0


def assert_counters_equal_rows(engine: Engine, redis: Any, campaign_id: int) -> None:
    """The dialer's published counters (what the monitor shows) equal what the rows say."""
    with engine.connect() as c:
        truth = snapshot_from_db(c, campaign_id)

    def published() -> dict[str, Any]:
        raw = redis.get(stats_key(campaign_id))
        return json.loads(raw) if raw else {}

    keys = ("dialled", "connected", "abandoned", "machine")
    wait_until(
        lambda: {k: published().get(k) for k in keys} == {k: getattr(truth, k) for k in keys},
        15,
        f"published counters {published()} equal the rows {truth}",
    )


def test_a_postgresql_restart_is_ridden_out_and_dialling_resumes(
    pg: Postgres, redis_server: RedisServer, procs: Processes
) -> None:
    """A 3-second PostgreSQL restart used to end the dialer (a failed batch, then a resync that raised
    again): 14 calls, 14 claimed leads and 8 agents frozen for 120+ s."""
    engine = make_engine(pg.url)
    cid = seed(engine)
    proc = dialer(procs, pg.url, redis_server.url)
    wait_until(lambda: count(engine, "SELECT COUNT(*) AS n FROM call") >= 20, 60, "the dialer dials")
    with pg.down():
        time.sleep(3)
        assert proc.poll() is None, procs.log(proc)
    engine.dispose()
    before = count(engine, "SELECT COUNT(*) AS n FROM call")
    wait_until(
        lambda: count(engine, "SELECT COUNT(*) AS n FROM call") >= before + 30,
        60,
        "dialling resumed after the restart",
    )
    assert proc.poll() is None, procs.log(proc)
    assert "database unavailable" in procs.log(proc)
    pause_and_settle(engine, cid)
    assert_invariants(engine, cid)
    assert_counters_equal_rows(engine, redis_server.client(), cid)


def test_a_redis_outage_is_ridden_out_and_every_web_request_reaches_the_dialer_again(
    sqlite_url: str, redis_server: RedisServer, procs: Processes, tmp_path: Any
) -> None:
    """After a 10 s Redis outage the dialer never listened to web requests again: preview dial/skip and
    listen/whisper/barge answered 503 for good and preview agents stayed reserved."""
    from fastapi.testclient import TestClient

    from callcenter import accounts
    from callcenter.db import session_scope
    from tests.conftest import make_settings
    from webui.app import create_app

    engine = make_engine(sqlite_url)
    seed(engine, leads=30, pacing_mode="preview")
    group = rows(engine, "SELECT id FROM skill_group ORDER BY id DESC LIMIT 1")[0]["id"]
    with engine.begin() as c:  # the simulated agents are away: a person takes the previews
        c.execute(text("UPDATE agent SET state = 'offline'"))
    with session_scope(engine) as s:
        ann = accounts.create_user(s, username="ann", password="password-123", roles=["agent"])
        accounts.create_agent(s, user_id=accounts.row_id(ann), extension="2001", skill_group_ids=[group])
        sup = accounts.create_user(s, username="sue", password="password-123", roles=["supervisor"])
        accounts.create_agent(s, user_id=accounts.row_id(sup), extension="1900")
        bob = accounts.create_user(s, username="bob", password="password-123", roles=["agent"])
        accounts.create_agent(s, user_id=accounts.row_id(bob), extension="2002")
    ann_id = rows(engine, "SELECT id FROM agent WHERE extension = '2001'")[0]["id"]
    settings = make_settings(tmp_path, redis_url=redis_server.url, database_url=sqlite_url)
    proc = dialer(procs, sqlite_url, redis_server.url)
    with TestClient(create_app(settings)) as client:

        def headers(user: str) -> dict[str, str]:
            token = client.post("/api/auth/token", json={"username": user, "password": "password-123"})
            assert token.status_code == 200, token.text
            return {"Authorization": f"Bearer {token.json()['access_token']}"}

        ann_h, sue_h = headers("ann"), headers("sue")
        assert client.post("/api/agent/state", json={"state": "ready"}, headers=ann_h).status_code == 200

        def offered() -> list[dict[str, Any]]:
            return rows(engine, "SELECT id FROM call WHERE state = 'preview' AND agent_id = :a", a=ann_id)

        wait_until(lambda: offered(), 60, "a lead offered to the agent")
        with redis_server.down():
            time.sleep(10)
        assert proc.poll() is None, procs.log(proc)
        # Every web -> dialer request works again, within a few seconds of Redis coming back.
        first = offered()[0]["id"]

        answers: list[str] = []

        def skip() -> bool:
            resp = client.post(f"/api/agent/preview/{first}/skip", headers=ann_h)
            answers.append(f"{resp.status_code} {resp.text}")
            return resp.status_code == 200

        try:
            wait_until(skip, 30, "preview skip answered by the dialer after the outage")
        except AssertionError:
            raise AssertionError(f"{answers[-3:]}\n{procs.log(proc)[-3000:]}") from None
        wait_until(lambda: offered() and offered()[0]["id"] != first, 30, "the next lead offered")
        second = offered()[0]["id"]
        assert client.post(f"/api/agent/preview/{second}/dial", headers=ann_h).status_code == 200
        wait_until(
            lambda: rows(engine, "SELECT state FROM call WHERE id = :i", i=second)[0]["state"] != "preview",
            30,
            "the previewed lead dialled",
        )
        spy = client.post("/api/monitor/spy", json={"agent_id": ann_id, "mode": "listen"}, headers=sue_h)
        assert spy.status_code in (200, 409), spy.text  # answered by the dialer (409: no call to spy on)
        assert "dialer did not answer" not in spy.text and "no dialer" not in spy.text
        # An agent state change on the web reaches the dialer too (AgentChanged, nobody waits on it).
        state = client.post("/api/agent/state", json={"state": "ready"}, headers=headers("bob"))
        assert state.status_code == 200
    assert "resubscribing" in procs.log(proc) or "dialer topic lost" in procs.log(proc)


def test_a_gateway_row_that_cannot_be_used_is_marked_down_and_the_other_tasks_run(
    sqlite_url: str, redis_server: RedisServer, procs: Processes
) -> None:
    """One unreachable or misconfigured enabled gateway row used to crash the dialer at start, taking
    every task down, again on every restart."""
    engine = make_engine(sqlite_url)
    seed(engine, leads=50)
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO gateway (name, kind, host, port, username, secret_env, dial_template, "
                "agent_template, enabled, originates_per_s) VALUES "
                "('broken', 'asterisk', '127.0.0.1', 1, 'x', '', 'PJSIP/{nope}@trunk', '', 1, 10), "
                "('unreachable', 'freeswitch', '127.0.0.1', 1, '', '', '', '', 1, 10)"
            )
        )
    proc = dialer(procs, sqlite_url, redis_server.url)
    wait_until(
        lambda: count(engine, "SELECT COUNT(*) AS n FROM call") >= 10, 60, "the default gateway's task dials"
    )
    client = redis_server.client()

    def status(key: str) -> dict[str, Any]:
        return dict(json.loads(client.get(gateway_status_key(key)) or "{}"))

    for key in ("gw1", "gw2"):
        wait_until(lambda key=key: status(key).get("state") == "down", 30, f"{key} reported down")  # type: ignore[misc]
    assert proc.poll() is None, procs.log(proc)


def test_the_web_answers_503_while_the_database_is_down_and_recovers(
    pg: Postgres, redis_server: RedisServer, tmp_path: Any
) -> None:
    from fastapi.testclient import TestClient

    from callcenter import accounts
    from callcenter.db import session_scope
    from tests.conftest import make_settings
    from webui.app import create_app

    engine = make_engine(pg.url)
    with session_scope(engine) as s:
        accounts.create_user(s, username="root", password="password-123", roles=["admin"])
    engine.dispose()
    settings = make_settings(tmp_path, redis_url=redis_server.url, database_url=pg.url)
    with TestClient(create_app(settings)) as client:
        token = client.post("/api/auth/token", json={"username": "root", "password": "password-123"})
        h = {"Authorization": f"Bearer {token.json()['access_token']}"}
        assert client.get("/api/tasks", headers=h).status_code == 200
        with pg.down():
            down = client.get("/api/tasks", headers=h)
            assert down.status_code == 503 and "database is unavailable" in down.json()["detail"]
        wait_until(lambda: client.get("/api/tasks", headers=h).status_code == 200, 20, "the web recovers")
