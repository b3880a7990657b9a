"""Every driver, the same situations, the same domain events (see contract.py)."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from pathlib import Path
from typing import Any

import pytest

from callcenter import gateways
from callcenter.engine.commands import OriginateRequest
from callcenter.engine.events import (
    AgentLegFailed,
    CallAnswered,
    CallConnected,
    CallEnded,
    CallRinging,
    EndResult,
    GatewayDraining,
    GatewayEvent,
    GatewayLink,
    ManualCallStarted,
    SpyMode,
    SpyStarted,
)
from callcenter.errors import Invalid
from callcenter.gateways.base import Gateway
from tests.gateways.contract import EventLog, Harness, assert_well_ordered, kinds, new_call_id

HARNESSES = sorted(p.stem.removeprefix("harness_") for p in Path(__file__).parent.glob("harness_*.py"))


def _harness(name: str) -> Harness:
    harness: Harness = importlib.import_module(f"tests.gateways.harness_{name}").HARNESS
    return harness


@pytest.fixture(params=HARNESSES)
def harness(request: pytest.FixtureRequest) -> Harness:
    return _harness(request.param)


def _drivers() -> dict[str, type]:
    """Every class in callcenter/gateways/ that implements the Gateway protocol, by qualified name."""
    found: dict[str, type] = {}
    for info in pkgutil.iter_modules(gateways.__path__):
        module = importlib.import_module(f"{gateways.__name__}.{info.name}")
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and obj.__module__ == module.__name__
                and not getattr(obj, "_is_protocol", False)
                and issubclass(obj, Gateway)
            ):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_driver_has_a_harness() -> None:
    drivers = _drivers()
    assert {"SimulatedGateway", "AsteriskGateway", "FreeswitchGateway"} <= {
        cls.__name__ for cls in drivers.values()
    }, drivers  # the discovery itself works
    covered = {_harness(name).driver for name in HARNESSES}
    missing = sorted(name for name, cls in drivers.items() if cls not in covered)
    assert not missing, f"drivers without a contract harness (tests/gateways/harness_*.py): {missing}"


async def _originate(gw: Gateway, harness: Harness, scenario: str, **kw: Any) -> str:
    call_id = new_call_id()
    await gw.originate(
        OriginateRequest(
            call_id=call_id,
            number=harness.numbers[scenario],
            caller_id="4000",
            caller_name="CallCenter",
            **kw,
        )
    )
    return call_id


async def test_link_up_is_reported(harness: Harness) -> None:
    log = EventLog()
    async with harness.run(log):
        event = await log.wait_type(GatewayLink)
        assert event.up


async def test_answered_call_connects_to_agent_and_ends_normally(harness: Harness) -> None:
    log = EventLog()
    async with harness.run(log) as gw:
        call_id = await _originate(gw, harness, "answer")
        answered = await log.wait_type(CallAnswered, call_id)
        assert answered.answer == "unknown"  # no AMD asked
        await gw.connect_agent(call_id, harness.agent)
        connected = await log.wait_type(CallConnected, call_id)
        assert connected.extension == harness.agent
        ended = await log.ended(call_id, timeout=30)
    assert (ended.result, ended.cause) == (EndResult.ANSWERED, 16)
    assert_well_ordered(log, call_id)
    assert any(isinstance(e, CallRinging) for e in log.of(call_id)), kinds(log.of(call_id))


async def test_unreachable_agent_phone_fails_and_another_agent_takes_the_customer(harness: Harness) -> None:
    log = EventLog()
    async with harness.run(log) as gw:
        harness.agent_unreachable(gw, "1009")
        call_id = await _originate(gw, harness, "answer")
        await log.wait_type(CallAnswered, call_id)
        await gw.connect_agent(call_id, "1009")
        failed = await log.wait_type(AgentLegFailed, call_id)
        # How it failed, in the PBX's own word (Asterisk DialStatus, FreeSWITCH originate disposition):
        # a PBX-side reason, not an agent who did not answer (NOANSWER / NO_ANSWER).
        assert failed.extension == "1009"
        assert failed.detail in {"CHANUNAVAIL", "USER_NOT_REGISTERED"}, failed
        assert not any(isinstance(e, CallEnded | CallConnected) for e in log.of(call_id))
        await gw.connect_agent(call_id, harness.agent)  # the customer is still there
        connected = await log.wait_type(CallConnected, call_id)
        assert connected.extension == harness.agent
        ended = await log.ended(call_id, timeout=30)
    assert (ended.result, ended.cause) == (EndResult.ANSWERED, 16)
    assert_well_ordered(log, call_id)


async def test_busy_number_ends_busy_without_answer(harness: Harness) -> None:
    log = EventLog()
    async with harness.run(log) as gw:
        call_id = await _originate(gw, harness, "busy")
        ended = await log.ended(call_id)
    assert (ended.result, ended.cause) == (EndResult.BUSY, 17)
    assert not any(isinstance(e, CallAnswered) for e in log.of(call_id))
    assert_well_ordered(log, call_id)


async def test_unanswered_number_rings_then_ends_no_answer(harness: Harness) -> None:
    log = EventLog()
    async with harness.run(log) as gw:
        call_id = await _originate(gw, harness, "no_answer", ring_timeout_s=harness.ring_timeout_s)
        await log.wait_type(CallRinging, call_id)
        ended = await log.ended(call_id, timeout=30)
    assert (ended.result, ended.cause) == (EndResult.NO_ANSWER, 19)
    assert_well_ordered(log, call_id)


async def test_congested_trunk_ends_congestion_not_failed(harness: Harness) -> None:
    log = EventLog()
    async with harness.run(log) as gw:
        call_id = await _originate(gw, harness, "congestion")
        ended = await log.ended(call_id)
    assert (ended.result, ended.cause) == (EndResult.CONGESTION, 34), ended
    assert_well_ordered(log, call_id)


async def test_unknown_or_unreachable_destination_fails(harness: Harness) -> None:
    log = EventLog()
    async with harness.run(log) as gw:
        call_id = await _originate(gw, harness, "unknown")
        ended = await log.ended(call_id, timeout=40)
    assert ended.result == EndResult.FAILED
    assert_well_ordered(log, call_id)


async def test_answered_customer_who_hangs_up_waiting_is_answered_without_connect(harness: Harness) -> None:
    log = EventLog()
    async with harness.run(log) as gw:
        call_id = await _originate(gw, harness, "abandon")
        await log.wait_type(CallAnswered, call_id)
        ended = await log.ended(call_id, timeout=30)
    assert (ended.result, ended.cause) == (EndResult.ANSWERED, 16)
    assert not any(isinstance(e, CallConnected) for e in log.of(call_id))
    assert_well_ordered(log, call_id)


async def test_connect_at_answer_before_the_originate_result_still_connects(harness: Harness) -> None:
    """`connect_agent` sent the moment CallAnswered arrives, the originate's own result arriving after
    it (FreeSWITCH: BACKGROUND_JOB `-ERR ORIGINATOR_CANCEL`, early-transfer-originator-cancel.jsonl;
    Asterisk: OriginateResponse after the dialplan's UserEvent, 4 of 11 chan_pjsip calls): the call
    still connects, ends answered, and CallEnded comes only when the PBX hangs up."""
    log = EventLog()
    async with harness.run(log) as gw:
        sent: list[asyncio.Task[None]] = []

        def connect_at_once(event: GatewayEvent) -> None:
            if isinstance(event, CallAnswered):
                sent.append(asyncio.ensure_future(gw.connect_agent(event.call_id, harness.agent)))

        log.hooks.append(connect_at_once)
        call_id = await _originate(gw, harness, "answer_race")
        first = await log.wait_for(
            lambda e: isinstance(e, CallConnected | CallEnded) and e.call_id == call_id, timeout=15
        )
        assert isinstance(first, CallConnected), f"ended before it connected: {first}"
        assert first.extension == harness.agent
        await asyncio.gather(*sent)
        ended = await log.ended(call_id, timeout=30)
    assert (ended.result, ended.cause) == (EndResult.ANSWERED, 16)
    assert_well_ordered(log, call_id)


async def test_pbx_refusal_ends_the_call_refused_not_failed(harness: Harness) -> None:
    """A PBX that refuses a call before trying the customer's line (FreeSWITCH over its session rate:
    session-rate-throttle.jsonl; Asterisk shutting down): a gateway fault, never a customer's outcome."""
    log = EventLog()
    async with harness.run(log) as gw:
        harness.refuse_originates(gw)
        call_id = await _originate(gw, harness, "answer")
        ended = await log.ended(call_id)
    assert ended.result == EndResult.REFUSED, ended
    assert kinds(log.of(call_id)) == ["CallEnded"]
    assert_well_ordered(log, call_id)


