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


def max_concurrent(engine: Engine) -> int:
    edges = []
    for call in rows(engine, "SELECT created_at, ended_at FROM call WHERE state != 'preview'"):
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
    open_at_kill = {r["id"] for r in rows(engine, "SELECT id FROM call WHERE state != 'ended'")}
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
    for call_id in open_at_kill:  # the simulated PBX died with the process: those calls are gone
        assert settled[call_id]["result"] == "lost", settled[call_id]
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


def test_two_dialers_on_one_postgresql_never_dial_a_lead_twice(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    engine = make_engine(pg_url)
    seed_world(
        engine,
        agents=10,
        leads=600,
        now=time.time(),
        campaign={
            "agent_ratio": 3.0,
            "max_concurrency": 20,
            "wrap_up_s": 1,
            "ring_timeout_s": 15,
            "retry_delays": '{"busy": 0, "no_answer": 0, "failed": 0}',
            "max_attempts": 4,
        },
    )
    dialers = [start_dialer(pg_url, redis_url, name, tmp_path) for name in ("pg-a", "pg-b")]
    try:
        wait_for(
            lambda: (
                {r["dialer_id"] for r in rows(engine, "SELECT DISTINCT dialer_id FROM call")}
                == {"pg-a", "pg-b"}
            ),
            timeout=30,
        )
        wait_for(lambda: len(rows(engine, "SELECT id FROM call")) > 300, timeout=40)
    finally:
        for proc in dialers:
            stop(proc)
    assert_never_dialled_twice_at_once(engine)
    assert max_concurrent(engine) <= 20
    claims = rows(engine, "SELECT dialer_id, COUNT(*) AS n FROM call GROUP BY dialer_id")
    assert all(r["n"] > 20 for r in claims), claims  # both really dialled
