"""The web's side of the web -> dialer channel: typed requests (`callcenter.messages`) published on the
dialer topic, and - for those that need an answer - the `Reply` awaited on its own Redis list.

Waiting is async with a short timeout, so a slow or hung dialer costs a coroutine, never a worker
thread: 60 supervisors clicking "listen" on a hung dialer do not stall every other route.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import HTTPException
from starlette.requests import HTTPConnection

from callcenter.bus import DIALER_TOPIC
from callcenter.http import AppContext, get_ctx
from callcenter.messages import (
    AgentChanged,
    DialerRequest,
    PreviewDial,
    PreviewSkip,
    Reply,
    SpyRequest,
    TaskChanged,
    reply_key,
)

# One BLPOP waits at most this long: under the Redis client's socket timeout (5 s by default), so a
# slow answer is a wait, not a broken connection.
WAIT_STEP_S = 2.0
TIMEOUT_S = 6.0


def dialer(request: HTTPConnection) -> DialerClient:
    """The dialer client for a request's app."""
    return DialerClient(get_ctx(request))


class DialerClient:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    # --- notices (nobody waits for an answer) -------------------------------------------------------

    def agent_changed(self, agent_id: int) -> None:
        """Every agent state change made outside the dialer: it re-reads the agents and paces."""
        self._publish(AgentChanged(agent_id=agent_id))

    def task_changed(self, campaign_id: int | None) -> None:
        self._publish(TaskChanged(campaign_id=campaign_id))

    # --- requests (answered by the dialer) ----------------------------------------------------------

    async def preview_dial(self, *, call_id: str, agent_id: int) -> Reply:
        return await self.ask(PreviewDial(call_id=call_id, agent_id=agent_id))

    async def preview_skip(self, *, call_id: str, agent_id: int) -> Reply:
        return await self.ask(PreviewSkip(call_id=call_id, agent_id=agent_id))

    async def spy(self, *, target_extension: str, supervisor_extension: str, mode: str) -> Reply:
        return await self.ask(
            SpyRequest(
                target_extension=target_extension, supervisor_extension=supervisor_extension, mode=mode
            )
        )

    async def ask(self, request: DialerRequest, timeout_s: float = TIMEOUT_S) -> Reply:
        """Publish `request` with a fresh request id and wait for its reply: 503 when no dialer
        listens, 504 when none answers in time, the dialer's own status when it refuses."""
        redis = self.ctx.async_redis()
        counts = await redis.pubsub_numsub(DIALER_TOPIC)
        if not (int(counts[0][1]) if counts else 0):
            raise HTTPException(503, "no dialer is running")
        request = request.model_copy(update={"request_id": uuid.uuid4().hex})
        await redis.publish(DIALER_TOPIC, request.encode())
        key = reply_key(request.request_id)
        loop_time = _loop_time()
        deadline = loop_time + timeout_s
        raw: Any = None
        while raw is None:
            left = deadline - _loop_time()
            if left <= 0:
                raise HTTPException(504, "the dialer did not answer in time")
            # BLPOP's timeout is whole seconds on old servers; at least 1.
            raw = await redis.blpop([key], timeout=max(1, min(WAIT_STEP_S, round(left))))
        reply = Reply.model_validate_json(raw[1])
        if not reply.ok:
            raise HTTPException(reply.status, reply.error or "refused by the dialer")
        return reply

    def _publish(self, message: DialerRequest) -> None:
        self.ctx.redis.publish(DIALER_TOPIC, message.encode())


def _loop_time() -> float:
    import asyncio

    return asyncio.get_running_loop().time()
