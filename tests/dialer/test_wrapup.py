"""Wrap-up rules (`engine.wrapup`) and the engine applying them: an unsaved outcome holds a person in
wrap-up when the task says so, a saved one (or a task that does not hold) lets them go on time, and
"extend" moves the end."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import Engine

from callcenter.engine import wrapup
from tests.dialer.conftest import T0, World, WorldFactory, human

NUMBER = "+8613800000001"


@given(st.lists(st.just(None), max_size=30), st.floats(min_value=0, max_value=1000))
def test_extend_never_passes_its_bound_and_never_shrinks(clicks: list[None], start: float) -> None:
    extra = min(start, wrapup.MAX_EXTRA_S)
    for _ in clicks:
        after = wrapup.extended(extra)
        assert extra <= after <= wrapup.MAX_EXTRA_S
        extra = after


@given(
    st.floats(min_value=0, max_value=1e4),
    st.floats(min_value=0, max_value=600),
    st.floats(min_value=0, max_value=300),
    st.floats(min_value=0, max_value=2e4),
)
def test_time_is_up_exactly_at_the_extended_end(
    since: float, wrap_s: float, extra: float, now: float
) -> None:
    assert wrapup.time_is_up(now, since=since, wrap_s=wrap_s, extra_s=extra) == (
        now >= since + wrap_s + extra
    )


def _person_in_wrap_up(world_factory: WorldFactory, engine: Engine, **campaign: object) -> World:
    w = world_factory(
        engine, agents=1, script={NUMBER: human(ring=1, talk=20)}, campaign={"wrap_up_s": 10, **campaign}
    )
    with engine.begin() as c:  # a person at a workstation, not a simulated agent
        c.execute(text("UPDATE agent SET simulated = :f"), {"f": False})
    w.sim.agents_changed()
    w.sim.run_until(T0 + 25)
    assert w.agent(1)["state"] == "wrap_up"
    return w


def _settle(w: World) -> None:
    call_id = w.agent(1)["call_id"]
    with w.engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO call_draft (call_id, agent_id, body, updated_at, settled_at)"
                " VALUES (:c, 1, '{}', :t, :t)"
            ),
            {"c": call_id, "t": w.sim.now},
        )


def test_an_unsaved_outcome_holds_the_agent_in_wrap_up_until_it_is_saved(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    w = _person_in_wrap_up(world_factory, sqlite_engine)
    w.sim.run_for(120)
    assert w.agent(1)["state"] == "wrap_up"  # long past its 10 s: the outcome is not saved
    _settle(w)
    w.sim.run_for(16)  # the engine looks again at its next refresh (15 s in the simulation)
    assert w.agent(1)["state"] == "ready"


def test_a_disposition_saved_on_the_call_row_also_lets_the_agent_go(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    w = _person_in_wrap_up(world_factory, sqlite_engine)
    with sqlite_engine.begin() as c:
        c.execute(
            text("UPDATE call SET disposition = 'interested' WHERE id = :c"), {"c": w.agent(1)["call_id"]}
        )
    w.sim.run_for(15)
    assert w.agent(1)["state"] == "ready"


@pytest.mark.parametrize("extra", [0.0, 30.0])
def test_a_task_that_does_not_hold_ends_wrap_up_on_time_extended_or_not(
    sqlite_engine: Engine, world_factory: WorldFactory, extra: float
) -> None:
    w = _person_in_wrap_up(world_factory, sqlite_engine, wrap_up_hold=False)
    since = w.agent(1)["state_since"]
    with sqlite_engine.begin() as c:
        c.execute(text("UPDATE agent SET wrap_extra_s = :x"), {"x": extra})
    w.sim.agents_changed()
    w.sim.run_until(since + 10 + extra - 2)
    assert w.agent(1)["state"] == "wrap_up"
    # On time: the timer set at the hang-up, or (once extended) the engine's next look (15 s here).
    w.sim.run_until(since + 10 + extra + (16 if extra else 2))
    assert w.agent(1)["state"] == "ready"
