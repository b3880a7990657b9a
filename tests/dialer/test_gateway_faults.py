"""A PBX's refusal is a gateway fault, never a customer's outcome: the real engine on the simulated PBX
made to refuse, throttle, shut down and run out of channels (the conditions real Asterisk 20 and
FreeSWITCH 1.10 showed: tests/fixtures/*-pjsip, *-faults)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine

from callcenter.engine.dialer import DialerCore
from callcenter.engine.events import ActiveCall
from callcenter.engine.simulation import run_sync
from callcenter.messages import GatewayState
from tests.dialer.conftest import World, WorldFactory, human


def leads(w: World) -> list[dict[str, Any]]:
    with w.engine.connect() as c:
        from sqlalchemy import text

        return [dict(r._mapping) for r in c.execute(text("SELECT * FROM lead ORDER BY id"))]


def results(w: World) -> dict[str, int]:
    out: dict[str, int] = {}
    for call in w.calls():
        out[call["result"] or "open"] = out.get(call["result"] or "open", 0) + 1
    return out


def numbers(n: int, prefix: str = "+86138000000") -> list[str]:
    return [f"{prefix}{i:02d}" for i in range(1, n + 1)]


def test_a_refusing_pbx_burns_no_lead_backs_off_and_dials_them_when_it_takes_calls(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    w = world_factory(
        sqlite_engine,
        agents=3,
        script={n: human(ring=1, talk=5) for n in numbers(6)},
        campaign={"agent_ratio": 1.0, "max_attempts": 1, "wrap_up_s": 1},
    )
    w.sim.gateway.refusing = True
    w.sim.run_for(20)
    refused = results(w).get("refused", 0)
    assert refused >= 3, results(w)
    # Backed off: far fewer originates than 20 s of pacing 3 agents would place, and no lead used up.
    assert refused < 12, refused
    assert all(lead["status"] == "pending" and lead["attempts"] == 0 for lead in leads(w))
    gw = w.sim.core.gateway("default")
    assert gw.state is GatewayState.DEGRADED and gw.backoff_s >= 4
    w.sim.gateway.refusing = False
    w.sim.run_for(120)
    assert all(lead["status"] == "done" and lead["attempts"] == 1 for lead in leads(w)), leads(w)
    assert results(w).get("answered") == 6 and w.sim.core.gateway("default").state is GatewayState.UP


def test_originates_are_paced_by_the_gateway_rate(sqlite_engine: Engine, world_factory: WorldFactory) -> None:
    w = world_factory(
        sqlite_engine,
        agents=30,
        script={n: human(ring=5, talk=60) for n in numbers(30)},
        campaign={"agent_ratio": 1.0},
    )
    w.sim.core.set_gateways({"default": ("default", 3.0)})
    w.sim.run_for(20)
    placed = sorted(c["created_at"] for c in w.calls())
    assert len(placed) == 30
    for i, t in enumerate(placed):  # never more than the burst (3) plus 3 a second
        in_window = sum(1 for u in placed[i:] if u < t + 1.0)
        assert in_window <= 6, (t, in_window)
    assert placed[-1] - placed[0] >= (30 - 3) / 3 - 0.01  # 27 after the first burst, 3 a second


def test_a_session_rate_throttle_refuses_no_lead_and_the_engine_slows_down(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    w = world_factory(
        sqlite_engine,
        agents=20,
        script={n: human(ring=2, talk=10) for n in numbers(40)},
        campaign={"agent_ratio": 2.0, "max_attempts": 1, "wrap_up_s": 1},
    )
    w.sim.gateway.session_rate = 4  # FreeSWITCH's sessions-per-second, far below the burst
    w.sim.run_for(300)
    assert results(w).get("refused", 0) > 0  # the first burst met the throttle...
    assert all(lead["status"] == "done" and lead["attempts"] == 1 for lead in leads(w)), results(w)
    assert results(w).get("answered", 0) + results(w).get("abandoned", 0) == 40  # ...and no lead burnt


def test_a_pbx_shutdown_drains_then_dialling_resumes_after_its_restart(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    w = world_factory(
        sqlite_engine,
        agents=2,
        script={n: human(ring=8, talk=5) for n in numbers(10)},
        campaign={"agent_ratio": 1.0, "max_attempts": 1, "wrap_up_s": 1},
    )
    w.sim.run_for(3)  # two calls ringing
    w.sim.gateway.shut_down()
    w.sim.run_for(60)
    assert w.sim.core.gateway("default").state is GatewayState.DRAINING
    during = results(w)
    assert during.get("refused") == 2, during  # the two cut while ringing, nothing placed after
    assert sum(lead["attempts"] for lead in leads(w)) == 0
    w.sim.gateway.restart()
    w.sim.run_for(300)
    assert w.sim.core.gateway("default").state is GatewayState.UP
    assert all(lead["status"] == "done" and lead["attempts"] == 1 for lead in leads(w)), leads(w)


def test_agent_legs_failing_at_once_trip_the_gateway_and_leave_the_agents_ready(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    """At 50 concurrent calls every agent leg failed CHANUNAVAIL (no RTP port left) and all 53 agents
    were set not ready in 38 ms. Many PBX-side agent failures at once are the PBX's."""
    w = world_factory(
        sqlite_engine,
        agents=4,
        script={n: human(ring=1, talk=30) for n in numbers(8)},
        campaign={"agent_ratio": 1.0, "wrap_up_s": 1},
    )
    w.sim.gateway.agent_legs_failing = "CHANUNAVAIL"
    w.sim.run_for(10)
    assert w.sim.core.gateway("default").state is GatewayState.DEGRADED
    states = [w.agent(i)["state"] for i in range(1, 5)]
    assert "not_ready" not in states, states
    w.sim.gateway.agent_legs_failing = None
    w.sim.run_for(120)
    # The customers up when the legs failed, and a probe or two, were abandoned; nothing more was
    # placed while it failed; the rest were answered once agent legs worked again.
    done = results(w)
    assert done.get("abandoned", 0) <= 6 and done.get("answered", 0) + done.get("abandoned", 0) == 8, done
    assert w.sim.core.gateway("default").state is GatewayState.UP


