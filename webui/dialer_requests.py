"""Requests the web makes of the dialer process (preview clicks, spy): published on the dialer topic,
answered on a per-request Redis list. The dialer owns the PBX links, so these go through it."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import HTTPException, Request

from callcenter.bus import DIALER_TOPIC
from callcenter.runner import reply_key
from webui.context import get_ctx


def ask_dialer(request: Request, message_type: str, payload: dict[str, Any], timeout_s: float = 6.0) -> Any:
    """Publish a request on the dialer topic and wait for its reply (409 / 503 on failure)."""
    ctx = get_ctx(request)
    request_id = uuid.uuid4().hex
    receivers = ctx.bus.publish(DIALER_TOPIC, message_type, {**payload, "request_id": request_id})
    if not receivers:
        raise HTTPException(503, "no dialer is running")
    reply = ctx.redis.blpop(reply_key(request_id), timeout=timeout_s)
    if reply is None:
        raise HTTPException(504, "the dialer did not answer in time")
    data = json.loads(reply[1])
    if not data.get("ok"):
        raise HTTPException(int(data.get("status", 409)), data.get("error", "refused by the dialer"))
    return data
