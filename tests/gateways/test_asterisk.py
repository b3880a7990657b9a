"""The Asterisk driver against the AMI test peer (real loopback sockets, recorded Asterisk 20 traffic):
outcome mapping per trace, AMD, spy, abandon message, adoption, link faults, injection, login, and
each panoramisk 1.4 fault next to the guard that keeps the driver clear of it."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from panoramisk import Manager

from callcenter.config import Settings
from callcenter.engine.commands import OriginateRequest
from callcenter.engine.events import (
    AnswerKind,
    CallAnswered,
    CallConnected,
    CallEnded,
    CallRinging,
    EndResult,
    GatewayLink,
    ManualCallStarted,
    SpyEnded,
    SpyMode,
    SpyStarted,
    UnknownChannel,
)
from callcenter.errors import Invalid
from callcenter.gateways.ami_wire import encode_action
from callcenter.gateways.asterisk import AsteriskGateway
from callcenter.gateways.base import CallNotFound, GatewayUnavailable
from tests.gateways.contract import EventLog, assert_well_ordered, kinds, new_call_id
from tests.gateways.harness_asterisk import AMD_NUMBER, NUMBERS, SECRET, USERNAME, make_gateway, make_peer
from tests.peers.ami import AmiPeer, first

INJECTION = "123\r\nAction: Command\r\nCommand: core stop now"


@asynccontextmanager
async def running(
    peer_kw: dict[str, Any] | None = None, **gw_kw: Any
) -> AsyncIterator[tuple[AmiPeer, AsteriskGateway, EventLog]]:
    log = EventLog()
    async with make_peer(**(peer_kw or {})) as peer:
        gw = make_gateway(peer, **gw_kw)
        await gw.start(log.emit)
        try:
            yield peer, gw, log
        finally:
            await gw.close()


async def originate(gw: AsteriskGateway, scenario: str, **kw: Any) -> str:
    call_id = new_call_id()
    number = AMD_NUMBER if scenario == "amd" else NUMBERS[scenario]
    await gw.originate(
        OriginateRequest(call_id=call_id, number=number, caller_id="4000", caller_name="Campaign", **kw)
    )
    return call_id


async def link_event(log: EventLog, up: bool, timeout: float = 5.0) -> GatewayLink:
    """The next GatewayLink(up) / (down) after those already logged."""
    seen = sum(isinstance(e, GatewayLink) and e.up is up for e in log.events)
    await log.wait_for(
        lambda _: sum(isinstance(e, GatewayLink) and e.up is up for e in log.events) > seen, timeout
    )
    return [e for e in log.events if isinstance(e, GatewayLink) and e.up is up][seen]


async def connected_call(gw: AsteriskGateway, log: EventLog, agent: str = "1001") -> str:
    call_id = await originate(gw, "answer")
    await log.wait_type(CallAnswered, call_id)
    await gw.connect_agent(call_id, agent)
    await log.wait_type(CallConnected, call_id)
    return call_id


# --- outcome mapping, one recorded conversation each ---------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "result", "cause", "detail"),
    [
        ("busy", EndResult.BUSY, 17, "Hangup Cause 17"),
        ("congestion", EndResult.CONGESTION, 34, "Hangup Cause 34"),
        ("no_answer", EndResult.NO_ANSWER, 19, "Hangup Cause 19"),
        ("unknown", EndResult.FAILED, 0, "OriginateResponse Reason 0"),
        ("abandon", EndResult.ANSWERED, 16, "Hangup Cause 16"),
    ],
)
async def test_recorded_outcome_maps_to_its_domain_result(
    scenario: str, result: EndResult, cause: int, detail: str
) -> None:
    async with running() as (_, gw, log):
        call_id = await originate(gw, scenario, ring_timeout_s=1.0)
        ended = await log.ended(call_id)
        await asyncio.sleep(0.3)  # a late OriginateResponse must not end it twice
    assert (ended.result, ended.cause) == (result, cause)
    assert detail in ended.detail
    assert_well_ordered(log, call_id)


async def test_originate_response_before_the_hangup_still_reports_the_hangup_cause() -> None:
    # originate-busy.jsonl: OriginateResponse Failure Reason 5 comes before Hangup Cause 17.
    async with running() as (_, gw, log):
        ended = await log.ended(await originate(gw, "busy"))
    assert (ended.result, ended.cause) == (EndResult.BUSY, 17)
    assert "OriginateResponse Reason 5" in ended.detail


async def test_reason_0_without_any_channel_ends_failed_once_the_grace_expires() -> None:
    async with running(end_grace_s=0.3) as (_, gw, log):
        started = time.monotonic()
        call_id = await originate(gw, "unknown")
        ended = await log.ended(call_id)
        assert time.monotonic() - started >= 0.3
    assert ended.result == EndResult.FAILED and ended.cause == 0
    assert kinds(log.of(call_id)) == ["CallEnded"]


async def test_hangup_while_ringing_is_cancelled_though_asterisk_says_reason_0_afterwards() -> None:
    async with running() as (peer, gw, log):
        call_id = await originate(gw, "no_answer", ring_timeout_s=30)
        await log.wait_type(CallRinging, call_id)
        await gw.hangup(call_id)
        ended = await log.ended(call_id)
        await asyncio.sleep(0.3)
    assert (ended.result, ended.cause) == (EndResult.CANCELLED, 16)
    assert_well_ordered(log, call_id)
    hangup = peer.actions_named("Hangup")[0]
    assert first(hangup, "Channel").startswith("PJSIP/trunk-") and first(hangup, "Cause") == "16"


@pytest.mark.parametrize(
    ("recorded", "replaced", "expected"),
    [
        ("NOTSURE", "NOTSURE", AnswerKind.UNKNOWN),
        ("NOTSURE", "MACHINE", AnswerKind.MACHINE),
        ("NOTSURE", "HUMAN", AnswerKind.HUMAN),
    ],
)
async def test_amd_verdict_comes_from_amdstatus(recorded: str, replaced: str, expected: AnswerKind) -> None:
    async with running({"variations": {recorded: replaced}}) as (peer, gw, log):
        call_id = await originate(gw, "amd", amd=True)
        answered = await log.wait_type(CallAnswered, call_id)
        await gw.hangup(call_id)
        ended = await log.ended(call_id)
    assert answered.answer == expected
    assert ended.result == EndResult.ANSWERED  # hung up by us after answer: not cancelled
    assert first(peer.actions_named("Originate")[0], "Context") == "campaign-answered-amd"
    assert_well_ordered(log, call_id)


async def test_without_amd_the_call_lands_in_the_plain_answered_context() -> None:
    async with running() as (peer, gw, log):
        call_id = await originate(gw, "answer")
        answered = await log.wait_type(CallAnswered, call_id)
    assert answered.answer == AnswerKind.UNKNOWN
    assert first(peer.actions_named("Originate")[0], "Context") == "campaign-answered"


async def test_agent_leg_of_an_outbound_call_is_not_mistaken_for_a_manual_call() -> None:
    async with running() as (peer, gw, log):
        call_id = await connected_call(gw, log)
        await log.ended(call_id)
    redirect = peer.actions_named("Redirect")[0]
    assert (first(redirect, "Context"), first(redirect, "Exten")) == ("agent-connect", "1001")
    assert not any(isinstance(e, ManualCallStarted) for e in log.events)


async def test_abandon_message_sets_the_sound_then_redirects_into_the_message_context() -> None:
    async with running() as (peer, gw, log):
        call_id = await originate(gw, "answer")
        await log.wait_type(CallAnswered, call_id)
        await gw.play_and_hangup(call_id, "callcenter/abandon")
        ended = await log.ended(call_id)
    setvar, redirect = peer.actions_named("Setvar")[0], peer.actions_named("Redirect")[0]
    assert (first(setvar, "Variable"), first(setvar, "Value")) == ("CC_SOUND", "callcenter/abandon")
    assert (first(redirect, "Context"), first(redirect, "Exten")) == ("abandon-message", "s")
    assert (ended.result, ended.cause) == (EndResult.ANSWERED, 16)
    assert "callcenter/abandon" in ended.detail


async def test_connect_agent_refuses_a_call_that_is_not_answered_yet() -> None:
    async with running() as (_, gw, log):
        call_id = await originate(gw, "no_answer", ring_timeout_s=30)
        await log.wait_type(CallRinging, call_id)
        with pytest.raises(CallNotFound):
            await gw.connect_agent(call_id, "1001")
        with pytest.raises(CallNotFound):
            await gw.connect_agent(new_call_id(), "1001")


async def test_interleaved_burst_of_20_recorded_calls_maps_every_call() -> None:
    # burst-20-mixed.jsonl as recorded: events of 20 calls interleaved, OriginateResponse sometimes
    # before the channel's Newchannel, sometimes after its Hangup.
    async with running({"default_scenario": None}) as (peer, gw, log):
        recorded = [f"call-b{i:03d}" for i in range(20)]
        ids = {r: new_call_id() for r in recorded}
        for r in recorded:
            await gw.originate(OriginateRequest(call_id=ids[r], number="+8610000000", ring_timeout_s=8))
        await gw.ping()
        peer.replay("burst-20-mixed.jsonl", ids)
        ends = {r: await log.ended(ids[r]) for r in recorded}
        await asyncio.sleep(0.3)
    expected = {0: (EndResult.ANSWERED, 16), 1: (EndResult.BUSY, 17), 2: (EndResult.NO_ANSWER, 19)}
    expected[3] = (EndResult.CONGESTION, 34)  # the recording dials answer, busy, no answer, fail in turn
    for i, r in enumerate(recorded):
        assert (ends[r].result, ends[r].cause) == expected[i % 4], (r, ends[r])
        assert_well_ordered(log, ids[r])
    answered = [e for e in log.events if isinstance(e, CallAnswered)]
    assert len(answered) == 5


# --- supervisors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(SpyMode))
async def test_spy_originates_the_supervisor_into_the_spy_context_on_the_agent_leg(mode: SpyMode) -> None:
    async with running() as (peer, gw, log):
        call_id = await connected_call(gw, log)
        agent_leg = next(
            s["Channel"]
            for s in peer.channels.values()
            if s["Linkedid"] == call_id and s["Uniqueid"] != call_id
        )
        spy_id = await gw.spy(target_extension="1001", supervisor_extension="1002", mode=mode)
        started = await log.wait_for(lambda e: isinstance(e, SpyStarted) and e.spy_id == spy_id)
        await log.ended(call_id)
        await log.wait_for(lambda e: isinstance(e, SpyEnded) and e.spy_id == spy_id)
    assert (started.mode, started.target_extension) == (mode, "1001")
    orig = peer.actions_named("Originate")[-1]
    assert first(orig, "Channel") == "PJSIP/1002"
    assert (first(orig, "Context"), first(orig, "Exten")) == ("supervisor-spy", mode.value)
    assert f"CC_SPY_CHANNEL={agent_leg}" in [v for k, v in orig if k == "Variable"]
    assert (first(orig, "Async"), first(orig, "ChannelId")) == ("true", spy_id)


async def test_spy_on_an_agent_without_a_call_is_refused() -> None:
    async with running() as (peer, gw, _):
        with pytest.raises(CallNotFound):
            await gw.spy(target_extension="1001", supervisor_extension="1002", mode=SpyMode.LISTEN)
    assert not peer.actions_named("Originate")


# --- dialer restart: listing and adopting calls ------------------------------------------------------


async def test_restarted_driver_lists_and_adopts_a_connected_call_and_follows_it_to_the_end() -> None:
    async with running() as (peer, gw, log):
        call_id = await connected_call(gw, log)
        log2 = EventLog()
        gw2 = make_gateway(peer)
        await gw2.start(log2.emit)
        try:
            calls = await gw2.active_calls()
            assert {c.call_id for c in calls} >= {call_id}
            customer = next(c for c in calls if c.call_id == call_id)
            assert customer.state == "up"
            assert await gw2.adopt(call_id)
            assert not await gw2.adopt(new_call_id())
            spy_id = await gw2.spy(target_extension="1001", supervisor_extension="1002", mode=SpyMode.LISTEN)
            ended = await log2.ended(call_id)
        finally:
            await gw2.close()
    assert spy_id.startswith("spy-")
    assert (ended.result, ended.cause) == (EndResult.ANSWERED, 16)
    assert [type(e) for e in log2.of(call_id)] == [CallEnded]


# --- link faults -------------------------------------------------------------------------------------


async def test_drop_before_the_originate_reply_never_dials_twice_and_the_call_resolves() -> None:
    async with running() as (peer, gw, log):
        peer.fail_next("Originate", "drop_unreplied")  # Asterisk executes it; the link dies unreplied
        call_id = await originate(gw, "answer")
        await link_event(log, up=False)
        await link_event(log, up=True)
        answered = await log.wait_type(CallAnswered, call_id)
        ended = await log.ended(call_id)
    assert peer.originates_for(call_id) == 1
    assert answered.answer == AnswerKind.UNKNOWN
    assert (ended.result, ended.cause) == (EndResult.ANSWERED, 16)  # its real outcome, after resync
    assert_well_ordered(log, call_id)


async def test_originate_lost_with_the_link_ends_lost_after_resync_and_is_not_resent() -> None:
    async with running() as (peer, gw, log):
        peer.fail_next("Originate", "drop_before")  # the link dies before Asterisk executes it
        call_id = await originate(gw, "answer")
        ended = await log.ended(call_id)
        await asyncio.sleep(0.3)
    assert ended.result == EndResult.LOST
    assert peer.originates_for(call_id) == 1
    assert kinds([e for e in log.events if isinstance(e, GatewayLink | CallEnded)]) == [
        "GatewayLink",
        "GatewayLink",
        "CallEnded",
        "GatewayLink",
    ]


async def test_reconnect_resync_ends_vanished_calls_lost_and_reports_unknown_channels() -> None:
    async with running({"speed": 5.0}, keepalive_s=0.6) as (peer, gw, log):
        ringing = await originate(gw, "no_answer", ring_timeout_s=30)
        await log.wait_type(CallRinging, ringing)
        peer.go_silent()  # a half-open link: what follows happens on the PBX, unseen by the driver
        busy = await originate(gw, "busy")
        peer.agent_dials("1003", "10000077")  # a call nobody told us about
        await link_event(log, up=False, timeout=3)
        await link_event(log, up=True)
        busy_end = await log.ended(busy)
        unknown = [e for e in log.events if isinstance(e, UnknownChannel)]
        assert not any(isinstance(e, CallEnded) and e.call_id == ringing for e in log.events)
        await gw.hangup(ringing)  # still followed after the resync
        ringing_end = await log.ended(ringing)
    assert (busy_end.result, busy_end.cause) == (EndResult.LOST, 0)
    assert "gone" in busy_end.detail
    assert ringing_end.result == EndResult.CANCELLED
    assert {e.channel.rpartition("-")[0] for e in unknown} == {"PJSIP/1003", "PJSIP/trunk"}
    ups = [e for e in log.events if isinstance(e, GatewayLink) and e.up]
    assert log.events.index(ups[-1]) > max(log.events.index(e) for e in unknown)  # up after resync
    assert peer.originates_for(busy) == 1


async def test_vanished_call_ends_lost() -> None:
    async with running({"speed": 2.0}, keepalive_s=0.6) as (peer, gw, log):
        call_id = await originate(gw, "busy")
        peer.go_silent()  # busy call ends (trace: within ms) while the link is silent
        ended = await log.ended(call_id, timeout=10)
    assert ended.result == EndResult.LOST
    assert ended.cause == 0


async def test_silent_link_is_detected_within_the_keepalive_interval() -> None:
    keepalive = 0.6
    async with running(keepalive_s=keepalive) as (peer, _, log):
        await asyncio.sleep(0.1)
        peer.go_silent()
        silent_at = time.time()  # the driver stamps events with time.time()
        down = await link_event(log, up=False, timeout=3)
        await link_event(log, up=True)
    noticed = down.at - silent_at
    assert noticed <= keepalive + 0.1, f"silent link noticed after {noticed:.2f}s"  # 0.1 s: loop latency
    assert "Ping" in down.detail


async def test_reconnect_backs_off_exponentially_up_to_its_cap() -> None:
    async with running(reconnect_initial_s=0.1, reconnect_max_s=0.4) as (peer, _, log):
        peer.reject_connections = True
        peer.drop()
        await link_event(log, up=False)
        await asyncio.sleep(2.0)
        peer.reject_connections = False
        await link_event(log, up=True, timeout=3)
    tries = peer.connect_times[1:]
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    # tries at +0.1, +0.2, +0.4, +0.4, +0.4 ... (each gap also holds one refused connect)
    assert len(gaps) >= 4, gaps
    assert 0.15 <= gaps[0] <= 0.35, gaps
    assert 0.35 <= gaps[1] <= 0.6, gaps
    assert all(g <= 0.4 + 0.2 for g in gaps), gaps  # capped
    assert sum(g >= 0.35 for g in gaps) >= 3, gaps


async def test_command_in_flight_when_the_link_drops_fails_at_once_instead_of_hanging() -> None:
    async with running(timeout_s=5.0) as (peer, gw, log):
        call_id = await originate(gw, "answer")
        await log.wait_type(CallAnswered, call_id)
        peer.fail_next("Redirect", "drop_before")
        started = time.monotonic()
        with pytest.raises(GatewayUnavailable):
            await gw.connect_agent(call_id, "1001")
        assert time.monotonic() - started < 1.0
        with pytest.raises(GatewayUnavailable):
            await gw.originate(OriginateRequest(call_id=new_call_id(), number=NUMBERS["busy"]))
        await link_event(log, up=True)


async def test_every_originate_carries_an_explicit_async_header() -> None:
    async with running() as (peer, gw, log):
        await connected_call(gw, log)
        await originate(gw, "amd", amd=True)
        await gw.spy(target_extension="1001", supervisor_extension="1002", mode=SpyMode.BARGE)
    originates = peer.actions_named("Originate")
    assert len(originates) == 3
    assert all(first(o, "Async") == "true" for o in originates)


async def test_originate_returns_once_written_and_its_outcome_arrives_as_events() -> None:
    async with running({"speed": 1.0}) as (_, gw, log):
        started = time.monotonic()
        call_id = await originate(gw, "answer")
        assert time.monotonic() - started < 0.2  # it does not wait for the answer (2 s in the trace)
        assert kinds(log.of(call_id)) == []
        await log.wait_type(CallAnswered, call_id)
        busy = await originate(gw, "busy")
        ended = await log.ended(busy)
    assert ended.result == EndResult.BUSY  # the OriginateResponse reached the event path


# --- panoramisk 1.4, the faults the driver is built around ------------------------------------------


@asynccontextmanager
async def panoramisk_manager(peer: AmiPeer, **config: Any) -> AsyncIterator[tuple[Manager, dict[str, Any]]]:
    loop = asyncio.get_running_loop()
    seen: dict[str, Any] = {"logins": 0, "lost": [], "events": []}
    logged_in = asyncio.Event()

    def on_login(_: Manager) -> None:
        seen["logins"] += 1
        logged_in.set()

    options: dict[str, Any] = {"ping_delay": 3600, "reconnect_timeout": 3600}
    options.update(config)
    manager = Manager(
        host=peer.host,
        port=peer.port,
        username=USERNAME,
        secret=SECRET,
        loop=loop,
        on_login=on_login,
        on_disconnect=lambda _, exc: seen["lost"].append(exc),
        **options,
    )
    manager.register_event("*", lambda _, event: seen["events"].append(event))
    manager.connect()
    await asyncio.wait_for(logged_in.wait(), 3)
    try:
        yield manager, seen
    finally:
        manager.close()


def _originate_action(call_id: str, number: str, **extra: str) -> dict[str, str]:
    return {
        "Action": "Originate",
        "Channel": f"PJSIP/{number.lstrip('+')}@trunk",
        "Context": "campaign-answered",
        "Exten": "s",
        "Priority": "1",
        "ChannelId": call_id,
        **extra,
    }


async def test_panoramisk_fault_originate_without_async_kills_its_connection() -> None:
    async with make_peer() as peer, panoramisk_manager(peer) as (manager, seen):
        manager.send_action(_originate_action(new_call_id(), NUMBERS["busy"]))
        for _ in range(50):
            if seen["lost"]:
                break
            await asyncio.sleep(0.02)
    assert seen["lost"] and isinstance(seen["lost"][0], KeyError)  # raised in its data_received


async def test_panoramisk_fault_awaited_async_originate_hides_the_originate_response() -> None:
    async with make_peer() as peer, panoramisk_manager(peer) as (manager, seen):
        reply = await asyncio.wait_for(
            manager.send_action(_originate_action(new_call_id(), NUMBERS["busy"], Async="true")), 3
        )
        await asyncio.sleep(0.2)
    names = [e.event for e in seen["events"]]
    assert "Newchannel" in names  # the await did not return at "queued"...
    assert [m.get("Event") for m in reply][-1] == "OriginateResponse"  # ...but at the outcome
    assert "OriginateResponse" not in names  # which never reaches the event callbacks


async def test_panoramisk_fault_unreplied_originate_is_sent_again_after_a_reconnect() -> None:
    async with make_peer() as peer, panoramisk_manager(peer, reconnect_timeout=0) as (manager, seen):
        call_id = new_call_id()
        peer.fail_next("Originate", "drop_unreplied")
        manager.send_action(_originate_action(call_id, NUMBERS["busy"], Async="true"))
        for _ in range(100):
            if peer.originates_for(call_id) >= 2:
                break
            await asyncio.sleep(0.02)
    assert seen["logins"] >= 2
    assert peer.originates_for(call_id) == 2  # the same call dialled twice


async def test_panoramisk_fault_future_with_a_partial_reply_hangs_after_a_drop() -> None:
    async with make_peer(speed=4.0) as peer, panoramisk_manager(peer, reconnect_timeout=0) as (manager, seen):
        future = manager.send_action(_originate_action(new_call_id(), NUMBERS["answer"], Async="true"))
        await asyncio.sleep(0.1)  # "queued" arrived; the answer comes at 0.5 s
        peer.drop()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(future), 1.0)
    assert seen["logins"] >= 2 and not future.done()


async def test_panoramisk_fault_ping_does_not_notice_a_silent_link() -> None:
    async with (
        make_peer() as peer,
        panoramisk_manager(peer, ping_delay=1, ping_interval=1) as (_, seen),
    ):
        peer.go_silent()
        await asyncio.sleep(2.3)
    assert len(peer.actions_named("Ping")) >= 2  # it kept pinging into the void
    assert not seen["lost"]  # and never noticed


# --- nothing unvalidated reaches the wire -------------------------------------------------------------


def _unchecked_request(**fields: Any) -> OriginateRequest:
    """An OriginateRequest that skipped its own validation (as a bug upstream could produce)."""
    values = {
        "call_id": new_call_id(),
        "number": NUMBERS["busy"],
        "caller_id": "",
        "caller_name": "",
        "ring_timeout_s": 30.0,
        "amd": False,
        "variables": {},
    }
    values.update(fields)
    request = object.__new__(OriginateRequest)
    for name, value in values.items():
        object.__setattr__(request, name, value)
    return request


@pytest.mark.parametrize(
    "fields",
    [
        {"number": INJECTION},
        {"number": "+86" + INJECTION},
        {"caller_id": INJECTION},
        {"caller_name": 'x" <1>\r\nAction: Command\r\nCommand: core stop now'},
        {"variables": {"CC_NOTE": INJECTION}},
        {"variables": {"CC_NOTE\r\nAction: Command\r\nCommand: core stop now": "1"}},
        {"call_id": INJECTION},
    ],
)
async def test_originate_with_an_injected_line_is_refused_and_nothing_is_sent(fields: dict[str, Any]) -> None:
    async with running() as (peer, gw, _):
        with pytest.raises(Invalid) as refused:
            await gw.originate(_unchecked_request(**fields))
        await gw.ping()  # anything sent before it has reached the peer
    assert refused.value.message
    assert b"core stop now" not in peer.received
    assert not peer.actions_named("Originate") and not peer.actions_named("Command")


async def test_commands_with_injected_values_are_refused_and_nothing_is_sent() -> None:
    async with running() as (peer, gw, log):
        call_id = await connected_call(gw, log)
        sent_before = len(peer.received)
        with pytest.raises(Invalid):
            await gw.connect_agent(call_id, INJECTION)
        with pytest.raises(Invalid):
            await gw.play_and_hangup(call_id, INJECTION)
        with pytest.raises(Invalid):
            await gw.spy(target_extension=INJECTION, supervisor_extension="1002", mode=SpyMode.LISTEN)
        with pytest.raises(Invalid):
            await gw.spy(target_extension="1001", supervisor_extension=INJECTION, mode=SpyMode.LISTEN)
        with pytest.raises(CallNotFound):
            await gw.hangup(INJECTION)
        with pytest.raises(Invalid):
            await gw.adopt(INJECTION)
        await gw.ping()
    assert b"core stop now" not in peer.received
    assert len(peer.actions_named("Command")) == 0
    assert b"Action: Ping" in peer.received[sent_before:]


def test_the_wire_encoder_refuses_line_breaks_whatever_the_caller_checked() -> None:
    for headers in ([("Channel", "PJSIP/1@t\r\nAction: Command")], [("Bad\nKey", "x")], [("Exten", "s\x00")]):
        with pytest.raises(Invalid):
            encode_action("Redirect", "cc-1", headers)
    assert encode_action("Ping", "cc-2") == b"Action: Ping\r\nActionID: cc-2\r\n\r\n"


# --- login, subscription, settings ----------------------------------------------------------------------


async def test_wrong_secret_is_refused_with_a_clear_error() -> None:
    async with make_peer() as peer:
        gw = AsteriskGateway(host=peer.host, port=peer.port, username=USERNAME, secret="wrong", timeout_s=2)
        with pytest.raises(GatewayUnavailable, match="login as 'callcenter' refused: Authentication failed"):
            await gw.start(EventLog().emit)
        await gw.close()
    assert len(peer.actions_named("Login")) == 1  # no retry loop behind a failed start


async def test_unreachable_ami_fails_start_at_once() -> None:
    async with make_peer() as peer:
        port = peer.port
    gw = AsteriskGateway(host="127.0.0.1", port=port, username=USERNAME, secret=SECRET, timeout_s=1)
    with pytest.raises(GatewayUnavailable, match="cannot reach AMI"):
        await gw.start(EventLog().emit)


async def test_subscription_leaves_out_dialplan_noise_and_the_rest_is_dropped_unparsed() -> None:
    async with running() as (peer, gw, log):
        call_id = await connected_call(gw, log)
        await log.ended(call_id)
        login = peer.actions_named("Login")[0]
        dropped = gw._proto.dropped if gw._proto else 0
    assert first(login, "Events") == "call,user,system"  # system: the Shutdown event, nothing else
    sent = peer.conns[0].sent
    assert sent["VarSet"] == 0 and sent["Newexten"] == 0  # never subscribed
    assert sent["DialBegin"] > 0 and dropped >= sent["DialBegin"]  # subscribed, dropped by name


async def test_close_logs_off() -> None:
    async with make_peer() as peer:
        gw = make_gateway(peer)
        await gw.start(EventLog().emit)
        await gw.close()
        await asyncio.sleep(0.05)
    assert peer.actions_named("Logoff")


def test_driver_is_built_from_settings() -> None:
    settings = Settings(
        mode="dev",
        ami_host="10.0.0.5",
        ami_port=5039,
        ami_secret="s",
        ami_dial_template="SIP/trunk/{number}",
        gateway_keepalive_s=7,
    )
    gw = AsteriskGateway.from_settings(settings)
    assert (gw.host, gw.port, gw.username, gw.dial_template, gw.keepalive_s) == (
        "10.0.0.5",
        5039,
        "callcenter",
        "SIP/trunk/{number}",
        7,
    )
