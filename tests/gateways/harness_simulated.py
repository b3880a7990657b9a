"""Contract harness for the simulated PBX: scripted numbers on a real-time asyncio scheduler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from callcenter.clock import LoopScheduler
from callcenter.gateways.base import Gateway
from callcenter.gateways.simulated import Outcome, Script, SimProfile, SimulatedGateway
from tests.gateways.contract import EventLog

NUMBERS = {
    "answer": "+861000000001",
    "busy": "+861000000002",
    "no_answer": "+861000000003",
    "congestion": "+861000000004",
    "unknown": "+861000000005",
    "abandon": "+861000000006",
    "answer_race": "+861000000007",
}


class SimulatedHarness:
    name = "simulated"
    driver = SimulatedGateway
    numbers = NUMBERS
    agent = "1001"
    supervisor = "1002"
    ring_timeout_s = 1.0

    def _script(self) -> dict[str, Script]:
        return {
            NUMBERS["answer"]: Script(Outcome.HUMAN, ring_s=0.1, talk_s=0.5, patience_s=1.0),
            NUMBERS["busy"]: Script(Outcome.BUSY, ring_s=0.05),
            NUMBERS["no_answer"]: Script(Outcome.NO_ANSWER),
            NUMBERS["congestion"]: Script(Outcome.CONGESTION, ring_s=0.05),
            NUMBERS["unknown"]: Script(Outcome.FAILED, ring_s=0.01),
            NUMBERS["abandon"]: Script(Outcome.HUMAN, ring_s=0.1, patience_s=0.3),
            NUMBERS["answer_race"]: Script(Outcome.HUMAN, ring_s=0.1, talk_s=0.5, patience_s=1.0),
        }

    @asynccontextmanager
    async def run(self, log: EventLog) -> AsyncIterator[Gateway]:
        gw = SimulatedGateway(
            LoopScheduler(),
            SimProfile(abandon_message_s=0.2),
            script=self._script(),
            originate_result_s=0.02,  # the answer is reported before the originate returns
        )
        log.pbx_has = lambda call_id: call_id in gw.calls
        await gw.start(log.emit)
        try:
            yield gw
        finally:
            await gw.close()

    async def agent_dials(self, gateway: Gateway, extension: str, number: str) -> None:
        assert isinstance(gateway, SimulatedGateway)
        gateway.agent_dials(extension, number, ring_s=0.1, talk_s=0.3)

    def agent_unreachable(self, gateway: Gateway, extension: str) -> None:
        assert isinstance(gateway, SimulatedGateway)
        gateway.unreachable.add(extension)

    def refuse_originates(self, gateway: Gateway) -> None:
        assert isinstance(gateway, SimulatedGateway)
        gateway.refusing = True

    def shut_down(self, gateway: Gateway) -> None:
        assert isinstance(gateway, SimulatedGateway)
        gateway.shut_down()


HARNESS = SimulatedHarness()
