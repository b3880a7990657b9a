"""Background jobs on rq. Jobs are plain functions that take ids, not objects, and build what they need
from the settings in the worker's environment.

Also the process rule every process we start follows: it dies with its parent (`die_with_parent`),
so a killed worker leaves no work horse, and a killed work horse no pool process, behind; and what
keeps list imports alive across a killed worker: their lease, the watchdog every worker runs, and
how an admin's cancel stops one.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from callcenter.config import Settings

log = logging.getLogger(__name__)
QUEUE = "callcenter"
LEASE_S = 60.0  # an import renews its lease as rows go by; one not renewed this long is stale
WATCH_S = 5.0  # how often each worker looks for stale imports
MAX_RESTARTS = 5  # an import that keeps dying (a file that kills its process) is failed after this

# --- process lifetime -----------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_prctl: Any = None


def _prctl_function() -> Any:
    """libc's prctl, looked up once (never in a child between fork and exec: dlopen is not safe there)."""
    global _prctl
    if _prctl is None and sys.platform.startswith("linux"):
        try:
            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            _prctl = False
    return _prctl or None


def die_with_parent(sig: int = signal.SIGTERM, *, parent: int | None = None) -> bool:
    """Ask Linux to send `sig` to this process when its parent ends, even by SIGKILL (PR_SET_PDEATHSIG;
    "parent" is the thread that forked us). If `parent` is given and is already gone, `sig` is sent
    at once. False where there is no prctl (not Linux): then only a watchdog can tell."""
    prctl = _prctl_function()
    if prctl is None or prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(sig), 0, 0, 0) != 0:
        return False
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)
    return True


