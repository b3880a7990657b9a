"""The dialer engine on the simulated PBX: routing, abandon, retries, DNC, completion, pause, windows."""

from __future__ import annotations

from itertools import pairwise

from sqlalchemy import insert, text, update
from sqlalchemy.engine import Engine
from sqlmodel import col

from callcenter.engine.events import GatewayLink
from callcenter.gateways.simulated import Outcome, Script
from callcenter.models import Agent, Campaign, DncEntry, Lead
from tests.dialer.conftest import T0, World, WorldFactory, busy, human, no_answer, quiet_profile


def test_answered_call_goes_to_the_longest_idle_ready_agent(
    engine: Engine, world_factory: WorldFactory
) -> None:
    w = world_factory(
        engine, agents=3, script={"+8613800000001": human(ring=2, talk=20)}, campaign={"agent_ratio": 1.0}
    )
    with engine.begin() as c:  # agent 2 has waited longest
        for agent_id, idle in ((1, T0 - 10), (2, T0 - 300), (3, T0 - 60)):
            c.execute(update(Agent).where(col(Agent.id) == agent_id).values(idle_since=idle))
    w.sim.agents_changed()
    w.sim.run_for(5)
    call = w.calls()[0]
    assert (call["agent_id"], call["state"]) == (2, "connected")
    assert call["answered_at"] - call["created_at"] == 2.0
    assert w.agent(2)["state"] == "on_call"
    w.sim.run_for(20)
    assert w.agent(2)["state"] == "wrap_up"
    w.sim.run_for(11)
    assert w.agent(2)["state"] == "ready"
    call = w.calls()[0]
    assert (call["result"], call["cause"]) == ("answered", 16)
    assert (
        call["ringing_at"]
        <= call["answered_at"]
        <= call["agent_at"]
        <= call["connected_at"]
        <= call["ended_at"]
    )


