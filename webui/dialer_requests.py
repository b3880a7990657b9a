"""Requests the web makes of the dialer process (preview clicks, spy): published on the dialer topic,
answered on a per-request Redis list. The dialer owns the PBX links, so these go through it."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from fastapi import HTTPException, Request

from callcenter.bus import DIALER_TOPIC
from callcenter.engine.runner import reply_key
from callcenter.http import get_ctx

# One BLPOP waits at most this long: under the Redis client's socket timeout (5 s by default), so a
# slow answer is a wait, not a broken connection.
WAIT_STEP_S = 2.0


def dialers_listening(redis: Any) -> int:
    """Dialer processes subscribed to the dialer topic. PUBSUB NUMSUB counts channel subscribers only,
    so the web processes' own pattern subscription (`cc:*`) is not mistaken for a dialer."""
    counts = redis.pubsub_numsub(DIALER_TOPIC)
    return int(counts[0][1]) if counts else 0


def ask_dialer(request: Request, message_type: str, payload: dict[str, Any], timeout_s: float = 6.0) -> Any:
    """Publish a request on the dialer topic and wait for its reply (409 / 503 / 504 on failure)."""
    ctx = get_ctx(request)
    if not dialers_listening(ctx.redis):
        raise HTTPException(503, "no dialer is running")
    request_id = uuid.uuid4().hex
    ctx.bus.publish(DIALER_TOPIC, message_type, {**payload, "request_id": request_id})
    deadline = time.monotonic() + timeout_s
    reply = None
    while reply is None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise HTTPException(504, "the dialer did not answer in time")
        # BLPOP's timeout is whole seconds on old servers; at least 1.
        reply = ctx.redis.blpop(reply_key(request_id), timeout=max(1, min(WAIT_STEP_S, round(left))))
    data = json.loads(reply[1])
    if not data.get("ok"):
        raise HTTPException(int(data.get("status", 409)), data.get("error", "refused by the dialer"))
    return data
