"""Background jobs on rq. Jobs are plain functions that take ids, not objects, and build what they need
from the settings in the worker's environment."""

from __future__ import annotations

import logging
from typing import Any

from callcenter.config import Settings

log = logging.getLogger(__name__)
QUEUE = "callcenter"


def queue(redis_url: str) -> Any:
    from redis import Redis
    from rq import Queue

    return Queue(QUEUE, connection=Redis.from_url(redis_url))


def run_worker(settings: Settings, *, burst: bool = False) -> None:
    from redis import Redis
    from rq import Queue, Worker

    conn = Redis.from_url(settings.redis_url)
    worker = Worker([Queue(QUEUE, connection=conn)], connection=conn)
    log.info("rq worker on queue %s (%s)", QUEUE, settings.redis_url)
    worker.work(burst=burst, with_scheduler=False)
