"""The gateway contract suite: one set of scenarios every driver must pass identically.

A driver joins by providing a `Harness` in `tests/gateways/harness_<name>.py` (a module-level
`HARNESS` object). The harness starts the driver against whatever plays the PBX (the simulated PBX
itself, or a test peer replaying recorded Asterisk / FreeSWITCH traffic over a real socket) and names
the customer numbers that produce each situation. `test_contract.py` runs every scenario below
against every harness it finds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

from callcenter.engine.events import CallAnswered, CallConnected, CallEnded, CallRinging, GatewayEvent
from callcenter.gateways.base import Gateway

E = TypeVar("E")

# The situations a harness must be able to produce, by customer number. `answer_race`: the customer
# answers and the PBX reports the originate's own result (FreeSWITCH's BACKGROUND_JOB, Asterisk's
# OriginateResponse) only after the controller acted on the answer.
SCENARIOS = ("answer", "busy", "no_answer", "congestion", "unknown", "abandon", "answer_race")


class EventLog:
    """Collects a driver's events and lets a test wait for one that matches."""

    def __init__(self) -> None:
        self.events: list[GatewayEvent] = []
        self._changed = asyncio.Event()
        # Called with each event as the driver emits it (e.g. to act on an answer at once).
        self.hooks: list[Callable[[GatewayEvent], None]] = []
        # The PBX side's own view, set by the harness: does the PBX still have this call? A CallEnded
        # while it does breaks the first rule of base.py; `assert_well_ordered` fails on any.
        self.pbx_has: Callable[[str], bool] | None = None
        self.ended_early: list[CallEnded] = []

    def emit(self, event: GatewayEvent) -> None:
        if isinstance(event, CallEnded) and self.pbx_has is not None and self.pbx_has(event.call_id):
            self.ended_early.append(event)
        self.events.append(event)
        self._changed.set()
        for hook in self.hooks:
            hook(event)

    def of(self, call_id: str) -> list[GatewayEvent]:
        return [e for e in self.events if getattr(e, "call_id", None) == call_id]

    async def wait_for(self, predicate: Callable[[GatewayEvent], bool], timeout: float = 10.0) -> Any:
        """The first event (logged already or to come) that matches; typed Any, as the caller's
        predicate decides which kind it is (`wait_type` when one kind is asked for)."""

        async def _wait() -> GatewayEvent:
            seen = 0
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(_wait(), timeout)

    async def wait_type(self, kind: type[E], call_id: str | None = None, timeout: float = 10.0) -> E:
        event: E = await self.wait_for(
            lambda e: isinstance(e, kind) and (call_id is None or getattr(e, "call_id", None) == call_id),
            timeout,
        )
        return event

    async def ended(self, call_id: str, timeout: float = 15.0) -> CallEnded:
        return await self.wait_type(CallEnded, call_id, timeout)


class Harness(Protocol):
    name: str
    driver: type  # the driver class it runs (every driver in callcenter/gateways/ needs a harness)
    numbers: dict[str, str]  # scenario name (SCENARIOS) -> customer number that produces it
    agent: str  # an agent extension that answers
    supervisor: str  # a supervisor extension that answers
    ring_timeout_s: float  # ring timeout to use for the no_answer scenario

    def run(self, log: EventLog) -> AbstractAsyncContextManager[Gateway]:
        """Start the PBX side and the driver (driver.start(log.emit) done); stop both on exit."""
        ...

    async def agent_dials(self, gateway: Gateway, extension: str, number: str) -> None:
        """Make the agent's phone at `extension` place a call to `number` by hand."""
        ...

    def agent_unreachable(self, gateway: Gateway, extension: str) -> None:
        """Make the phone at `extension` unreachable: connecting a call to it fails at once."""
        ...

    def refuse_originates(self, gateway: Gateway) -> None:
        """Make the PBX refuse every new call before trying the customer's line (over its session rate,
        shutting down ...), as the real one did."""
        ...

    def shut_down(self, gateway: Gateway) -> None:
        """Start the PBX's graceful shutdown (or restart), as recorded: ringing calls are cut, new calls
        refused, the link stays open a while."""
        ...


def new_call_id() -> str:
    return str(uuid.uuid4())


def kinds(events: list[GatewayEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def assert_well_ordered(log: EventLog, call_id: str) -> None:
    """Ringing? -> Answered? -> Connected? -> Ended, with Ended exactly once and last."""
    order = {CallRinging: 0, CallAnswered: 1, CallConnected: 2, CallEnded: 3}
    seq = [e for e in log.of(call_id) if type(e) in order]
    ranks = [order[type(e)] for e in seq]
    assert ranks == sorted(ranks), f"events out of order for {call_id}: {kinds(seq)}"
    assert sum(isinstance(e, CallEnded) for e in seq) == 1, f"CallEnded not exactly once: {kinds(seq)}"
    assert sum(isinstance(e, CallAnswered) for e in seq) <= 1, f"CallAnswered more than once: {kinds(seq)}"
    early = [e for e in log.ended_early if e.call_id == call_id]
    assert not early, f"reported ended while the PBX still had it: {early}"


async def drain(seconds: float = 0.05) -> AsyncIterator[None]:  # pragma: no cover - helper
    await asyncio.sleep(seconds)
    yield