def die_with_parent_preexec(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` for subprocess.Popen of a program that is not ours (redis-server): the child dies
    with us. None where prctl does not exist."""
    prctl = _prctl_function()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(sig), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


# --- the queue and the worker ---------------------------------------------------------------------


def queue(redis_url: str) -> Any:
    from redis import Redis
    from rq import Queue

    return Queue(QUEUE, connection=Redis.from_url(redis_url))


def _worker_class() -> Any:
    from rq import Worker

    class HorseDiesWithWorker(Worker):
        """rq's forking worker whose work horse gets SIGKILL from the kernel when the worker ends, even
        killed: an orphaned horse would go on with a job that nobody watches any more."""

        def main_work_horse(self, job: Any, queue: Any) -> None:
            die_with_parent(signal.SIGKILL, parent=self.pid)
            super().main_work_horse(job, queue)

        def subscribe(self) -> None:
            """rq's command channel with a 1 s wait instead of 60 s: once unsubscribed, redis-py's
            listener thread waits that long for a new subscription, and a warm shutdown joins it (a
            worker told to stop took up to a minute)."""
            self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
            self.pubsub = self.connection.pubsub()
            self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
            self.pubsub_thread = self.pubsub.run_in_thread(
                sleep_time=1.0,
                daemon=True,
                exception_handler=getattr(self, "_pubsub_exception_handler", None),
            )

    return HorseDiesWithWorker


def run_worker(settings: Settings, *, burst: bool = False, watch_s: float = WATCH_S) -> None:
    """`callcenter worker`: run jobs, and watch the imports (`ImportWatchdog`) while at it."""
    from redis import Redis
    from rq import Queue

    conn = Redis.from_url(settings.redis_url)
    worker = _worker_class()([Queue(QUEUE, connection=conn)], connection=conn)
    log.info("rq worker on queue %s (%s)", QUEUE, settings.redis_url)
    watchdog = ImportWatchdog(settings, interval_s=watch_s)
    watchdog.start()
    try:
        worker.work(burst=burst, with_scheduler=False)
    finally:
        watchdog.stop()


# --- list imports: enqueue, lease, stop, watchdog -------------------------------------------------


def new_import_job_id(campaign_id: int) -> str:
    return f"import-{campaign_id}-{uuid.uuid4().hex[:8]}"


def enqueue_import(
    rq_queue: Any,
    *,
    job_id: str,
    campaign_id: int,
    path: str,
    phone_column: str | None,
    filename: str = "",
    batch: int | None = None,
    lease_s: float | None = None,
) -> Any:
    """Queue a task's list import as `job_id`, which the task row must name already
    (`Campaign.import_job_id`): a job that finds another id there does nothing."""
    from callcenter.leads import import_job

    options: dict[str, Any] = {}
    if batch is not None:
        options["batch"] = batch
    if lease_s is not None:
        options["lease_s"] = lease_s
    return rq_queue.enqueue_call(
        func=import_job,
        args=(campaign_id, path, phone_column, filename),
        kwargs=options,
        job_id=job_id,
        timeout=3600,
    )


def _lease_key(campaign_id: int) -> str:
    return f"callcenter:import:{campaign_id}:lease"


def _restarts_key(campaign_id: int) -> str:
    return f"callcenter:import:{campaign_id}:restarts"


def _watch_key(campaign_id: int) -> str:
    return f"callcenter:import:{campaign_id}:watch"


class ImportLease:
    """A running import's heartbeat: a Redis key naming the job that lives `ttl_s` unless renewed.
    Renewing is cheap to call often (it writes at most every ttl/4) and never fails the import:
    with Redis away, the database is all the import needs."""

    def __init__(self, conn: Any, campaign_id: int, job_id: str, ttl_s: float) -> None:
        self.conn = conn
        self.key = _lease_key(campaign_id)
        self.job_id = job_id
        self.ttl_s = ttl_s
        self._next = 0.0
        self._failing = False

    def renew(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next:
            return
        from redis import RedisError

        try:
            self.conn.set(self.key, self.job_id, px=max(1, int(self.ttl_s * 1000)))
        except RedisError as exc:
            if not self._failing:
                log.warning("import lease %s not renewed: %s", self.key, exc)
            self._failing = True
            return
        self._failing = False
        self._next = now + self.ttl_s / 4

    def release(self) -> None:
        from redis import RedisError

        try:
            if self.conn.get(self.key) in (self.job_id, self.job_id.encode()):
                self.conn.delete(self.key)
        except RedisError:
            pass  # it expires by itself


def stop_import(conn: Any, job_id: str, campaign_id: int) -> None:
    """Stop a cancelled import's job: drop it from the queue, or have its worker kill its work
    horse (the job would stop by itself at its next commit; this frees the worker now)."""
    from redis import RedisError
    from rq.command import send_stop_job_command
    from rq.exceptions import InvalidJobOperation, NoSuchJobError
    from rq.job import Job, JobStatus

    try:
        conn.delete(_lease_key(campaign_id), _restarts_key(campaign_id))
        if not job_id:
            return
        job = Job.fetch(job_id, connection=conn)
        status = job.get_status()
        if status == JobStatus.STARTED:
            send_stop_job_command(conn, job_id)
        elif status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
            job.cancel()
    except (NoSuchJobError, InvalidJobOperation):
        pass
    except RedisError as exc:  # the task is stopped anyway: the job writes nothing more
        log.warning("could not stop import job %s: %s", job_id, exc)


class ImportHealth(StrEnum):
    ALIVE = "alive"  # its lease is fresh, or its worker still heartbeats the job
    WAITING = "waiting"  # queued for a worker (or just being queued)
    STALE = "stale"  # no lease and no live worker: restart it
    LOST = "lost"  # its job is gone from Redis: it cannot be restarted


def import_health(
    *,
    lease: bool,
    status: str | None,
    job_heartbeat_age_s: float | None,
    task_age_s: float,
    lease_s: float,
) -> ImportHealth:
    """What an import in `initializing` needs (pure).

    >>> import_health(lease=False, status="started", job_heartbeat_age_s=90.0, task_age_s=600.0, lease_s=60.0)
    <ImportHealth.STALE: 'stale'>
    """
    if lease:
        return ImportHealth.ALIVE
    if status is None:
        return ImportHealth.LOST if task_age_s > lease_s else ImportHealth.WAITING
    if status in ("queued", "deferred", "scheduled"):
        return ImportHealth.WAITING
    if status == "started" and job_heartbeat_age_s is not None and job_heartbeat_age_s < lease_s:
        return ImportHealth.ALIVE  # its worker lives (a slow step, or the first lease not yet written)
    return ImportHealth.STALE


def restart_stale_imports(
    engine: Any, conn: Any, *, now: float, max_restarts: int = MAX_RESTARTS
) -> dict[int, ImportHealth]:
    """One look at every task in `initializing`. A stale import (no lease, no live worker: killed,
    or its job failed on a database outage) is queued again as a new job that resumes after its last
    committed row; after `max_restarts` restarts, or when its job is gone from Redis, the import is
    failed with a reason, so no task stays `initializing` for ever. Several workers may watch: the
    first to see a stale import takes it (a Redis lock for one lease period, then a compare-and-set
    of the task's job id)."""
    from rq import Queue
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus
    from sqlalchemy import select, update

    from callcenter.leads import finish_import, import_job
    from callcenter.models import Campaign, CampaignState

    table = Campaign.__table__  # type: ignore[attr-defined]
    with engine.connect() as db:
        rows = db.execute(
            select(table.c.id, table.c.import_job_id, table.c.created_at).where(
                table.c.state == CampaignState.INITIALIZING.value
            )
        ).all()
    seen: dict[int, ImportHealth] = {}
    for campaign_id, job_id, created_at in rows:
        job = None
        if job_id:
            try:
                job = Job.fetch(job_id, connection=conn)
            except NoSuchJobError:
                job = None
        lease_s = float((job.kwargs.get("lease_s") if job else None) or LEASE_S)
        beat = job.last_heartbeat if job else None
        health = import_health(
            lease=bool(conn.exists(_lease_key(campaign_id))),
            status=JobStatus(job.get_status()).value if job else None,
            job_heartbeat_age_s=now - beat.timestamp() if beat else None,
            task_age_s=now - (created_at or 0.0),
            lease_s=lease_s,
        )
        seen[campaign_id] = health
        if health in (ImportHealth.ALIVE, ImportHealth.WAITING):
            continue
        if not conn.set(_watch_key(campaign_id), job_id or "-", nx=True, px=int(lease_s * 1000)):
            continue  # another worker is on it
        if job is None:
            log.error("import of task %s: its job %s is gone from Redis; failing it", campaign_id, job_id)
            finish_import(
                engine,
                campaign_id,
                error="the import was lost (its job is gone from Redis): delete the task and create it again",
                job_id=job_id,
            )
            continue
        restarts = int(conn.incr(_restarts_key(campaign_id)))
        conn.expire(_restarts_key(campaign_id), 7 * 24 * 3600)
        if restarts > max_restarts:
            log.error("import of task %s died %d times; failing it", campaign_id, restarts)
            finish_import(
                engine,
                campaign_id,
                error=f"the import stopped {restarts} times without finishing (last job {job_id})",
                job_id=job_id,
            )
            continue
        new_id = new_import_job_id(campaign_id)
        with engine.begin() as db:
            moved = db.execute(
                update(table)
                .where(
                    table.c.id == campaign_id,
                    table.c.state == CampaignState.INITIALIZING.value,
                    table.c.import_job_id == job_id,
                )
                .values(import_job_id=new_id)
            )
        if moved.rowcount != 1:
            continue
        Queue(QUEUE, connection=conn).enqueue_call(
            func=import_job, args=job.args, kwargs=job.kwargs, job_id=new_id, timeout=int(job.timeout or 3600)
        )
        log.warning(
            "import of task %s restarted as job %s (restart %d): job %s is %s, no lease for %.0f s",
            campaign_id,
            new_id,
            restarts,
            job_id,
            JobStatus(job.get_status()).value,
            lease_s,
        )
    return seen


# The worker forks a work horse for each job while the watchdog thread runs. A fork in the middle of
# a look would copy a lock the thread holds (an import lock, a connection pool's) into the horse,
# locked for ever: the horse hung importing the job's module. So a look and a fork exclude each
# other; a look takes milliseconds.
_LOOKING = threading.Lock()
os.register_at_fork(
    before=_LOOKING.acquire, after_in_parent=_LOOKING.release, after_in_child=_LOOKING.release
)


class ImportWatchdog:
    """A thread in each worker that runs `restart_stale_imports` every `interval_s`, with its own
    Redis client and database engine (nothing shared with the jobs), never across a fork."""

    def __init__(self, settings: Settings, *, interval_s: float = WATCH_S) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="import-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        with _LOOKING:
            from redis import Redis

            from callcenter.db import make_engine

            engine = make_engine(self.settings.effective_database_url)
            conn = Redis.from_url(self.settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
        try:
            while not self._stop.wait(self.interval_s):
                with _LOOKING:
                    try:
                        restart_stale_imports(engine, conn, now=time.time())
                    except Exception:  # the database or Redis is away: look again next time
                        log.exception("import watchdog: this look failed")
        finally:
            with _LOOKING:
                conn.close()
                engine.dispose()
