"""The Asterisk driver against the chan_pjsip recordings (tests/fixtures/asterisk-20-pjsip/, Asterisk 20.20.1,
the project's filtered AMI user): the causes and event orders that differ from chan_sip, the graceful
restart, the reconnect onto an answered call and the unreachable agent phone. Real loopback sockets,
the AMI test peer playing `CHAN_PJSIP`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from callcenter.engine.commands import OriginateRequest
from callcenter.engine.events import CallAnswered, CallEnded, EndResult
from callcenter.gateways.ami_calls import WANTED_EVENTS
from callcenter.gateways.asterisk import AsteriskGateway
from tests.gateways.contract import EventLog, assert_well_ordered, new_call_id
from tests.gateways.harness_asterisk import NUMBERS, make_gateway, make_peer
from tests.gateways.harness_asterisk_pjsip import SCENARIOS
from tests.peers.ami import CHAN_PJSIP, AmiPeer


@asynccontextmanager
async def running(
    peer_kw: dict[str, Any] | None = None, **gw_kw: Any
) -> AsyncIterator[tuple[AmiPeer, AsteriskGateway, EventLog]]:
    log = EventLog()
    async with make_peer(CHAN_PJSIP, SCENARIOS, **(peer_kw or {})) as peer:
        gw = make_gateway(peer, **gw_kw)
        await gw.start(log.emit)
        try:
            yield peer, gw, log
        finally:
            await gw.close()


async def originate(gw: AsteriskGateway, scenario: str, **kw: Any) -> str:
    call_id = new_call_id()
    await gw.originate(OriginateRequest(call_id=call_id, number=NUMBERS[scenario], caller_id="4000", **kw))
    return call_id


# --- causes: busy and 503 give Reason 0, the Hangup cause decides ------------------------------------


@pytest.mark.parametrize(
    ("scenario", "result", "cause", "detail"),
    [
        # originate-busy.jsonl: HangupRequest 17/486, OriginateResponse Failure Reason 0, Hangup 17/486
        ("busy", EndResult.BUSY, 17, "TechCause 486"),
        # originate-congestion.jsonl: the same with 34/503; congestion is not a plain failure
        ("congestion", EndResult.CONGESTION, 34, "TechCause 503"),
        # originate-no-answer.jsonl: Reason 3, then Hangup 19/480
        ("no_answer", EndResult.NO_ANSWER, 19, "TechCause 480"),
        # answered-then-abandoned-in-wait.jsonl: HangupRequest without a cause, Hangup Cause 0
        ("abandon", EndResult.ANSWERED, 16, "Hangup Cause 0"),
    ],
)
async def test_pjsip_recorded_outcome_is_classified_by_the_hangup_cause(
    scenario: str, result: EndResult, cause: int, detail: str
) -> None:
    async with running() as (peer, gw, log):
        call_id = await originate(gw, scenario, ring_timeout_s=1.0)
        ended = await log.ended(call_id)
        await asyncio.sleep(0.3)  # a late OriginateResponse or Hangup must not end it twice
        sent = peer.conns[0].sent
    assert (ended.result, ended.cause) == (result, cause), ended
    assert detail in ended.detail
    assert "Unknown" not in ended.detail  # a customer's hang-up is never reported as an unknown cause
    assert_well_ordered(log, call_id)
    # HangupRequest gets through the user's `Event: Hangup` filter (an unanchored expression) and is
    # dropped by name before parsing; the Hangup that follows it ends the call.
    assert "HangupRequest" not in WANTED_EVENTS
    if scenario != "no_answer":
        assert sent["HangupRequest"] == 1


async def test_pjsip_burst_maps_every_call_whichever_comes_first_originate_response_or_hangup() -> None:
    # burst-20-mixed.jsonl (chan_pjsip): 5 answer, 5 busy (Reason 0 / 17), 5 no answer (one Hangup
    # before its OriginateResponse), 5 congestion (Reason 0 / 34); the answered ones hang up in Wait()
    # with Cause 0.
    async with running({"default_scenario": None}) as (peer, gw, log):
        recorded = [f"call-b{i:03d}" for i in range(20)]
        ids = {r: new_call_id() for r in recorded}
        for r in recorded:
            await gw.originate(OriginateRequest(call_id=ids[r], number="+8610000000", ring_timeout_s=8))
        await gw.ping()
        peer.replay("burst-20-mixed.jsonl", ids)
        ends = {r: await log.ended(ids[r]) for r in recorded}
        await asyncio.sleep(0.3)
    expected = {
        0: (EndResult.ANSWERED, 16),
        1: (EndResult.BUSY, 17),
        2: (EndResult.NO_ANSWER, 19),
        3: (EndResult.CONGESTION, 34),
    }
    for i, r in enumerate(recorded):
        assert (ends[r].result, ends[r].cause) == expected[i % 4], (r, ends[r])
        assert_well_ordered(log, ids[r])
    assert sum(isinstance(e, CallAnswered) for e in log.events) == 5
    assert sum(isinstance(e, CallEnded) for e in log.events) == 20
