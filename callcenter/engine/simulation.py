"""The dialer engine on the simulated PBX in discrete-event time: four simulated hours in seconds.

The same `DialerCore`, store and `SimulatedGateway` as in production; only time is different: a
`HeapScheduler` jumps from one due callback to the next. Used by the benchmarks and by tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy.engine import Engine

from callcenter.clock import HeapScheduler
from callcenter.engine.commands import Command, ConnectAgent, Hangup, Originate, PlayAndHangup
from callcenter.engine.dialer import DialerCore
from callcenter.engine.events import GatewayDraining, GatewayEvent, GatewayLink
from callcenter.engine.pacing import Pacer
from callcenter.engine.sqlstore import SqlStore
from callcenter.engine.store import AgentRow, CampaignConf
from callcenter.engine.tasks import make_pacer
from callcenter.gateways.base import GatewayError
from callcenter.gateways.simulated import Script, SimProfile, SimulatedGateway

log = logging.getLogger(__name__)


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (the simulated gateway's) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("coroutine suspended; use asyncio")


class Simulation:
    def __init__(
        self,
        engine: Engine,
        profile: SimProfile,
        *,
        start: float = 1_767_225_600.0,  # 2026-01-01 00:00 UTC
        pacer_factory: Callable[[CampaignConf], Pacer] = make_pacer,
        tick_s: float = 1.0,
        dialer_id: str = "sim",
        script: dict[str, Script] | None = None,
        originates_per_s: float = 10_000.0,  # the simulated PBX has no session-rate limit by default
    ) -> None:
        self.sched = HeapScheduler(start)
        self.gateway = SimulatedGateway(self.sched, profile, script=script)
        self.store = SqlStore(engine, dialer_id)
        # Only the engine itself moves simulated agents, so its cache needs no frequent re-reading.
        self.core = DialerCore(
            self.store,
            pacer_factory=pacer_factory,
            wrap_sampler=self._wrap,
            refresh_s=15.0,
            originates_per_s=originates_per_s,
        )
        self.tick_s = tick_s
        self.pending: list[GatewayEvent] = []
        self.failures = 0
        run_sync(self.gateway.start(self._emit))
        with self.store.transaction():
            self._execute(self.core.start(self.now))
            self._execute(self.core.reconcile("default", [], lambda cid: False, self.now))
        self._next_tick = self.now

    @property
    def now(self) -> float:
        return self.sched.now()

    def _emit(self, event: GatewayEvent) -> None:
        self.pending.append(event)

    def _wrap(self, agent: AgentRow) -> float | None:
        return self.gateway.sample_wrap_up() if agent.simulated else None

    def _execute(self, commands: list[Command]) -> None:
        gw = self.gateway
        for command in commands:
            try:
                if isinstance(command, Originate):
                    gw.originate_now(command.request)
                elif isinstance(command, ConnectAgent):
                    gw.connect_agent_now(command.call_id, command.extension)
                elif isinstance(command, PlayAndHangup):
                    gw.play_and_hangup_now(command.call_id, command.sound)
                elif isinstance(command, Hangup):
                    gw.hangup_now(command.call_id)
            except GatewayError as exc:
                self.failures += 1
                self._execute(self.core.command_failed(command, exc, self.now))

    def _drain(self) -> None:
        while self.pending:
            events, self.pending = self.pending, []
            with self.store.transaction():
                calls = [e for e in events if not isinstance(e, GatewayLink | GatewayDraining)]
                for event in events:  # link and drain events concern the gateway, in their order
                    if isinstance(event, GatewayLink | GatewayDraining):
                        self._execute(self.core.gateway_changed("default", event, self.now))
                if calls:
                    self._execute(self.core.handle(calls, self.now))

    def run_until(self, until: float) -> None:
        """Advance simulated time to `until`, running every event, timer and tick on the way."""
        sched = self.sched
        while True:
            candidates = [
                t for t in (sched.next_time(), self._next_tick, self.core.next_wake()) if t is not None
            ]
            t = min(candidates)
            if t > until:
                break
            sched.run_until(t)
            self._drain()
            wake = self.core.next_wake()
            if t >= self._next_tick or (wake is not None and wake <= t):
                with self.store.transaction():
                    self._execute(self.core.tick(t))
                self._drain()
                if t >= self._next_tick:
                    self._next_tick = t + self.tick_s
        sched.run_until(until)
        self._drain()

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def agents_changed(self) -> None:
        """Tell the engine agents changed outside it (as the web's bus message does)."""
        with self.store.transaction():
            self._execute(self.core.agent_changed(self.now))
        self._drain()


def _table(model: Any) -> Any:
    return model.__table__


def seed_world(
    engine: Engine,
    *,
    agents: int,
    leads: int,
    now: float,
    campaign: dict[str, Any] | None = None,
    number_prefix: str = "+8613",
    extension_base: int = 5000,
    numbers: list[str] | None = None,
    tz: str = "Asia/Shanghai",
) -> int:
    """A skill group of `agents` simulated agents (ready), and a running task of `leads` numbers
    (`numbers` when given, else generated).
    Returns the task id. Fast: plain inserts, no password hashing per agent."""
    from sqlalchemy import insert

    from callcenter.accounts import hash_password
    from callcenter.models import (
        Agent,
        AgentSkill,
        Campaign,
        CampaignState,
        Lead,
        SkillGroup,
        User,
    )

    pw = hash_password("simulated-agent")
    with engine.begin() as c:
        group_id = c.execute(
            insert(_table(SkillGroup)).values(name=f"sim-{now}", description="")
        ).inserted_primary_key[0]  # type: ignore[index]
        for i in range(agents):
            uid = c.execute(
                insert(_table(User)).values(
                    username=f"sim{extension_base + i}",
                    display_name=f"Sim {i}",
                    locale="en",
                    password_hash=pw,
                    is_active=True,
                    token_version=0,
                    created_at=now,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            aid = c.execute(
                insert(_table(Agent)).values(
                    user_id=uid,
                    extension=str(extension_base + i),
                    state="ready",
                    state_since=now,
                    idle_since=now,
                    simulated=True,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            c.execute(insert(_table(AgentSkill)).values(agent_id=aid, skill_group_id=group_id))
        values = {
            "name": "simulated task",
            "state": CampaignState.RUNNING.value,
            "skill_group_id": group_id,
            "max_concurrency": max(10, agents * 10),
            "window_start": "00:00",
            "window_end": "24:00",
            "ring_timeout_s": 25,
            "wrap_up_s": 15,
            "created_at": now,
            "started_at": now,
            "retry_delays": '{"busy": 600, "no_answer": 1800}',
        }
        values.update(campaign or {})
        cid = c.execute(insert(_table(Campaign)).values(**values)).inserted_primary_key[0]  # type: ignore[index]
        batch = 5000
        for start in range(0, leads, batch):
            c.execute(
                insert(_table(Lead)),
                [
                    {
                        "campaign_id": cid,
                        "row_no": i + 1,
                        "number": numbers[i] if numbers else f"{number_prefix}{i:09d}",
                        "tz": tz,
                        "fields": "{}",
                        "status": "pending",
                        "attempts": 0,
                        "next_at": 0.0,
                        "claimed_by": "",
                        "last_result": "",
                        "last_call_id": "",
                    }
                    for i in range(start, min(leads, start + batch))
                ],
            )
    return int(cid)