def test_a_single_agent_phone_that_cannot_be_reached_still_sets_that_agent_not_ready(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    w = world_factory(sqlite_engine, agents=2, script={n: human(ring=1, talk=30) for n in numbers(2)})
    w.sim.gateway.unreachable.add("5000")  # the first agent's phone is unregistered
    w.sim.run_for(5)
    assert w.agent(1)["state"] == "not_ready" and w.agent(1)["state_reason"] == "missed_call"
    assert w.sim.core.gateway("default").state is GatewayState.UP


def test_a_task_whose_every_call_the_pbx_refuses_is_paused_with_the_reason(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    w = world_factory(
        sqlite_engine,
        agents=2,
        script={n: human(ring=1, talk=5) for n in numbers(6)},
        campaign={"agent_ratio": 1.0},
    )
    w.sim.gateway.refusing = True
    w.sim.run_for(600)
    state, note = w.rows(
        "SELECT c.state, a.note FROM campaign c JOIN campaign_audit a ON a.campaign_id = c.id "
        "WHERE c.id = :i ORDER BY a.id DESC LIMIT 1",
        i=w.campaign_id,
    )[0]
    assert state == "paused" and "refused 5 calls in a row" in note, note
    assert all(lead["attempts"] == 0 for lead in leads(w))


def test_a_customer_who_answered_while_the_dialer_was_away_is_routed_when_it_is_back(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    """Killed with calls ringing and restarted: a customer who answered meanwhile was adopted as still
    ringing, left in silence and recorded failed. The PBX's channel list says answered: route it now."""
    w = world_factory(sqlite_engine, agents=1, script={n: human(ring=2, talk=30) for n in numbers(1)})
    w.sim.run_for(1)  # ringing
    call_id = w.calls()[0]["id"]
    w.sim.sched.run_until(w.sim.now + 3)  # the customer answers; no dialer hears it
    w.sim.pending.clear()
    active = run_sync(w.sim.gateway.active_calls())
    assert [a.answered for a in active] == [True]
    core = DialerCore(w.sim.store, refresh_s=15.0)  # a new dialer process on the same database
    with w.sim.store.transaction():
        core.start(w.sim.now)
        commands = core.reconcile("default", active, lambda cid: True, w.sim.now)
    assert [type(c).__name__ for c in commands] == ["ConnectAgent"]
    row = w.calls()[0]
    assert row["id"] == call_id and row["state"] == "agent_ringing" and row["answered_at"] is not None


def test_a_call_gone_from_the_pbx_after_a_restart_is_never_dialled_again_once_connected(
    sqlite_engine: Engine, world_factory: WorldFactory
) -> None:
    w = world_factory(
        sqlite_engine,
        agents=1,
        script={n: human(ring=1, talk=30) for n in numbers(1)},
        campaign={"retry_delays": '{"lost": 0}', "max_attempts": 3},
    )
    w.sim.run_for(5)
    assert w.calls()[0]["state"] == "connected"
    core = DialerCore(w.sim.store, refresh_s=15.0)  # restarted; the PBX lost the call meanwhile
    with w.sim.store.transaction():
        core.start(w.sim.now)
        core.reconcile("default", [ActiveCall("gone", None, "up")], lambda cid: False, w.sim.now)
    row = w.calls()[0]
    assert row["result"] == "answered"
    assert leads(w)[0]["status"] == "done"
