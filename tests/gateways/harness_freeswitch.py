"""Contract harness for the FreeSWITCH driver: the ESL test peer replays the recorded FreeSWITCH 1.10
traffic over a real loopback socket, ten times faster than it was recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from callcenter.gateways.base import Gateway
from callcenter.gateways.freeswitch import FreeswitchGateway
from tests.gateways.contract import EventLog
from tests.peers.esl import DEFAULT_PASSWORD, EslPeer

# The numbers the recordings dialled (tests/peers/esl.py DEFAULT_NUMBERS picks the trace by them).
NUMBERS = {
    "answer": "10000001",
    "busy": "10000002",
    "no_answer": "10000003",
    # No recording has Q.850 34: the peer plays the 503 recording as FreeSWITCH reports a 503 that carries
    # `Reason: Q.850;cause=34` (NORMAL_CIRCUIT_CONGESTION). A plain 503 is NORMAL_TEMPORARY_FAILURE (41),
    # like an unreachable address, and stays `failed` (test_freeswitch_traces.py).
    "congestion": "10000010",
    "unknown": "10000005",  # nothing listens at the address: 41 within a millisecond
    "abandon": "10000006",
    "answer_race": "10000011",  # early-transfer-originator-cancel.jsonl, played as recorded
}


def make_gateway(peer: EslPeer, **overrides: Any) -> FreeswitchGateway:
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": peer.port,
        "password": DEFAULT_PASSWORD,
        "timeout_s": 2.0,
        "keepalive_s": 2.0,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
    }
    options.update(overrides)
    return FreeswitchGateway(**options)


class FreeswitchHarness:
    name = "freeswitch"
    driver = FreeswitchGateway
    numbers = NUMBERS
    agent = "1001"
    supervisor = "1002"
    # originate_timeout = 6, as in the recording (FreeSWITCH rings 5 to 6 s of it).
    ring_timeout_s = 5.0
    time_scale = 0.1

    def __init__(self) -> None:
        self._peers: dict[int, EslPeer] = {}

    @asynccontextmanager
    async def run(self, log: EventLog) -> AsyncIterator[Gateway]:
        async with EslPeer(time_scale=self.time_scale) as peer:
            log.pbx_has = lambda call_id: call_id in peer.channels
            gw = make_gateway(peer)
            await gw.start(log.emit)
            self._peers[id(gw)] = peer
            try:
                yield gw
            finally:
                self._peers.pop(id(gw), None)
                await gw.close()

    async def agent_dials(self, gateway: Gateway, extension: str, number: str) -> None:
        self._peers[id(gateway)].agent_dials(extension, number)

    def agent_unreachable(self, gateway: Gateway, extension: str) -> None:
        self._peers[id(gateway)].unreachable_agents.add(extension)

    def refuse_originates(self, gateway: Gateway) -> None:
        self._peers[id(gateway)].session_rate = 1  # sessions-per-second 1 lets N-1 = 0 through

    def shut_down(self, gateway: Gateway) -> None:
        self._peers[id(gateway)].shut_down()


HARNESS = FreeswitchHarness()
