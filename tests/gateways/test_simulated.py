"""The simulated PBX's options that reproduce what real PBXs did (tests/fixtures/freeswitch-faults/,
asterisk-20-pjsip/): the answer reported before the originate returns, a shutdown, a session-rate limit.
The engine's tests build on these; the contract suite runs the rest."""

from __future__ import annotations

import asyncio
from typing import Any

from callcenter.clock import LoopScheduler
from callcenter.engine.commands import OriginateRequest
from callcenter.engine.events import (
    CallAnswered,
    CallConnected,
    CallEnded,
    CallRinging,
    EndResult,
    GatewayDraining,
    GatewayLink,
)
from callcenter.gateways.simulated import Outcome, Script, SimProfile, SimulatedGateway
from tests.gateways.contract import EventLog, assert_well_ordered, kinds, new_call_id

ANSWERS = "+861000000001"


def simulated(**options: Any) -> SimulatedGateway:
    script = {
        ANSWERS: Script(Outcome.HUMAN, ring_s=0.05, talk_s=0.2, patience_s=1.0),
        "+861000000099": Script(Outcome.NO_ANSWER),
    }
    return SimulatedGateway(LoopScheduler(), SimProfile(abandon_message_s=0.1), script=script, **options)


async def test_answer_before_the_originate_returns_gives_originator_cancel_and_the_call_goes_on() -> None:
    gw = simulated(originate_result_s=0.05)
    log = EventLog()
    log.pbx_has = lambda call_id: call_id in gw.calls
    await gw.start(log.emit)
    raced, plain = new_call_id(), new_call_id()
    try:
        await gw.originate(OriginateRequest(call_id=raced, number=ANSWERS))
        await gw.originate(OriginateRequest(call_id=plain, number=ANSWERS))
        await log.wait_type(CallAnswered, raced)
        await gw.connect_agent(raced, "1001")  # before the originate's result, as the race goes
        await log.wait_type(CallConnected, raced)
        await log.ended(raced)
        await log.ended(plain)  # nobody took it: the customer hangs up, patience 1 s
    finally:
        await gw.close()
    assert dict(gw.originate_results) == {raced: "ORIGINATOR_CANCEL", plain: "+OK"}
    assert_well_ordered(log, raced)
    assert_well_ordered(log, plain)


async def test_shutdown_drains_cuts_ringing_calls_refused_and_refuses_until_the_restart() -> None:
    gw = simulated()
    log = EventLog()
    log.pbx_has = lambda call_id: call_id in gw.calls
    await gw.start(log.emit)
    ringing, late, after = new_call_id(), new_call_id(), new_call_id()
    try:
        await gw.originate(OriginateRequest(call_id=ringing, number="+861000000099", ring_timeout_s=30))
        await log.wait_type(CallRinging, ringing)
        gw.shut_down()
        await gw.originate(OriginateRequest(call_id=late, number=ANSWERS))
        cut, refused = await log.ended(ringing), await log.ended(late)
        gw.restart()
        await gw.originate(OriginateRequest(call_id=after, number=ANSWERS))
        await log.wait_type(CallAnswered, after)
    finally:
        await gw.close()
    assert (cut.result, refused.result) == (EndResult.REFUSED, EndResult.REFUSED)
    assert kinds(log.of(late)) == ["CallEnded"]
    links = [
        (type(e).__name__, getattr(e, "up", None))
        for e in log.events
        if isinstance(e, GatewayLink | GatewayDraining)
    ]
    assert links == [
        ("GatewayLink", True),
        ("GatewayDraining", None),
        ("GatewayLink", False),
        ("GatewayLink", True),
    ]


async def test_session_rate_refuses_the_excess_within_a_second() -> None:
    gw = simulated(session_rate=3)
    log = EventLog()
    await gw.start(log.emit)
    ids = [new_call_id() for _ in range(5)]
    try:
        for call_id in ids:
            await gw.originate(OriginateRequest(call_id=call_id, number=ANSWERS))
        ends = [await log.ended(i) for i in ids[3:]]
        await asyncio.sleep(0.01)
    finally:
        await gw.close()
    assert [e.result for e in ends] == [EndResult.REFUSED] * 2
    assert "session rate" in ends[0].detail
    assert not any(isinstance(e, CallEnded) for i in ids[:3] for e in log.of(i))  # still going


async def test_a_refusing_pbx_refuses_every_call() -> None:
    gw = simulated()
    gw.refusing = True
    log = EventLog()
    await gw.start(log.emit)
    call_id = new_call_id()
    try:
        await gw.originate(OriginateRequest(call_id=call_id, number=ANSWERS))
        ended = await log.ended(call_id)
    finally:
        await gw.close()
    assert (ended.result, kinds(log.of(call_id))) == (EndResult.REFUSED, ["CallEnded"])
