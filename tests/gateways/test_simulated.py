"""The simulated PBX's options that reproduce what real PBXs did (tests/fixtures/freeswitch-faults/,
asterisk-20-pjsip/): the answer reported before the originate returns, a shutdown, a session-rate limit.
The engine's tests build on these; the contract suite runs the rest."""

from __future__ import annotations

from callcenter.clock import LoopScheduler
from callcenter.engine.commands import OriginateRequest
from callcenter.engine.events import CallAnswered, CallConnected
from callcenter.gateways.simulated import Outcome, Script, SimProfile, SimulatedGateway
from tests.gateways.contract import EventLog, assert_well_ordered, new_call_id

ANSWERS = "+861000000001"


def simulated(**options: float) -> SimulatedGateway:
    script = {ANSWERS: Script(Outcome.HUMAN, ring_s=0.05, talk_s=0.2, patience_s=1.0)}
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
