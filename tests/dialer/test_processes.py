"""Real dialer processes: killed with SIGKILL and restarted, and two of them on one PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from callcenter.db import make_engine
from callcenter.engine.simulation import seed_world
from tests.conftest import TEST_SECRET

pytestmark = pytest.mark.processes


def start_dialer(db_url: str, redis_url: str, dialer_id: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        {
            "CALLCENTER_MODE": "dev",
            "CALLCENTER_SECRET_KEY": TEST_SECRET,
            "CALLCENTER_DATABASE_URL": db_url,
            "CALLCENTER_REDIS_URL": redis_url,
            "CALLCENTER_DIALER_ID": dialer_id,
            "CALLCENTER_GATEWAY": "simulated",
            "CALLCENTER_SIM_TIME_SCALE": "20",
            "CALLCENTER_DATA_DIR": str(tmp_path),
            "CALLCENTER_LOG_LEVEL": "WARNING",
        }
    )
    log = open(tmp_path / f"{dialer_id}.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "app.cli", "dialer"], env=env, stdout=log, stderr=log)


def rows(engine: Engine, sql: str) -> list[dict[str, Any]]:
    with engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(text(sql))]


def wait_for(predicate: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    proc.wait(15)


def assert_never_dialled_twice_at_once(engine: Engine) -> None:
    by_lead: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for call in rows(
        engine,
        "SELECT lead_id, created_at, ended_at FROM call WHERE lead_id IS NOT NULL AND state != 'preview'",
    ):
        by_lead[call["lead_id"]].append((call["created_at"], call["ended_at"] or float("inf")))
    for lead_id, spans in by_lead.items():
        spans.sort()
        for (_, end), (start, _) in pairwise(spans):
            assert start >= end, f"lead {lead_id} was dialled again while a call to it was up"


def max_concurrent(engine: Engine, campaign_id: int | None = None) -> int:
    edges = []
    where = f" AND campaign_id = {campaign_id}" if campaign_id is not None else ""
    for call in rows(engine, f"SELECT created_at, ended_at FROM call WHERE state != 'preview'{where}"):
        edges += [(call["created_at"], 1), (call["ended_at"] or float("inf"), -1)]
    level = peak = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        level += step
        peak = max(peak, level)
    return peak


def test_dialer_killed_mid_task_resumes_without_losing_or_repeating(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    engine = make_engine(sqlite_url)
    now = time.time()
    cid = seed_world(
        engine,
        agents=6,
        leads=400,
        now=now,
        campaign={
            "agent_ratio": 2.0,
            "max_concurrency": 12,
            "wrap_up_s": 1,
            "ring_timeout_s": 15,
            "retry_delays": '{"busy": 1, "no_answer": 1, "lost": 0}',
            "max_attempts": 5,
        },
    )
    first = start_dialer(sqlite_url, redis_url, "d1", tmp_path)
    try:
        wait_for(lambda: len(rows(engine, "SELECT id FROM call WHERE state != 'ended'")) >= 6)
        time.sleep(1.0)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    at_kill = {
        r["id"]: r
        for r in rows(
            engine, "SELECT id, lead_id, answered_at, connected_at FROM call WHERE state != 'ended'"
        )
    }
    open_at_kill = set(at_kill)
    assert open_at_kill, "nothing was in flight at the kill"
    # A crash between claiming a lead and writing its call: the claim must go back to the queue, its
    # attempt given back. The lead is the next one due that was never dialled, so the restarted dialer
    # reaches it at once (the claim order is next_at, id).
    with engine.begin() as c:
        stranded = c.execute(
            text(
                "SELECT id FROM lead WHERE status = 'pending' AND attempts = 0 AND id NOT IN "
                "(SELECT lead_id FROM call WHERE lead_id IS NOT NULL) ORDER BY next_at, id LIMIT 1"
            )
        ).scalar_one()
        c.execute(
            text("UPDATE lead SET status = 'claimed', claimed_by = 'd1', attempts = 1 WHERE id = :i"),
            {"i": stranded},
        )
    calls_before = len(rows(engine, "SELECT id FROM call"))

    second = start_dialer(sqlite_url, redis_url, "d1", tmp_path)
    try:
        wait_for(lambda: len(rows(engine, "SELECT id FROM call")) > calls_before + 10)
        wait_for(lambda: rows(engine, f"SELECT id FROM call WHERE lead_id = {stranded}"))
        wait_for(
            lambda: all(
                r["state"] == "ended"
                for r in rows(
                    engine, f"SELECT state FROM call WHERE id IN ({','.join(repr(i) for i in open_at_kill)})"
                )
            )
        )
    finally:
        stop(second)
    settled = {r["id"]: r for r in rows(engine, "SELECT id, result, detail FROM call")}
    for call_id, before in at_kill.items():  # the simulated PBX died with the process: the calls are gone
        # A customer who had reached an agent was reached: never dialled again for this attempt.
        expected = "answered" if before["connected_at"] else "abandoned" if before["answered_at"] else "lost"
        assert settled[call_id]["result"] == expected, (settled[call_id], before)
        if expected == "answered":
            again = rows(
                engine,
                f"SELECT COUNT(*) AS n FROM call WHERE lead_id = {before['lead_id']} AND id != '{call_id}'",
            )[0]["n"]
            assert again == 0, f"lead {before['lead_id']} was dialled again after its customer was reached"
    # The stranded claim was dialled normally after the restart: first as attempt 1, which it is only if
    # the claim's attempt was given back (still claimed, it would never have been dialled at all).
    first_try = rows(
        engine, f"SELECT attempt, dialer_id FROM call WHERE lead_id = {stranded} ORDER BY created_at LIMIT 1"
    )[0]
    assert (first_try["attempt"], first_try["dialer_id"]) == (1, "d1"), first_try
    assert_never_dialled_twice_at_once(engine)
    # No call row is lost: every attempt a lead counts has its row.
    for lead in rows(engine, "SELECT id, attempts, status FROM lead WHERE status IN ('done', 'pending')"):
        counted = rows(
            engine,
            f"SELECT COUNT(*) AS n FROM call WHERE lead_id = {lead['id']} "
            "AND result NOT IN ('cancelled', 'not_dialled', '')",
        )[0]["n"]
        assert counted == lead["attempts"], lead
    assert max_concurrent(engine) <= 12
    assert cid


def assert_no_agent_on_two_calls_at_once(engine: Engine) -> None:
    """No agent was connected to two customers at once (an abandoned call keeps the id of the agent
    once reserved for it, who was freed when it was abandoned: only connected spans count)."""
    by_agent: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for call in rows(
        engine,
        "SELECT agent_id, connected_at, ended_at FROM call"
        " WHERE agent_id IS NOT NULL AND connected_at IS NOT NULL",
    ):
        by_agent[call["agent_id"]].append((call["connected_at"], call["ended_at"] or float("inf")))
    for agent_id, spans in by_agent.items():
        spans.sort()
        for (_, end), (start, _) in pairwise(spans):
            assert start >= end, f"agent {agent_id} was given a call while on another"


def test_two_dialers_on_one_postgresql_split_the_skill_groups(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    """Each dialer paces and routes for its own skill groups (leases): no lead dialled twice, no agent
    on two calls, each task within its max concurrency, and both dialers really dial."""
    engine = make_engine(pg_url)
    now = time.time()
    campaign = {
        "agent_ratio": 3.0,
        "max_concurrency": 20,
        "wrap_up_s": 1,
        "ring_timeout_s": 15,
        "retry_delays": '{"busy": 0, "no_answer": 0, "failed": 0}',
        "max_attempts": 4,
    }
    tasks = [
        seed_world(engine, agents=10, leads=400, now=now, campaign=campaign),
        seed_world(
            engine,
            agents=10,
            leads=400,
            now=now + 1,
            campaign=campaign,
            number_prefix="+8614",
            extension_base=6000,
        ),
    ]
    dialers = [start_dialer(pg_url, redis_url, name, tmp_path) for name in ("pg-a", "pg-b")]
    holders: list[dict[int, str]] = []

    def both_dialling() -> bool:
        holders.append(
            {r["id"]: r["dialer_id"] for r in rows(engine, "SELECT id, dialer_id FROM skill_group")}
        )
        return len(rows(engine, "SELECT id FROM call")) > 300

    try:
        wait_for(both_dialling, timeout=60)
    finally:
        for proc in dialers:
            stop(proc)
    assert_never_dialled_twice_at_once(engine)
    assert_no_agent_on_two_calls_at_once(engine)
    for task in tasks:
        assert max_concurrent(engine, task) <= 20
    # Once both are up, each holds one skill group (a fair share) and keeps it.
    settled = [h for h in holders if set(h.values()) == {"pg-a", "pg-b"}]
    assert len(settled) > 5, holders[-3:]
    assert all(h == settled[0] for h in settled), "a skill group changed hands while both dialers lived"
