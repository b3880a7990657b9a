"""Pacing rules, pure and inside the engine: the caps hold over random event sequences."""

from __future__ import annotations

import contextlib
import math
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callcenter.db import make_engine, upgrade
from callcenter.engine.pacing import (
    AgentSlot,
    Pacer,
    PacingView,
    PredictivePacer,
    PredictiveSettings,
    RatioPacer,
    ratio_target,
)
from callcenter.engine.simulation import Simulation, seed_world
from callcenter.engine.tasks import make_pacer
from callcenter.gateways.simulated import Dist, SimProfile
from callcenter.models import AgentState

T0 = 1_767_225_600.0


def test_ratio_rule_of_the_seed() -> None:
    assert ratio_target(10, 4, 1.5) == 6
    assert ratio_target(5, 4, 1.5) == 5  # max concurrency caps it
    assert ratio_target(10, 3, 0.5) == 1  # floor
    view = PacingView(
        now=0, max_concurrency=10, agents=(AgentSlot(AgentState.READY, 0),) * 4, ringing_since=(0.0, 0.0)
    )
    assert RatioPacer(1.5).place(view) == 4  # target 6, two in flight
    assert RatioPacer(1.0).place(view) == 2  # progressive


def test_predictive_below_the_agent_threshold_is_progressive() -> None:
    pacer = PredictivePacer(PredictiveSettings(min_agents=10))
    for _ in range(100):
        pacer.observe_dial(human=True, ring_s=5, now=0)
    view = PacingView(now=0, max_concurrency=100, agents=(AgentSlot(AgentState.READY, 0),) * 5)
    assert pacer.place(view) == 5


views = st.builds(
    lambda ready, busy, wrap, ringing, waiting, connected, maxc, share: PacingView(
        now=1000.0,
        max_concurrency=maxc,
        agents=tuple(
            [AgentSlot(AgentState.READY, 990)] * ready
            + [AgentSlot(AgentState.ON_CALL, 900)] * busy
            + [AgentSlot(AgentState.WRAP_UP, 995)] * wrap
        ),
        share=share,
        ringing_since=tuple([995.0] * ringing),
        waiting=waiting,
        connected=connected,
    ),
    st.integers(0, 60),
    st.integers(0, 60),
    st.integers(0, 20),
    st.integers(0, 100),
    st.integers(0, 5),
    st.integers(0, 60),
    st.integers(1, 300),
    st.sampled_from([1.0, 0.5, 1 / 3]),
)


@settings(max_examples=300, deadline=None)
@given(view=views, ratio=st.floats(0.1, 5.0))
def test_ratio_pacer_never_passes_its_caps(view: PacingView, ratio: float) -> None:
    n = RatioPacer(ratio).place(view)
    assert n >= 0
    assert view.active + n <= max(view.active, view.max_concurrency)
    assert view.in_flight + n <= max(view.in_flight, math.floor(view.ready * ratio + 1e-9))


@settings(max_examples=200, deadline=None)
@given(view=views, answered=st.integers(0, 200), dials=st.integers(30, 400))
def test_predictive_never_passes_max_concurrency(view: PacingView, answered: int, dials: int) -> None:
    pred = PredictivePacer(PredictiveSettings(min_agents=1))
    for i in range(dials):
        pred.observe_dial(human=i < answered, ring_s=3 + i % 11, now=0)
    for i in range(min(answered, dials)):
        pred.observe_talk(60 + i % 90)
    n = pred.place(view)
    assert n >= 0
    assert view.active + n <= max(view.active, view.max_concurrency)


class CheckedPacer(Pacer):
    """Wraps a pacer and checks the caps at every decision the engine makes."""

    def __init__(self, inner: Pacer, ratio: float | None, checks: list[int]) -> None:
        self.inner = inner
        self.ratio = ratio
        self.checks = checks
        self.lines_per_agent = 0.0

    def place(self, view: PacingView) -> int:
        n = self.inner.place(view)
        assert view.active + n <= max(view.active, view.max_concurrency), (view, n)
        if self.ratio is not None:
            assert view.in_flight + n <= max(view.in_flight, math.floor(view.ready * self.ratio + 1e-9))
        self.checks.append(n)
        return n

    def observe_dial(self, *, human: bool, ring_s: float, now: float) -> None:
        self.inner.observe_dial(human=human, ring_s=ring_s, now=now)

    def observe_answer(self, *, abandoned: bool, now: float) -> None:
        self.inner.observe_answer(abandoned=abandoned, now=now)

    def observe_talk(self, talk_s: float) -> None:
        self.inner.observe_talk(talk_s)

    def observe_wrap(self, wrap_s: float) -> None:
        self.inner.observe_wrap(wrap_s)

    def observe_connect(self, connect_s: float) -> None:
        self.inner.observe_connect(connect_s)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(["ratio", "progressive", "predictive"]),
    agents=st.integers(1, 12),
    ratio=st.floats(0.5, 4.0),
    maxc=st.integers(1, 25),
    p_human=st.floats(0.05, 0.8),
    seed=st.integers(0, 10_000),
    toggles=st.lists(st.tuples(st.floats(1, 600), st.integers(0, 11), st.booleans()), max_size=15),
)
def test_engine_never_exceeds_its_caps_over_random_sequences(
    mode: str,
    agents: int,
    ratio: float,
    maxc: int,
    p_human: float,
    seed: int,
    toggles: list[tuple[float, int, bool]],
) -> None:
    """Random customers, random agents going not-ready and back: at every pacing decision of the real
    engine, calls up stay within max concurrency and in ratio mode within floor(ready x ratio); and
    the task never has more calls up than max concurrency."""
    from callcenter import agents as agent_table
    from callcenter.engine.sqlstore import SqlStore

    workdir = tempfile.mkdtemp()
    url = f"sqlite:///{workdir}/p.db"
    upgrade(url)
    engine = make_engine(url)
    cid = seed_world(
        engine,
        agents=agents,
        leads=400,
        now=T0,
        campaign={"pacing_mode": mode, "agent_ratio": ratio, "max_concurrency": maxc},
    )
    checks: list[int] = []
    limit = {"ratio": ratio, "progressive": 1.0}.get(mode)
    profile = SimProfile(
        p_human=p_human,
        p_machine=0.0,
        p_busy=0.1,
        p_no_answer=max(0.0, 0.85 - p_human),
        ring=Dist.uniform(1, 8),
        talk=Dist.exp(40),
        wrap_up=Dist.const(5),
        seed=seed,
    )
    sim = Simulation(
        engine, profile, start=T0, pacer_factory=lambda conf: CheckedPacer(make_pacer(conf), limit, checks)
    )
    store = SqlStore(engine, "toggler")
    for at, idx, ready in sorted(toggles):
        sim.run_until(T0 + at)
        agent_id = idx % agents + 1
        # an agent on a call cannot change now: InvalidTransition is expected then
        with store.transaction() as conn, contextlib.suppress(agent_table.InvalidTransition):
            agent_table.apply(
                conn,
                agent_id=agent_id,
                now=sim.now,
                event=agent_table.AgentEvent.SET_READY if ready else agent_table.AgentEvent.SET_NOT_READY,
            )
        sim.agents_changed()
        assert sum(1 for c in sim.core.calls.values() if c.campaign_id == cid) <= maxc
    sim.run_until(T0 + 700)
    assert checks, "the engine never paced"
    engine.dispose()