def test_answer_with_no_agent_in_two_seconds_is_abandoned_with_the_message(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    w = world_factory(
        sqlite_engine,
        agents=1,
        campaign={"agent_ratio": 2.0},
        script={"+8613800000001": human(ring=1), "+8613800000002": human(ring=1.5)},
    )
    w.sim.run_for(10)
    by_number = {c["number"]: c for c in w.calls()}
    assert by_number["+8613800000001"]["agent_id"] == 1
    lost = by_number["+8613800000002"]
    assert lost["result"] == "abandoned" and lost["connected_at"] is None
    assert "within 2 s" in lost["detail"]
    assert lost["ended_at"] - lost["answered_at"] >= 2.0  # the message played after the 2 s
    snap = w.sim.core.snapshot(w.campaign_id, w.sim.now)
    assert snap is not None
    assert snap["abandoned"] == 1 and snap["connected"] == 1 and snap["abandon_pct"] == 50.0


def _agent_1_first(world_factory: WorldFactory, engine: Engine, *, calls: int) -> World:
    """Two agents, one line; agent 1 has waited longest, so the first answered call goes to them."""
    w = world_factory(
        engine,
        agents=2,
        campaign={"agent_ratio": 1.0, "max_concurrency": 1},
        script={f"+861380000000{n}": human(ring=1, talk=5) for n in range(1, calls + 1)},
    )
    with engine.begin() as c:
        c.execute(update(Agent).where(col(Agent.id) == 1).values(idle_since=T0 - 600))
    w.sim.agents_changed()
    return w


def test_agent_whose_phone_rings_unanswered_goes_not_ready_and_gets_no_more_calls(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    w = _agent_1_first(world_factory, sqlite_engine, calls=3)
    w.sim.gateway.unattended.add(w.agent(1)["extension"])  # agent 1 left their desk
    w.sim.run_for(60)
    calls = {c["number"]: c for c in w.calls()}
    first = calls["+8613800000001"]
    assert (first["agent_id"], first["result"]) == (1, "abandoned")
    assert "agent's phone rang" in first["detail"]
    assert w.agent(1)["state"] == "not_ready"  # out of routing until they click Ready
    assert w.agent(1)["state_reason"] == "missed_call"
    later = [calls["+8613800000002"], calls["+8613800000003"]]
    assert [(c["agent_id"], c["result"]) for c in later] == [(2, "answered"), (2, "answered")]


def test_an_unreachable_agent_phone_sends_the_customer_to_the_next_agent(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    w = _agent_1_first(world_factory, sqlite_engine, calls=1)
    w.sim.gateway.unreachable.add(w.agent(1)["extension"])  # agent 1's phone is not registered
    w.sim.run_for(3)
    call = w.calls()[0]
    assert (call["agent_id"], call["state"]) == (2, "connected")  # no abandon: agent 2 took it
    assert call["connected_at"] - call["answered_at"] < 2.0
    assert w.agent(1)["state"] == "not_ready" and w.agent(1)["state_reason"] == "missed_call"
    w.sim.run_for(10)
    assert w.calls()[0]["result"] == "answered"
    snap = w.sim.core.snapshot(w.campaign_id, w.sim.now)
    assert snap is not None and snap["abandoned"] == 0


def test_agent_reserved_too_late_to_answer_is_released_to_ready(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    w = world_factory(
        sqlite_engine,
        agents=2,
        campaign={"agent_ratio": 2.0, "max_concurrency": 2},
        script={"+8613800000001": human(ring=1, talk=30), "+8613800000002": human(ring=1.2, talk=30)},
    )
    with sqlite_engine.begin() as c:  # agent 2 is not ready yet: agent 1 takes the first answer
        c.execute(update(Agent).where(col(Agent.id) == 2).values(state="not_ready"))
    w.sim.agents_changed()
    w.sim.run_for(2.7)  # the second customer has waited 1.5 s of the 2 s
    second = {c["number"]: c for c in w.calls()}["+8613800000002"]
    assert second["state"] == "answered" and second["answered_at"] <= T0 + 1.3
    with sqlite_engine.begin() as c:
        c.execute(update(Agent).where(col(Agent.id) == 2).values(state="ready"))
    w.sim.gateway.unattended.add(w.agent(2)["extension"])
    w.sim.agents_changed()
    w.sim.run_for(5)
    second = {c["number"]: c for c in w.calls()}["+8613800000002"]
    assert (second["agent_id"], second["result"]) == (2, "abandoned")
    assert "rang" not in second["detail"]  # about 0.5 s of ringing: not a missed call
    assert w.agent(2)["state"] == "ready"


def test_customer_hanging_up_before_an_agent_counts_as_abandoned(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    w = world_factory(
        sqlite_engine,
        agents=1,
        campaign={"agent_ratio": 2.0},
        script={"+8613800000001": human(ring=1), "+8613800000002": human(ring=1.2, patience=0.5)},
    )
    w.sim.run_for(10)
    assert {c["number"]: c["result"] for c in w.calls()}["+8613800000002"] == "abandoned"


def test_busy_number_is_retried_after_delay(engine: Engine, world_factory: WorldFactory) -> None:
    w = world_factory(
        engine,
        script={"+8613800000001": busy()},
        campaign={"retry_delays": '{"busy": 600}', "max_attempts": 3},
    )
    w.sim.run_for(3600)
    calls = w.calls()
    assert [c["result"] for c in calls] == ["busy", "busy", "busy"]
    assert [c["attempt"] for c in calls] == [1, 2, 3]
    gaps = [b["created_at"] - a["ended_at"] for a, b in pairwise(calls)]
    assert all(600 <= g <= 602 for g in gaps), gaps
    assert w.rows("SELECT status, attempts, last_result FROM lead") == [("done", 3, "busy")]


def test_do_not_call_is_checked_again_at_dial_time(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    w = world_factory(
        sqlite_engine,
        agents=1,
        script={"+8613800000001": human(), "+8613800000002": human()},
        campaign={"agent_ratio": 1.0},
    )
    with sqlite_engine.begin() as c:  # listed after the import
        c.execute(insert(DncEntry).values(number="+8613800000002", added_at=T0, source="t", note=""))
    w.sim.run_for(120)
    assert [c["number"] for c in w.calls()] == ["+8613800000001"]
    assert w.rows("SELECT number, status, last_result FROM lead ORDER BY id") == [
        ("+8613800000001", "done", "answered"),
        ("+8613800000002", "dnc", "dnc"),
    ]


def test_task_stops_by_itself_when_nothing_is_left(engine: Engine, world_factory: WorldFactory) -> None:
    w = world_factory(
        engine,
        agents=2,
        script={"+8613800000001": human(talk=5), "+8613800000002": no_answer()},
        campaign={"agent_ratio": 1.0, "ring_timeout_s": 15},
    )
    w.sim.run_for(60)
    assert w.one("SELECT state FROM campaign") == "stopped"
    audit = w.rows("SELECT actor, old, new, note FROM campaign_audit ORDER BY id")
    assert audit[-1] == ("dialer", "running", "stopped", "nothing left to dial")


def test_pause_hangs_up_ringing_calls_and_never_cuts_a_connected_one(
    engine: Engine, world_factory: WorldFactory
) -> None:
    script = {"+8613800000001": human(ring=1, talk=60)}
    script.update({f"+86138000000{i:02d}": no_answer() for i in range(2, 6)})
    script["+8613800000009"] = human()
    w = world_factory(
        engine,
        agents=1,
        script=script,
        campaign={"agent_ratio": 5.0, "max_concurrency": 5, "ring_timeout_s": 60},
    )
    w.sim.run_for(5)
    assert {c["state"] for c in w.calls()} == {"connected", "ringing"}
    with engine.begin() as c:
        c.execute(text("UPDATE campaign SET state = 'paused'"))
    w.sim.agents_changed()
    w.sim.run_for(2)
    states = {c["number"]: (c["state"], c["result"]) for c in w.calls()}
    assert states["+8613800000001"] == ("connected", "")
    assert all(v == ("ended", "cancelled") for k, v in states.items() if k != "+8613800000001")
    w.sim.run_for(120)
    calls = w.calls()
    assert {c["number"]: c["result"] for c in calls}["+8613800000001"] == "answered"
    assert len(calls) == 5, "no new call while paused"
    # the cancelled leads are given back, not counted as attempts
    assert set(w.rows("SELECT status, attempts FROM lead WHERE number != '+8613800000001'")) == {
        ("pending", 0)
    }


def test_leads_outside_their_calling_window_wait(sqlite_engine: Engine, world_factory: WorldFactory) -> None:
    # T0 is 16:00 in Shanghai and 03:00 in New York
    w = world_factory(
        sqlite_engine,
        agents=1,
        script={"+12125550100": human(), "+12125550101": human()},
        campaign={"window_start": "08:00", "window_end": "21:00", "timezone": "America/New_York"},
        tz="America/New_York",
    )
    w.sim.run_for(600)
    assert w.calls() == []
    w.sim.run_until(T0 + 5 * 3600 + 60)  # 08:01 in New York
    assert len(w.calls()) >= 1


def test_machine_verdict_hangs_up_without_an_agent_or_abandon(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    w = world_factory(
        sqlite_engine,
        agents=1,
        campaign={"amd": True},
        script={"+8613800000001": Script(Outcome.MACHINE, ring_s=1)},
    )
    w.sim.run_for(30)
    call = w.calls()[0]
    assert (call["result"], call["answer_kind"], call["agent_id"]) == ("machine", "machine", None)
    assert w.agent(1)["state"] == "ready"


def test_preview_agent_sees_the_lead_then_dials_it(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    w = world_factory(
        sqlite_engine,
        agents=1,
        campaign={"pacing_mode": "preview"},
        script={"+8613800000001": human(ring=2), "+8613800000002": human()},
    )
    w.sim.run_for(3)
    call = w.calls()[0]
    assert (call["state"], call["agent_id"]) == ("preview", 1)
    assert w.agent(1)["state"] == "reserved"
    w.sim.run_for(60)  # nothing is dialled without the click
    assert len(w.calls()) == 1 and w.calls()[0]["state"] == "preview"
    with w.sim.store.transaction():
        w.sim._execute(w.sim.core.preview_dial(call["id"], 1, w.sim.now))
    w.sim.run_for(5)
    call = w.calls()[0]
    assert (call["state"], call["agent_id"]) == ("connected", 1)


def test_manual_call_from_an_agent_phone_is_recorded(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    w = world_factory(
        sqlite_engine,
        agents=1,
        script={"+8613800000001": no_answer()},
        campaign={"state": "paused"},
        profile=quiet_profile(),
    )
    w.sim.gateway.agent_dials("5000", "+8613900000000", ring_s=1, talk_s=10)
    w.sim.run_for(2)
    manual = next(c for c in w.calls() if c["direction"] == "manual")
    assert (manual["agent_id"], manual["number"], manual["state"]) == (1, "+8613900000000", "connected")
    assert w.agent(1)["state"] == "on_call"
    w.sim.run_for(15)
    assert w.agent(1)["state"] == "wrap_up"


def test_no_new_call_is_placed_through_a_gateway_that_is_down(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    script = {f"+86138000000{i:02d}": busy() for i in range(1, 30)}
    w = world_factory(
        sqlite_engine,
        agents=1,
        script=script,
        campaign={"agent_ratio": 1.0, "retry_delays": '{"busy": 1}', "max_attempts": 50},
    )
    w.sim.run_for(5)
    before = len(w.calls())
    assert before >= 2
    with w.sim.store.transaction():
        w.sim._execute(
            w.sim.core.gateway_changed("default", GatewayLink(False, w.sim.now, "test: link down"), w.sim.now)
        )
    w.sim.run_for(60)
    during = len(w.calls())
    assert during - before <= 1  # at most the call already being placed
    with w.sim.store.transaction():
        w.sim._execute(
            w.sim.core.gateway_changed("default", GatewayLink(True, w.sim.now, "test: link up"), w.sim.now)
        )
    w.sim.run_for(10)
    assert len(w.calls()) > during + 2


def test_each_call_keeps_the_ladder_of_what_happened_and_agents_their_history(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    w = world_factory(sqlite_engine, agents=1, script={"+8613800000001": human(ring=2, talk=20)})
    w.sim.run_for(40)
    call = w.calls()[0]
    ladder = w.rows("SELECT kind, detail FROM call_event WHERE call_id = :c ORDER BY at, id", c=call["id"])
    assert [k for k, _ in ladder] == [
        "originate",
        "ringing",
        "answered",
        "agent",
        "connected",
        "pbx_end",
        "settled",
    ], ladder
    assert ladder[-1][1].startswith("answered (cause 16)")
    history = w.rows("SELECT state, call_id FROM agent_state_log WHERE agent_id = 1 ORDER BY at, id")
    assert [s for s, _ in history] == ["reserved", "on_call", "wrap_up", "ready"]
    assert history[0][1] == call["id"]


def test_two_tasks_on_one_group_with_one_ready_agent_both_get_calls(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    """floor(1 ready agent / 2 tasks) used to give each task 0 agents: task B dialled nothing while
    the agent sat ready. The leftover agent now goes to the task that got one longest ago."""
    first = [f"+86138000000{i:02d}" for i in range(1, 7)]
    others = [f"+86139000000{i:02d}" for i in range(1, 4)]
    w = world_factory(
        sqlite_engine,
        agents=1,
        script={n: human(ring=1, talk=5) for n in first + others},
        numbers=first,
        campaign={"agent_ratio": 1.0, "wrap_up_s": 1},
    )
    with sqlite_engine.begin() as c:  # a second task on the same skill group, with its own leads
        row = dict(
            c.execute(text("SELECT * FROM campaign WHERE id = :i"), {"i": w.campaign_id}).one()._mapping
        )
        row.pop("id")
        row["name"] = "second task"
        key = c.execute(insert(Campaign).values(**row)).inserted_primary_key
        assert key is not None
        second = key[0]
        for i in range(1, 4):
            c.execute(
                insert(Lead).values(
                    campaign_id=second,
                    row_no=i,
                    number=f"+86139000000{i:02d}",
                    tz="Asia/Shanghai",
                    fields="{}",
                )
            )
    w.sim.agents_changed()
    w.sim.run_for(120)
    by_task = dict(
        w.rows("SELECT campaign_id, COUNT(*) FROM call WHERE connected_at IS NOT NULL GROUP BY campaign_id")
    )
    assert by_task.get(w.campaign_id, 0) >= 2 and by_task.get(second, 0) >= 2, by_task


def test_a_task_with_nothing_due_takes_no_share_of_the_agents(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    w = world_factory(
        sqlite_engine,
        agents=2,
        script={f"+86138000000{i:02d}": human(ring=1, talk=5) for i in range(1, 9)},
        campaign={"agent_ratio": 1.0, "wrap_up_s": 1},
    )
    with sqlite_engine.begin() as c:  # an empty second task on the same skill group
        row = dict(
            c.execute(text("SELECT * FROM campaign WHERE id = :i"), {"i": w.campaign_id}).one()._mapping
        )
        row.pop("id")
        row["name"] = "empty task"
        c.execute(insert(Campaign).values(**row))
    w.sim.agents_changed()
    w.sim.run_for(10)
    # Both agents work the task that has leads: two calls up at once, not one.
    assert max_calls_at_once(w) == 2


def max_calls_at_once(w: World) -> int:
    edges = []
    for created, ended in w.rows("SELECT created_at, ended_at FROM call"):
        edges += [(created, 1), (ended if ended is not None else float("inf"), -1)]
    level = peak = 0
    for _, step in sorted(edges):
        level += step
        peak = max(peak, level)
    return peak
