"""Background jobs on rq. Jobs are plain functions that take ids, not objects, and build what they need
from the settings in the worker's environment.

Also the process rule every process we start follows: it dies with its parent (`die_with_parent`),
so a killed worker leaves no work horse, and a killed work horse no pool process, behind.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from callcenter.config import Settings

log = logging.getLogger(__name__)
QUEUE = "callcenter"

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
                sleep_time=1.0, daemon=True, exception_handler=self._pubsub_exception_handler
            )

    return HorseDiesWithWorker


def run_worker(settings: Settings, *, burst: bool = False) -> None:
    from redis import Redis
    from rq import Queue

    conn = Redis.from_url(settings.redis_url)
    worker = _worker_class()([Queue(QUEUE, connection=conn)], connection=conn)
    log.info("rq worker on queue %s (%s)", QUEUE, settings.redis_url)
    worker.work(burst=burst, with_scheduler=False)
