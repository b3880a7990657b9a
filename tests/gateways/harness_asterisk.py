"""Contract harness for the Asterisk driver: `AsteriskGateway` over a real loopback socket against the
AMI test peer, which replays recorded Asterisk 20 conversations (tests/peers/ami.py). This module plays
the chan_sip recordings (tests/fixtures/asterisk-20/); `harness_asterisk_pjsip.py` the same scenarios on
the chan_pjsip ones (tests/fixtures/asterisk-20-pjsip/), whose causes and event order differ."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from callcenter.gateways.asterisk import AsteriskGateway
from callcenter.gateways.base import Gateway
from tests.gateways.contract import EventLog
from tests.peers.ami import CHAN_SIP, AmiPeer, TraceSet

USERNAME, SECRET = "callcenter", "s3cret-ami"

NUMBERS = {
    "answer": "+8610000001",
    "busy": "+8620000001",
    "no_answer": "+8630000001",
    "congestion": "+8640000001",
    "unknown": "+8650000001",
    "abandon": "+8610000002",
    "answer_race": "+8610000003",
}
AMD_NUMBER = "+8610000042"

# Dialled digits -> the recorded conversation the peer replays for them (chan_sip set).
SCENARIOS = {
    NUMBERS["answer"].lstrip("+"): "originate-answered-agent-bridged.jsonl",
    NUMBERS["busy"].lstrip("+"): "originate-busy.jsonl",
    NUMBERS["no_answer"].lstrip("+"): "originate-no-answer.jsonl",
    NUMBERS["congestion"].lstrip("+"): "originate-congestion.jsonl",
    NUMBERS["unknown"].lstrip("+"): "originate-unknown-peer.jsonl",
    NUMBERS["abandon"].lstrip("+"): "answered-then-abandoned.jsonl",
    # chan_sip sent OriginateResponse before the UserEvent (9 of 9): the peer holds it back (late_responses)
    NUMBERS["answer_race"].lstrip("+"): "originate-answered-agent-bridged.jsonl",
    AMD_NUMBER.lstrip("+"): "answered-amd-verdict.jsonl",
}


def make_peer(traces: TraceSet = CHAN_SIP, scenarios: dict[str, str] | None = None, **kw: Any) -> AmiPeer:
    kw.setdefault("late_responses", {NUMBERS["answer_race"].lstrip("+")})
    return AmiPeer(scenarios or SCENARIOS, traces=traces, username=USERNAME, secret=SECRET, **kw)


def make_gateway(peer: AmiPeer, **kw: Any) -> AsteriskGateway:
    options: dict[str, Any] = {
        "timeout_s": 2.0,
        "keepalive_s": 2.0,
        "reconnect_initial_s": 0.05,
        "reconnect_max_s": 0.4,
        "end_grace_s": 0.2,
    }
    options.update(kw)
    return AsteriskGateway(host=peer.host, port=peer.port, username=USERNAME, secret=SECRET, **options)


class AsteriskHarness:
    driver = AsteriskGateway
    numbers = NUMBERS
    agent = "1001"
    supervisor = "1002"
    ring_timeout_s = 1.0

    def __init__(self, name: str, traces: TraceSet, scenarios: dict[str, str]) -> None:
        self.name = name
        self.traces = traces
        self.scenarios = scenarios
        self._peers: dict[int, AmiPeer] = {}

    @asynccontextmanager
    async def run(self, log: EventLog) -> AsyncIterator[Gateway]:
        async with make_peer(self.traces, self.scenarios) as peer:
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
        # The one Originate refusal on record: "Asterisk is shutting down" (graceful-restart-while-ringing).
        self._peers[id(gateway)].shutting_down = True

    def shut_down(self, gateway: Gateway) -> None:
        self._peers[id(gateway)].restart_now()


HARNESS = AsteriskHarness("asterisk", CHAN_SIP, SCENARIOS)
