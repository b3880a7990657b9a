"""Helpers to run the real engine on the simulated PBX in discrete-event time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from callcenter.engine.simulation import Simulation, seed_world
from callcenter.gateways.simulated import Dist, Outcome, Script, SimProfile

T0 = 1_767_254_400.0  # 2026-01-01 08:00 UTC = 16:00 in Shanghai


@dataclass
class World:
    sim: Simulation
    engine: Engine
    campaign_id: int

    def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        with self.engine.connect() as c:
            return [tuple(r) for r in c.execute(text(sql), params)]

    def one(self, sql: str, **params: Any) -> Any:
        return self.rows(sql, **params)[0][0]

    def calls(self) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(text("SELECT * FROM call ORDER BY created_at, id"))]

    def agent(self, agent_id: int) -> dict[str, Any]:
        with self.engine.connect() as c:
            return dict(c.execute(text("SELECT * FROM agent WHERE id = :i"), {"i": agent_id}).one()._mapping)


def quiet_profile(**overrides: Any) -> SimProfile:
    values: dict[str, Any] = dict(
        p_human=0.0,
        p_machine=0.0,
        p_busy=0.0,
        p_no_answer=1.0,
        ring=Dist.const(5),
        talk=Dist.const(30),
        wrap_up=Dist.const(10),
        agent_answer=Dist.const(0.3),
        patience=Dist.const(30),
        amd_miss=0.0,
        amd_false_machine=0.0,
        abandon_message_s=3.0,
        seed=3,
    )
    values.update(overrides)
    return SimProfile(**values)


class WorldFactory(Protocol):
    """The `world_factory` fixture: a seeded task on `engine` and the simulation that will run it."""

    def __call__(
        self,
        engine: Engine,
        *,
        agents: int = ...,
        script: dict[str, Script] | None = ...,
        numbers: list[str] | None = ...,
        campaign: dict[str, Any] | None = ...,
        profile: SimProfile | None = ...,
        tz: str = ...,
    ) -> World: ...


@pytest.fixture
def world_factory() -> WorldFactory:
    def build(
        engine: Engine,
        *,
        agents: int = 1,
        script: dict[str, Script] | None = None,
        numbers: list[str] | None = None,
        campaign: dict[str, Any] | None = None,
        profile: SimProfile | None = None,
        tz: str = "Asia/Shanghai",
    ) -> World:
        numbers = numbers or list((script or {}).keys())
        cid = seed_world(
            engine,
            agents=agents,
            leads=len(numbers),
            now=T0,
            numbers=numbers,
            tz=tz,
            campaign={
                "window_start": "00:00",
                "window_end": "24:00",
                "retry_delays": "{}",
                "wrap_up_s": 10,
                **(campaign or {}),
            },
        )
        sim = Simulation(engine, profile or quiet_profile(), start=T0, script=script)
        return World(sim, engine, cid)

    return build


def human(ring: float = 1.0, talk: float = 30.0, patience: float = 60.0) -> Script:
    return Script(Outcome.HUMAN, ring_s=ring, talk_s=talk, patience_s=patience)


def busy() -> Script:
    return Script(Outcome.BUSY, ring_s=0.5)


def no_answer() -> Script:
    return Script(Outcome.NO_ANSWER)
