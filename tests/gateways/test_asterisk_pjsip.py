"""The Asterisk driver against the chan_pjsip recordings (tests/fixtures/asterisk-20-pjsip/, Asterisk 20.20.1,
the project's filtered AMI user): the causes and event orders that differ from chan_sip, the graceful
restart, the reconnect onto an answered call and the unreachable agent phone. Real loopback sockets,
the AMI test peer playing `CHAN_PJSIP`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from callcenter.engine.commands import OriginateRequest
from callcenter.engine.events import (
    AgentLegFailed,
    CallAnswered,
    CallConnected,
    CallEnded,
    EndResult,
    GatewayDraining,
    GatewayLink,
    UnknownChannel,
)
from callcenter.gateways.ami_calls import WANTED_EVENTS
from callcenter.gateways.asterisk import AsteriskGateway
from callcenter.gateways.base import GatewayUnavailable
from tests.gateways.contract import EventLog, assert_well_ordered, kinds, new_call_id
from tests.gateways.harness_asterisk import NUMBERS, make_gateway, make_peer
from tests.gateways.harness_asterisk_pjsip import SCENARIOS
from tests.peers.ami import CHAN_PJSIP, AmiPeer, first, load


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


# --- a graceful restart (`core restart now`) ----------------------------------------------------------


def _recorded_calls(name: str) -> list[str]:
    return [r.get("ChannelId") for r in load(f"asterisk-20-pjsip/{name}") if r.out and r.name == "Originate"]


async def test_restart_cuts_ringing_calls_refused_refuses_new_ones_drains_and_reconnects_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """graceful-restart-while-ringing.jsonl: six calls ring; the restart ends them with OriginateResponse
    Reason 0 and Hangup Cause 0 (no cause from any far end); then every action is refused "Asterisk is
    shutting down" and the socket closes; a reconnecting Login is refused the same way
    (graceful-restart-login-during-shutdown.jsonl) until Asterisk is back."""
    recorded = _recorded_calls("graceful-restart-while-ringing.jsonl")[:6]  # placed before the shutdown
    caplog.set_level(logging.INFO, logger="callcenter.gateways.asterisk")
    async with running({"default_scenario": None}, end_grace_s=0.2) as (peer, gw, log):
        ids = {r: new_call_id() for r in recorded}
        for r in recorded:
            await gw.originate(OriginateRequest(call_id=ids[r], number="+8613930000071", ring_timeout_s=30))
        await gw.ping()
        peer.replay("graceful-restart-while-ringing.jsonl", ids)
        cut = [await log.ended(ids[r]) for r in recorded]
        while not peer.shutting_down:  # the recording's first refusal
            await asyncio.sleep(0.005)
        late = await originate(gw, "answer")
        refused = await log.ended(late)
        assert refused.result == EndResult.REFUSED, refused
        draining = await log.wait_type(GatewayDraining)
        down = await log.wait_for(lambda e: isinstance(e, GatewayLink) and not e.up)
        await asyncio.sleep(0.5)  # reconnect attempts meet the restart
        refused_logins = len(peer.actions_named("Login")) - 1
        peer.back_up()
        up = await log.wait_for(lambda e: isinstance(e, GatewayLink) and e.up and e is not log.events[0])
    for end in cut:  # the customers never had a chance: not failed, not a customer's outcome
        assert (end.result, end.cause) == (EndResult.REFUSED, 0), end
        assert "OriginateResponse Reason 0" in end.detail
    assert refused.result == EndResult.REFUSED and "Asterisk is shutting down" in refused.detail
    assert kinds(log.of(late)) == ["CallEnded"]
    assert "shutting down" in draining.detail
    assert sum(isinstance(e, GatewayDraining) for e in log.events) == 1
    assert log.events.index(draining) < log.events.index(down) < log.events.index(up)
    assert refused_logins >= 2  # retried, with backoff (0.05, 0.1, 0.2 ... s), not given up
    assert first(peer.actions_named("Login")[0], "Events") == "call,user,system"
    assert any("up again" in r.getMessage() for r in caplog.records)
    for r in recorded:
        assert_well_ordered(log, ids[r])


async def test_shutdown_event_reports_draining_before_any_refusal() -> None:
    """`Event: Shutdown` (read-all/graceful-restart-while-ringing.jsonl, class system) reaches the driver
    once manager.conf grants the system class: it subscribes to it and reports the gateway draining."""
    async with running() as (peer, _, log):
        peer.restart_now()
        draining = await log.wait_type(GatewayDraining)
        await log.wait_for(lambda e: isinstance(e, GatewayLink) and not e.up)
    assert draining.detail == "Asterisk is restarting (Shutdown: Cleanly)"
    assert not peer.actions_named("Originate")


async def test_first_connection_during_a_restart_fails_start_with_the_reason() -> None:
    async with make_peer(CHAN_PJSIP, SCENARIOS) as peer:
        peer.shutting_down = True
        gw = make_gateway(peer)
        with pytest.raises(GatewayUnavailable, match="Asterisk is shutting down"):
            await gw.start(EventLog().emit)
        await gw.close()


# --- a restarted controller adopts an answered call ---------------------------------------------------


async def test_restarted_driver_lists_an_answered_call_adopts_it_and_connects_it() -> None:
    """reconnect-coreshowchannels-answered*.jsonl: a connection originates call-0008 and sees it answered
    (UserEvent CallCenterAnswered), then closes; a new one lists it (CoreShowChannel Up, in `Wait`, no
    bridge), redirects it to an agent, and follows it to the customer's hang-up."""
    scenarios = {**SCENARIOS, "8613910000008": "reconnect-coreshowchannels-answered.first-connection.jsonl"}
    log = EventLog()
    async with make_peer(CHAN_PJSIP, scenarios) as peer:
        gw = make_gateway(peer)
        await gw.start(log.emit)
        call_id = new_call_id()
        await gw.originate(OriginateRequest(call_id=call_id, number="+8613910000008", caller_id="4000"))
        await log.wait_type(CallAnswered, call_id)
        await gw.close()  # the controller goes away; the customer waits in Wait(60)
        log2 = EventLog()
        gw2 = make_gateway(peer)
        await gw2.start(log2.emit)
        try:
            calls = {c.call_id: c for c in await gw2.active_calls()}
            assert await gw2.adopt(call_id)
            await gw2.connect_agent(call_id, "1001")
            connected = await log2.wait_type(CallConnected, call_id)
            ended = await log2.ended(call_id)
        finally:
            await gw2.close()
    listed = calls[call_id]
    assert (listed.state, listed.answered, listed.extension) == ("up", True, None)
    assert connected.extension == "1001"
    assert (ended.result, ended.cause) == (EndResult.ANSWERED, 16)
    assert kinds(log2.of(call_id)) == ["CallConnected", "CallEnded"]  # the past is the caller's
    assert not any(isinstance(e, UnknownChannel) for e in log2.events)


