"""A hung dialer (subscribed to the dialer topic, never answering) does not stall the web: 60
supervisors clicking "listen" wait on coroutines, not on worker threads, so every other route answers
while all 60 are still waiting; each click then gets a 504 naming the dialer (issue 14, item 14)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest
import redis

from callcenter.bus import DIALER_TOPIC
from tests.web import sim
from tests.web.conftest import PASSWORD, LiveServer

CLICKS = 60


@pytest.fixture
def hung_dialer(live_server: LiveServer) -> Iterator[list[bytes]]:
    """A subscriber on the dialer topic that takes every request and answers none."""
    conn = redis.Redis.from_url(live_server.redis_url)
    pubsub = conn.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(DIALER_TOPIC)
    heard: list[bytes] = []
    stop = threading.Event()

    def swallow() -> None:
        while not stop.is_set():
            msg = pubsub.get_message(timeout=0.1)
            if msg is not None:
                heard.append(msg["data"])

    thread = threading.Thread(target=swallow, daemon=True)
    thread.start()
    yield heard
    stop.set()
    thread.join(5)
    pubsub.close()
    conn.close()


async def _scenario(url: str, agent_id: int) -> tuple[list[int], int, int]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        resp = await client.post("/api/auth/token", json={"username": "sue", "password": PASSWORD})
        headers = {"Authorization": f"Bearer {resp.json()['access_token']}"}
        clicks = [
            asyncio.create_task(
                client.post(
                    "/api/monitor/spy",
                    json={"agent_id": agent_id, "mode": "listen", "supervisor_extension": f"9{i:03d}"},
                    headers=headers,
                )
            )
            for i in range(CLICKS)
        ]
        await asyncio.sleep(0.5)
        me = await client.get("/api/me", headers=headers)
        # Every click is still waiting on the dialer when /api/me has answered.
        still_waiting = sum(not c.done() for c in clicks)
        answers = await asyncio.gather(*clicks)
        return [a.status_code for a in answers], me.status_code, still_waiting


def test_a_hung_dialer_stalls_no_route(live_server: LiveServer, hung_dialer: list[bytes]) -> None:
    live_server.user("ann", ["agent"], extension="1001")
    live_server.user("sue", ["supervisor"])
    ann = sim.agent_id(live_server.engine, "1001")

    statuses, me_status, still_waiting = asyncio.run(_scenario(live_server.url, ann))

    assert me_status == 200
    assert still_waiting == CLICKS
    assert statuses == [504] * CLICKS
    assert len(hung_dialer) == CLICKS
