"""List imports survive their worker: an interrupted import resumes after its last commit without
duplicating a lead, a SIGKILLed worker's import is finished by another worker, a stale import is
restarted (and failed after too many restarts, or when its job is lost), and an admin can cancel an
import, stuck or running."""

from __future__ import annotations

import io
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from sqlalchemy import text, update
from sqlalchemy.engine import Engine

from callcenter import accounts, campaigns, jobs
from callcenter.db import make_engine, session_scope
from callcenter.jobs import ImportHealth, import_health, restart_stale_imports
from callcenter.leads import ImportSuperseded, import_list
from callcenter.models import Campaign, CampaignCreate
from tests.conftest import WebHarness
from tests.faults.conftest import Processes, RedisServer, wait_until

CAMPAIGN = Campaign.__table__  # type: ignore[attr-defined]
BASE = 13_800_000_000  # 138 0000 0000: valid Chinese mobile numbers from here on


def make_list(path: Path, rows: int) -> tuple[dict[int, str], dict[int, str]]:
    """A CSV of `rows` data rows (row 2 = the first), with invalid numbers, duplicates (one of them
    far from its first row) and blank lines; returns the expected {row: +E164} leads and
    {row: reason} rejections."""
    leads: dict[int, str] = {}
    issues: dict[int, str] = {}
    seen: set[str] = set()
    lines = ["name,phone,city\n"]
    for i in range(rows):
        row_no = i + 2
        if i % 997 == 500:
            lines.append(",,\n")  # blank: not a row of data, not reported
            continue
        if i % 101 == 7:
            number = "12345"
        elif i % 211 == 13:
            number = str(BASE + i - 1)  # the row before's number
        elif i == rows - 10:
            number = str(BASE + 3)  # a duplicate of row 5, long after it
        else:
            number = str(BASE + i)
        lines.append(f"n{i},{number},c{i % 7}\n")
        if number == "12345":
            issues[row_no] = "invalid"
        elif number in seen:
            issues[row_no] = "duplicate"
        else:
            seen.add(number)
            leads[row_no] = "+86" + number
    path.write_text("".join(lines))
    return leads, issues


def new_task(engine: Engine, *, job_id: str = "", name: str = "t") -> int:
    with session_scope(engine) as session:
        group = accounts.create_skill_group(session, name=f"g-{name}")
        assert group.id is not None
        task = campaigns.create(
            session,
            spec=CampaignCreate(name=name, skill_group_id=group.id, list_filename="list.csv"),
            actor="admin",
            now=time.time(),
        )
        task.import_job_id = job_id
        session.add(task)
        session.flush()
        assert task.id is not None
        return task.id