async def test_pbx_shutdown_is_reported_and_its_refusals_are_not_customer_outcomes(harness: Harness) -> None:
    """A graceful shutdown or restart (asterisk-20-pjsip/graceful-restart-while-ringing.jsonl,
    freeswitch-faults/graceful-shutdown-while-ringing.jsonl): the ringing call is cut and ends refused,
    the gateway reports it is draining, and a call placed meanwhile is refused."""
    log = EventLog()
    async with harness.run(log) as gw:
        ringing = await _originate(gw, harness, "no_answer", ring_timeout_s=30)
        await log.wait_type(CallRinging, ringing)
        harness.shut_down(gw)
        late = await _originate(gw, harness, "answer")  # the engine stops at GatewayDraining; a race may not
        draining = await log.wait_type(GatewayDraining)
        cut = await log.ended(ringing)
        refused = await log.ended(late)
    assert (cut.result, refused.result) == (EndResult.REFUSED, EndResult.REFUSED), (cut, refused)
    assert kinds(log.of(late)) == ["CallEnded"]
    assert draining.detail
    downs = [e for e in log.events if isinstance(e, GatewayLink) and not e.up]
    assert all(log.events.index(draining) < log.events.index(e) for e in downs)  # before the link goes
    assert sum(isinstance(e, GatewayDraining) for e in log.events) == 1
    assert_well_ordered(log, ringing)
    assert_well_ordered(log, late)