# --- an agent phone that cannot be reached ----------------------------------------------------------


async def test_unreachable_agent_phone_reports_the_dial_status_and_the_customer_stays_answered() -> None:
    """agent-leg-unavailable.jsonl: 1002's contact is unavailable; `UserEvent CallCenterAgentFailed`
    DialStatus CHANUNAVAIL <1 ms after the Redirect, no agent channel at all; the customer waits in
    Wait(60) and hangs up 8 s after answering with the failed Dial's Cause 3 / TechCause 404."""
    async with running() as (peer, gw, log):
        peer.unreachable_agents.add("1002")
        call_id = await originate(gw, "answer")
        await log.wait_type(CallAnswered, call_id)
        await gw.connect_agent(call_id, "1002")
        failed = await log.wait_type(AgentLegFailed, call_id)
        ended = await log.ended(call_id)
    # The PBX's word, verbatim: the engine tells a PBX-side reason from an agent who did not answer.
    assert (failed.extension, failed.detail) == ("1002", "CHANUNAVAIL")
    assert not any(isinstance(e, CallConnected) for e in log.of(call_id))
    assert (ended.result, ended.cause) == (EndResult.ANSWERED, 3)  # still an answered call
    assert "TechCause 404" in ended.detail
    assert_well_ordered(log, call_id)