def rows(engine: Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def task_row(engine: Engine, cid: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT * FROM campaign WHERE id = :i"), {"i": cid}).one()._mapping)


def assert_exactly(engine: Engine, cid: int, leads: dict[int, str], issues: dict[int, str]) -> None:
    got = rows(engine, "SELECT row_no, number FROM lead WHERE campaign_id = :c ORDER BY row_no", c=cid)
    assert len(got) == len(leads), (len(got), len(leads))
    assert dict(got) == leads
    got_issues = rows(engine, "SELECT row_no, reason FROM import_issue WHERE campaign_id = :c", c=cid)
    assert len(got_issues) == len(issues) and dict(got_issues) == issues
    task = task_row(engine, cid)
    assert (task["import_ok"], task["import_rejected"], task["import_done"]) == (
        len(leads),
        len(issues),
        len(leads) + len(issues),
    )


# --- in process: resume and fencing, on both databases ----------------------------------------------


class Interrupted(Exception):
    pass


def test_an_interrupted_import_resumes_after_its_last_commit_without_duplicates(
    engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "list.csv"
    leads, issues = make_list(path, 3000)
    cid = new_task(engine, job_id="job-1")
    beats = 0

    def dies_midway() -> None:
        nonlocal beats
        beats += 1
        if task_row(engine, cid)["import_done"] >= 1200:
            raise Interrupted  # the worker is killed here, between two commits

    with pytest.raises(Interrupted):
        import_list(
            engine,
            campaign_id=cid,
            path=path,
            phone_column=None,
            region="CN",
            job_id="job-1",
            batch=400,
            heartbeat=dies_midway,
        )
    partial = task_row(engine, cid)
    assert 1200 <= partial["import_done"] < 3000 and beats
    # The watchdog restarts it as job-2: job-1, should it come back, may no longer write.
    with engine.begin() as conn:
        conn.execute(update(CAMPAIGN).where(CAMPAIGN.c.id == cid).values(import_job_id="job-2"))
    with pytest.raises(ImportSuperseded):
        import_list(engine, campaign_id=cid, path=path, phone_column=None, region="CN", job_id="job-1")
    result = import_list(
        engine, campaign_id=cid, path=path, phone_column=None, region="CN", job_id="job-2", batch=400
    )
    assert result.total == len(leads) + len(issues)
    assert_exactly(engine, cid, leads, issues)


def test_a_cancelled_import_writes_nothing_more(sqlite_engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    make_list(path, 2000)
    cid = new_task(sqlite_engine, job_id="job-1")
    from callcenter.leads import cancel_import

    def cancelled_midway() -> None:
        if task_row(sqlite_engine, cid)["import_done"] >= 500 and task_row(sqlite_engine, cid)["state"] == (
            "initializing"
        ):
            with sqlite_engine.begin() as conn:
                cancel_import(conn, campaign_id=cid, actor="admin", now=time.time())

    with pytest.raises(ImportSuperseded):
        import_list(
            sqlite_engine,
            campaign_id=cid,
            path=path,
            phone_column=None,
            region="CN",
            job_id="job-1",
            batch=250,
            heartbeat=cancelled_midway,
        )
    task = task_row(sqlite_engine, cid)
    count = rows(sqlite_engine, "SELECT COUNT(*) FROM lead WHERE campaign_id = :c", c=cid)[0][0]
    assert task["state"] == "stopped" and count == task["import_ok"] < 2000
    assert task["import_error"].startswith(f"import cancelled by admin after {task['import_done']} of ")
    audit = rows(
        sqlite_engine, "SELECT actor, old, new, note FROM campaign_audit WHERE campaign_id = :c", c=cid
    )
    assert audit[-1] == ("admin", "initializing", "stopped", "import cancelled")


# --- the watchdog's decisions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lease", "status", "beat_age", "task_age", "health"),
    [
        (True, "started", 500.0, 900.0, ImportHealth.ALIVE),  # the import renews its lease
        (False, "started", 10.0, 900.0, ImportHealth.ALIVE),  # its worker lives: a slow step
        (False, "queued", None, 900.0, ImportHealth.WAITING),  # no worker free yet
        (False, "started", 90.0, 900.0, ImportHealth.STALE),  # worker and horse killed
        (False, "started", None, 900.0, ImportHealth.STALE),
        (False, "failed", 5.0, 900.0, ImportHealth.STALE),  # its horse died, or the database went away
        (False, None, None, 5.0, ImportHealth.WAITING),  # the web is queueing it right now
        (False, None, None, 900.0, ImportHealth.LOST),  # Redis lost the job
    ],
)
def test_import_health(
    lease: bool, status: str | None, beat_age: float | None, task_age: float, health: ImportHealth
) -> None:
    got = import_health(
        lease=lease, status=status, job_heartbeat_age_s=beat_age, task_age_s=task_age, lease_s=60.0
    )
    assert got is health


def test_a_failed_import_job_is_restarted_until_the_limit_then_failed(
    sqlite_url: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    engine = make_engine(sqlite_url)
    conn = redis.Redis.from_url(redis_server.url)
    queue = Queue(jobs.QUEUE, connection=conn)
    cid = new_task(engine, job_id="import-x-1")
    jobs.enqueue_import(
        queue, job_id="import-x-1", campaign_id=cid, path=str(tmp_path / "gone.csv"), phone_column=None
    )
    job = Job.fetch("import-x-1", connection=conn)
    job.set_status(JobStatus.FAILED)  # as rq leaves it when the horse is killed under a live worker
    health = restart_stale_imports(engine, conn, now=time.time(), max_restarts=1)
    assert health == {cid: ImportHealth.STALE}
    restarted = task_row(engine, cid)["import_job_id"]
    assert restarted.startswith(f"import-{cid}-") and restarted in queue.job_ids
    again = Job.fetch(restarted, connection=conn)
    assert (again.args, again.kwargs) == (job.args, job.kwargs)
    # Seen again at once: another watchdog's lock holds for a lease period.
    assert restart_stale_imports(engine, conn, now=time.time(), max_restarts=1) == {cid: ImportHealth.WAITING}
    again.set_status(JobStatus.FAILED)
    conn.delete(f"callcenter:import:{cid}:watch")  # the lease period has passed
    restart_stale_imports(engine, conn, now=time.time(), max_restarts=1)
    task = task_row(engine, cid)
    assert task["state"] == "stopped" and "stopped 2 times without finishing" in task["import_error"]
    conn.close()
    engine.dispose()


def test_an_import_whose_job_is_lost_is_failed_not_left_initializing(
    sqlite_url: str, redis_server: RedisServer
) -> None:
    engine = make_engine(sqlite_url)
    conn = redis.Redis.from_url(redis_server.url)
    cid = new_task(engine, job_id="import-gone")
    assert restart_stale_imports(engine, conn, now=time.time()) == {cid: ImportHealth.WAITING}
    restart_stale_imports(engine, conn, now=time.time() + 120)
    task = task_row(engine, cid)
    assert task["state"] == "stopped" and "lost" in task["import_error"]
    conn.close()
    engine.dispose()


# --- real worker processes ----------------------------------------------------------------------------


def worker_env(procs: Processes, db_url: str, redis_url: str) -> dict[str, str]:
    return procs.env(
        CALLCENTER_DATABASE_URL=db_url, CALLCENTER_REDIS_URL=redis_url, CALLCENTER_LOG_LEVEL="INFO"
    )


@pytest.mark.processes
def test_a_killed_workers_import_is_finished_by_another_worker_with_exactly_the_right_leads(
    sqlite_url: str, redis_server: RedisServer, procs: Processes, tmp_path: Path
) -> None:
    engine = make_engine(sqlite_url)
    path = tmp_path / "big.csv"
    leads, issues = make_list(path, 60_000)  # big enough for the parallel path (a pool per import)
    cid = new_task(engine)
    first_job = jobs.new_import_job_id(cid)
    with engine.begin() as db:
        db.execute(update(CAMPAIGN).where(CAMPAIGN.c.id == cid).values(import_job_id=first_job))
    conn = redis.Redis.from_url(redis_server.url)
    jobs.enqueue_import(
        Queue(jobs.QUEUE, connection=conn),
        job_id=first_job,
        campaign_id=cid,
        path=str(path),
        phone_column=None,
        filename="big.csv",
        batch=5000,
        lease_s=2.0,
    )
    env = worker_env(procs, sqlite_url, redis_server.url)
    first = procs.spawn("worker", "--watch-s", "0.2", env=env, name="worker-1")
    wait_until(lambda: task_row(engine, cid)["import_done"] >= 10_000, 60, "the first 10,000 rows committed")
    family = procs.descendants(first.pid)  # its work horse and the horse's normalising pool
    assert family, "the worker has a work horse"
    os.kill(first.pid, signal.SIGKILL)
    first.wait(5)
    wait_until(lambda: not any(procs.alive(p) for p in family), 5, "horse and pool die with the worker")
    cut = task_row(engine, cid)
    assert cut["state"] == "initializing" and cut["import_done"] < 60_000, cut

    second = procs.spawn("worker", "--watch-s", "0.2", env=env, name="worker-2")
    wait_until(lambda: task_row(engine, cid)["state"] != "initializing", 60, "the import ends")
    task = task_row(engine, cid)
    assert task["state"] == "stopped" and task["import_error"] == "", task
    assert task["import_job_id"] != first_job
    assert_exactly(engine, cid, leads, issues)
    log = procs.log(second)
    assert f"import of task {cid} restarted as job {task['import_job_id']}" in log, log[-3000:]
    assert f"task {cid}: import resumes after row" in log
    conn.close()
    engine.dispose()


# --- cancel, through the API ---------------------------------------------------------------------------


@dataclass
class Admin:
    """The web app (`web`) with the headers of an admin and of a supervisor, and a skill group."""

    web: WebHarness
    admin: dict[str, str]
    sup: dict[str, str]
    group_id: int


@pytest.fixture
def api(web: WebHarness, monkeypatch: pytest.MonkeyPatch) -> Admin:
    """An admin and a supervisor on the web app; a worker run by the test sees the test database."""
    monkeypatch.setenv("CALLCENTER_DATABASE_URL", web.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("CALLCENTER_MODE", "dev")
    monkeypatch.delenv("CALLCENTER_REDIS_URL", raising=False)
    web.user("admin", ["admin"])
    web.user("sup", ["supervisor"])
    with session_scope(web.engine) as s:
        group_id = accounts.create_skill_group(s, name="Sales").id
    assert group_id is not None
    return Admin(web, web.headers("admin"), web.headers("sup"), group_id)


def create(api: Admin, body: bytes) -> dict[str, Any]:
    resp = api.web.client.post(
        "/api/tasks",
        data={"name": "Renewals", "skill_group_id": str(api.group_id)},
        files={"file": ("list.csv", io.BytesIO(body), "text/csv")},
        headers=api.admin,
    )
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def test_an_admin_cancels_a_stuck_import_then_can_delete_the_task(api: Admin, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    make_list(path, 50)
    task = create(api, path.read_bytes())  # no worker runs: the import is stuck
    tid = task["id"]
    assert api.web.client.delete(f"/api/tasks/{tid}", headers=api.admin).status_code == 409
    assert api.web.client.post(f"/api/tasks/{tid}/import/cancel", headers=api.sup).status_code == 403
    resp = api.web.client.post(f"/api/tasks/{tid}/import/cancel", headers=api.admin)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["state"] == "stopped" and body["actions"] == ["delete", "edit", "start"]
    assert body["import_progress"]["error"].startswith("import cancelled by admin after 0 of ")
    audit = api.web.client.get(f"/api/tasks/{tid}/audit", headers=api.admin).json()
    assert (audit[-1]["actor"], audit[-1]["old"], audit[-1]["new"], audit[-1]["note"]) == (
        "admin",
        "initializing",
        "stopped",
        "import cancelled",
    )
    # The queued job was cancelled: no worker will run it.
    conn = redis.Redis.from_url(api.web.settings.redis_url)
    job = Job.fetch(task_row(api.web.engine, tid)["import_job_id"], connection=conn)
    assert job.get_status() == "canceled" and Queue(jobs.QUEUE, connection=conn).job_ids == []
    conn.close()
    again = api.web.client.post(f"/api/tasks/{tid}/import/cancel", headers=api.admin)
    assert again.status_code == 409 and "stopped" in again.json()["detail"]
    assert api.web.client.delete(f"/api/tasks/{tid}", headers=api.admin).status_code == 200


@pytest.mark.processes
def test_cancel_stops_a_running_import_in_a_real_worker(api: Admin, procs: Processes, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    make_list(path, 60_000)
    worker = procs.spawn(
        "worker",
        "--watch-s",
        "0.2",
        env=worker_env(
            procs, api.web.engine.url.render_as_string(hide_password=False), api.web.settings.redis_url
        ),
    )
    tid = create(api, path.read_bytes())["id"]
    conn = redis.Redis.from_url(api.web.settings.redis_url)
    job = Job.fetch(task_row(api.web.engine, tid)["import_job_id"], connection=conn)
    wait_until(lambda: job.get_status(refresh=True) == "started", 30, "the import under way")
    horse = procs.descendants(worker.pid)
    resp = api.web.client.post(f"/api/tasks/{tid}/import/cancel", headers=api.admin)
    assert resp.status_code == 200, resp.text
    kept = task_row(api.web.engine, tid)
    assert kept["state"] == "stopped" and kept["import_done"] < 60_000
    wait_until(lambda: job.get_status(refresh=True) == "stopped", 10, "the worker stops the job")
    wait_until(lambda: not any(procs.alive(p) for p in horse), 5, "its work horse (and pool) gone")
    time.sleep(1.0)  # the watchdog looks 5 times meanwhile: nothing restarts, nothing more is written
    count = rows(api.web.engine, "SELECT COUNT(*) FROM lead WHERE campaign_id = :c", c=tid)[0][0]
    assert count == kept["import_ok"] and task_row(api.web.engine, tid)["state"] == "stopped"
    assert worker.poll() is None  # the worker itself goes on
    conn.close()