async def test_hangup_while_ringing_is_cancelled(harness: Harness) -> None:
    log = EventLog()
    async with harness.run(log) as gw:
        call_id = await _originate(gw, harness, "no_answer", ring_timeout_s=30)
        await log.wait_type(CallRinging, call_id)
        await gw.hangup(call_id)
        ended = await log.ended(call_id)
    assert ended.result == EndResult.CANCELLED
    assert not any(isinstance(e, CallAnswered) for e in log.of(call_id))
    assert_well_ordered(log, call_id)


async def test_abandon_message_then_hangup(harness: Harness) -> None:
    log = EventLog()
    async with harness.run(log) as gw:
        call_id = await _originate(gw, harness, "answer")
        await log.wait_type(CallAnswered, call_id)
        await gw.play_and_hangup(call_id, "callcenter-abandon")
        ended = await log.ended(call_id, timeout=30)
    assert ended.result == EndResult.ANSWERED
    assert not any(isinstance(e, CallConnected) for e in log.of(call_id))
    assert_well_ordered(log, call_id)


async def test_supervisor_listens_to_a_connected_call(harness: Harness) -> None:
    log = EventLog()
    async with harness.run(log) as gw:
        call_id = await _originate(gw, harness, "answer")
        await log.wait_type(CallAnswered, call_id)
        await gw.connect_agent(call_id, harness.agent)
        await log.wait_type(CallConnected, call_id)
        spy_id = await gw.spy(
            target_extension=harness.agent, supervisor_extension=harness.supervisor, mode=SpyMode.LISTEN
        )
        started = await log.wait_for(lambda e: isinstance(e, SpyStarted) and e.spy_id == spy_id)
        assert started.target_extension == harness.agent and started.mode == SpyMode.LISTEN
        await log.ended(call_id, timeout=30)


async def test_call_dialled_by_hand_from_an_agent_phone_is_reported(harness: Harness) -> None:
    log = EventLog()
    async with harness.run(log) as gw:
        await harness.agent_dials(gw, harness.agent, "10000077")
        started = await log.wait_type(ManualCallStarted)
        assert (started.extension, started.number.lstrip("+")) == (harness.agent, "10000077")
        connected = await log.wait_type(CallConnected, started.call_id)
        assert connected.extension == harness.agent
        ended = await log.ended(started.call_id, timeout=30)
    assert ended.result == EndResult.ANSWERED
    assert_well_ordered(log, started.call_id)


async def test_burst_of_20_mixed_calls_all_resolve(harness: Harness) -> None:
    log = EventLog()
    scenarios = ["answer", "busy", "no_answer", "congestion"] * 5
    async with harness.run(log) as gw:
        ids = [await _originate(gw, harness, s, ring_timeout_s=harness.ring_timeout_s) for s in scenarios]
        ends = await asyncio.gather(*(log.ended(i, timeout=60) for i in ids))
    got = sorted(e.result.value for e in ends)
    assert got == sorted(["answered"] * 5 + ["busy"] * 5 + ["no_answer"] * 5 + ["congestion"] * 5)
    for call_id in ids:
        assert_well_ordered(log, call_id)


@pytest.mark.parametrize(
    "number", ["123\r\nAction: Command\r\nCommand: core stop now", "1234;hangup", "{a=b}1234", "1234'", ""]
)
def test_number_with_separators_is_refused_before_the_driver(number: str) -> None:
    with pytest.raises(Invalid):
        OriginateRequest(call_id=new_call_id(), number=number)


@pytest.mark.parametrize("value", ["a\r\nb", "x,y", "{x}", "it's", "a b"])
def test_variable_with_separators_is_refused(value: str) -> None:
    with pytest.raises(Invalid):
        OriginateRequest(call_id=new_call_id(), number="+8613800000000", variables={"CC_X": value})
