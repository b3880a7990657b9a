"""The FreeSWITCH driver against every recorded FreeSWITCH 1.10 conversation: the domain events it
reports for each situation, and the ESL wire parsing on the recorded bytes."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from callcenter.engine.commands import OriginateRequest
from callcenter.engine.events import (
    AgentLegFailed,
    AnswerKind,
    CallAnswered,
    CallConnected,
    CallEnded,
    CallRinging,
    EndResult,
    GatewayDraining,
    GatewayEvent,
    GatewayLink,
    SpyEnded,
    SpyMode,
    SpyStarted,
    UnknownChannel,
)
from callcenter.gateways.esl_wire import EslFramer, parse_event
from callcenter.gateways.freeswitch import FreeswitchGateway
from tests.gateways.contract import EventLog, assert_well_ordered, kinds, new_call_id
from tests.gateways.harness_freeswitch import make_gateway
from tests.peers.esl import TRACE_DIR, EslPeer, trace


@asynccontextmanager
async def driver(peer: EslPeer, log: EventLog, **overrides: Any) -> AsyncIterator[FreeswitchGateway]:
    gw = make_gateway(peer, **overrides)
    await asyncio.wait_for(gw.start(log.emit), 5)
    try:
        yield gw
    finally:
        await asyncio.wait_for(gw.close(), 5)


async def place(gw: FreeswitchGateway, number: str, **kw: Any) -> str:
    call_id = kw.pop("call_id", None) or new_call_id()
    await gw.originate(OriginateRequest(call_id=call_id, number=number, caller_id="4000", **kw))
    return call_id


def outcome(log: EventLog, call_id: str) -> list[str]:
    return [type(e).__name__ for e in log.of(call_id)]


# --- one recording, one situation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "result", "cause", "detail"),
    [
        ("10000002", EndResult.BUSY, 17, "sip 486"),  # originate-busy: HANGUP_COMPLETE before the job
        ("10000004", EndResult.FAILED, 41, "sip 503"),  # originate-503-congestion
        ("10000005", EndResult.FAILED, 41, "sip 503"),  # originate-unreachable: sofia makes the 503
        ("10000009", EndResult.FAILED, 102, "sip 408"),  # originate-no-response: timer B, 32 s
    ],
)
async def test_failed_originate_ends_with_the_recorded_cause(
    number: str, result: EndResult, cause: int, detail: str
) -> None:
    log = EventLog()
    async with EslPeer(time_scale=0.02) as peer, driver(peer, log) as gw:
        call_id = await place(gw, number)
        ended = await log.ended(call_id, timeout=10)
    assert (ended.result, ended.cause) == (result, cause)
    assert detail in ended.detail
    assert outcome(log, call_id) == ["CallEnded"]  # no progress, no answer in these recordings


async def test_no_answer_recording_ends_no_answer_at_the_channel_hangup_after_the_background_job() -> None:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        call_id = await place(gw, "10000003", ring_timeout_s=5)
        ended = await log.ended(call_id, timeout=10)
        assert re.search(r"originate_timeout=6[,}]", next(c for c in peer.commands if "originate" in c))
    # In this recording BACKGROUND_JOB -ERR NO_ANSWER comes 0.4 ms before CHANNEL_HANGUP_COMPLETE: the
    # call ends at the channel's hang-up, when FreeSWITCH no longer has it.
    assert (ended.result, ended.cause, ended.detail) == (EndResult.NO_ANSWER, 19, "NO_ANSWER, send_cancel")
    assert outcome(log, call_id) == ["CallRinging", "CallEnded"]


async def test_uuid_kill_while_ringing_recording_is_cancelled_not_a_normal_end() -> None:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        call_id = await place(gw, "10000007", ring_timeout_s=30)
        await log.wait_type(CallRinging, call_id)
        await gw.hangup(call_id)
        ended = await log.ended(call_id)
        assert f"api uuid_kill {call_id}" in peer.commands
    # FreeSWITCH says NORMAL_CLEARING (16), like any normal end; the driver knows it hung up.
    assert (ended.result, ended.cause) == (EndResult.CANCELLED, 16)
    assert "send_cancel" in ended.detail
    assert outcome(log, call_id) == ["CallRinging", "CallEnded"]


async def test_answered_then_abandoned_recording_is_answered_without_connect() -> None:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        call_id = await place(gw, "10000006")
        ended = await log.ended(call_id)
    assert (ended.result, ended.cause) == (EndResult.ANSWERED, 16)
    assert "recv_bye" in ended.detail  # the customer hung up
    assert outcome(log, call_id) == ["CallRinging", "CallAnswered", "CallEnded"]


async def test_agent_bridged_recording_connects_after_uuid_transfer() -> None:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        call_id = await place(gw, "10000001")
        await log.wait_type(CallAnswered, call_id)
        await gw.connect_agent(call_id, "1001")
        connected = await log.wait_type(CallConnected, call_id)
        ended = await log.ended(call_id)
        assert f"api uuid_transfer {call_id} agent_1001 XML campaign-answered" in peer.commands
        # The agent leg's PROGRESS, ANSWER and HANGUP_COMPLETE were dropped unparsed: not our call.
        assert gw._conn is not None and gw._conn.skipped == 3
    assert connected.extension == "1001"
    assert (ended.result, ended.cause) == (EndResult.ANSWERED, 16)
    assert outcome(log, call_id) == ["CallRinging", "CallAnswered", "CallConnected", "CallEnded"]


def _spy_variables(command: str) -> dict[str, str]:
    """The `{...}` variables of a spy originate, without the per-call ids."""
    inner = command[command.index("{") + 1 : command.index("}")]
    pairs = dict(part.split("=", 1) for part in inner.split(","))
    pairs.pop("origination_uuid", None)
    return pairs


def _recorded_spies() -> dict[str, dict[str, str]]:
    """The three spy originates of eavesdrop-whisper-variants.jsonl, by which party can hear the supervisor
    (freeswitch-faults/README.md, "Which party a whisper reaches"): aleg = the customer, bleg = the agent."""
    t = trace("freeswitch-faults/eavesdrop-whisper-variants")
    spies = [m.data for m in t.msgs if m.out and "&eavesdrop(" in m.data]
    by_party = {}
    for command in spies:
        variables = _spy_variables(command.split("\n", 1)[0])
        key = "+".join(k.removeprefix("eavesdrop_whisper_") for k in sorted(variables) if "whisper" in k)
        by_party[key or "none"] = variables
    assert set(by_party) == {"aleg", "bleg", "none"}
    return by_party


# What each mode must send, from the recorded variants: with `&eavesdrop(<agent leg>)`, whisper_aleg mixes the
# supervisor into the audio the agent leg passes on to the customer (ED_MUX_READ), whisper_bleg into the audio
# sent to the agent's phone (ED_MUX_WRITE); measured on the bed's RTP too (freeswitch-faults/README.md).
SPY_VARIANTS = {SpyMode.LISTEN: set(), SpyMode.WHISPER: {"bleg"}, SpyMode.BARGE: {"aleg", "bleg"}}


@pytest.mark.parametrize("mode", list(SpyMode))
async def test_spy_sends_the_whisper_variables_that_reach_the_right_party(mode: SpyMode) -> None:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        call_id = await place(gw, "10000008")
        await log.wait_type(CallAnswered, call_id)
        await gw.connect_agent(call_id, "1001")
        await log.wait_type(CallConnected, call_id)
        spy_id = await gw.spy(target_extension="1001", supervisor_extension="1002", mode=mode)
        started = await log.wait_for(lambda e: isinstance(e, SpyStarted) and e.spy_id == spy_id)
        await log.ended(call_id)
        await log.wait_for(lambda e: isinstance(e, SpyEnded) and e.spy_id == spy_id)
    assert (started.target_extension, started.mode) == ("1001", mode)
    # The bytes the switch received, not what the driver meant to send.
    wire = bytes(peer.received).decode()
    line = next(ln for ln in wire.split("\n") if "&eavesdrop(" in ln)
    agent_leg = peer.calls[call_id].agent_uuid
    assert line.endswith(f"user/1002 &eavesdrop({agent_leg})")  # the agent's leg, not ours
    sent = _spy_variables(line)
    assert sent["eavesdrop_enable_dtmf"] == "false"
    whisper = {k.rpartition("_")[2] for k, v in sent.items() if "_whisper_" in k and v == "true"}
    assert whisper == SPY_VARIANTS[mode]
    recorded = _recorded_spies()
    if mode is not SpyMode.BARGE:  # the recording has no barge: aleg alone, bleg alone, neither
        expected = recorded["bleg" if mode is SpyMode.WHISPER else "none"]
        assert {k: v for k, v in sent.items() if k.startswith("eavesdrop_")} == {
            k: v for k, v in expected.items() if k.startswith("eavesdrop_")
        }


@pytest.mark.parametrize("prefilter", [True, False])
async def test_burst_recording_replayed_verbatim_resolves_all_twenty_calls(prefilter: bool) -> None:
    """burst-20-mixed.jsonl byte for byte (only the Job-UUIDs are the driver's own): the events of
    20 calls interleave, some BACKGROUND_JOBs come before their CHANNEL_HANGUP_COMPLETE, some after.
    The same with and without the driver's look at each raw event before parsing it."""
    t = trace("burst-20-mixed")
    recorded = [t.originate(i) for i in range(20)]
    log = EventLog()
    options = {"dial_template": "sofia/cc/{number}", "prefilter": prefilter}
    async with EslPeer() as peer, driver(peer, log, **options) as gw:
        peer.replay_file("burst-20-mixed")
        ids = []
        for r in recorded:
            ring = 5.0 if r["number"].endswith(("2", "6")) else 30.0
            ids.append(await place(gw, r["number"], call_id=r["uuid"], ring_timeout_s=ring))
        ends = await asyncio.gather(*(log.ended(i, timeout=20) for i in ids))
        skipped = gw._conn.skipped if gw._conn is not None else -1
    # The peer sends only the events subscribed to, all of the calls': a call whose BACKGROUND_JOB -ERR
    # came first is still followed until its CHANNEL_HANGUP_COMPLETE, so nothing is dropped here.
    assert skipped == 0
    # Round robin over the SIPp customers, as recorded: answer, busy (486), ring out, 503.
    expected = [("answered", 16), ("busy", 17), ("no_answer", 19), ("failed", 41)]
    assert [(e.result.value, e.cause) for e in ends] == [expected[i % 4] for i in range(20)]
    results = Counter((e.result.value, e.cause) for e in ends)
    assert results == {("answered", 16): 5, ("busy", 17): 5, ("no_answer", 19): 5, ("failed", 41): 5}
    for call_id in ids:
        assert_well_ordered(log, call_id)
    answered = [i for i, e in zip(ids, ends, strict=True) if e.result is EndResult.ANSWERED]
    assert all(isinstance(log.of(i)[1], CallAnswered) for i in answered), [kinds(log.of(i)) for i in answered]
    assert sum(isinstance(e, CallRinging) for e in log.events) == 10  # the recording's CHANNEL_PROGRESS


@pytest.mark.parametrize(
    ("verdict", "answer"),
    [("MACHINE", AnswerKind.MACHINE), ("HUMAN", AnswerKind.HUMAN), ("NOTSURE", AnswerKind.UNKNOWN)],
)
async def test_amd_verdict_from_the_dialplan_event_is_the_answer_kind(
    verdict: str, answer: AnswerKind
) -> None:
    log = EventLog()
    async with EslPeer(amd_verdicts={"10000006": verdict}) as peer, driver(peer, log) as gw:
        call_id = await place(gw, "10000006", amd=True)
        answered = await log.wait_type(CallAnswered, call_id)
        await log.ended(call_id)
        assert "wait_amd XML campaign-answered" in next(c for c in peer.commands if "originate" in c)
    assert answered.answer == answer
    assert outcome(log, call_id) == ["CallRinging", "CallAnswered", "CallEnded"]


async def test_without_amd_the_dialplan_verdict_is_ignored() -> None:
    log = EventLog()
    async with EslPeer(amd_verdicts={"10000006": "MACHINE"}) as peer, driver(peer, log) as gw:
        call_id = await place(gw, "10000006")
        answered = await log.wait_type(CallAnswered, call_id)
        await log.ended(call_id)
    assert answered.answer == AnswerKind.UNKNOWN


async def test_show_channels_recording_is_read_into_active_calls() -> None:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        call_id = await place(gw, "10000001")
        await log.wait_type(CallAnswered, call_id)
        await gw.connect_agent(call_id, "1001")
        await log.wait_type(CallConnected, call_id)
        calls = await gw.active_calls()
        await log.ended(call_id)
    # Two channels (customer and agent leg), one call: the agent leg belongs to the customer's.
    assert [(c.call_id, c.extension, c.state) for c in calls] == [(call_id, "1001", "active")]


async def test_keepalive_and_exit_follow_the_recorded_session() -> None:
    log = EventLog()
    async with EslPeer() as peer:
        async with driver(peer, log, keepalive_s=0.2):
            await asyncio.sleep(0.35)
        assert "api status" in peer.commands  # answered with the recorded `api status` body
        assert peer.commands[-1] == "exit"
    assert not any(isinstance(e, CallEnded) for e in log.events)
    assert [type(e).__name__ for e in log.events] == ["GatewayLink"]  # no drop while idle


# --- the wire, on the recorded bytes -----------------------------------------------------------


def _inbound(name: str) -> bytes:
    lines = (json.loads(line) for line in (TRACE_DIR / f"{name}.jsonl").read_text().splitlines())
    return b"".join(r["data"].encode() for r in lines if r["dir"] == "in")


def test_background_job_result_is_the_body_not_glued_to_content_length() -> None:
    """greenswitch 0.0.19 returned Content-Length '15\\n\\n-ERR USER_BUSY' for this very event."""
    stream = _inbound("originate-busy")
    jobs = [parse_event(body) for headers, body in EslFramer().feed(stream) if b"BACKGROUND_JOB" in body]
    assert len(jobs) == 1
    assert jobs[0].raw["Content-Length"] == "15"
    assert jobs[0].body == "-ERR USER_BUSY\n"
    assert (jobs[0].get("Job-Command-Arg") or "").startswith("{origination_uuid=")  # URL-decoded on demand


@pytest.mark.parametrize("name", sorted(p.stem for p in TRACE_DIR.glob("*.jsonl")))
def test_a_header_read_on_demand_is_the_header_of_the_whole_split(name: str) -> None:
    """The driver reads single headers (`EslEvent.header`, a search); every header of every recorded
    event must read the same as from the full split, and absent ones as None."""
    for _, body in EslFramer().feed(_inbound(name)):
        if not body.startswith(b"Event-Name") and b"\nEvent-Name: " not in body:
            continue
        every = parse_event(body).raw
        event = parse_event(body)
        for key, value in every.items():
            assert event.header(key) == value, key
        for absent in ("Unique", "Event", "ID", "variable_no_such_thing", "Content-Len"):
            assert (event.header(absent) is None) is (absent not in every)


def test_a_header_with_an_empty_value_and_header_name_prefixes() -> None:
    event = parse_event(
        b"Event-Name: CUSTOM\nEvent-Subclass:\nUnique-ID-Extra: x\nUnique-ID: abc\nNote: a%20b"
    )
    assert event.header("Event-Subclass") == ""
    assert event.header("Unique-ID") == "abc"  # not the value of Unique-ID-Extra
    assert event.header("Note") == "a%20b" and event.get("Note") == "a b"
    assert event.header("Event") is None and event.name == "CUSTOM"


@pytest.mark.parametrize("name", sorted(p.stem for p in TRACE_DIR.glob("*.jsonl")))
def test_every_recorded_stream_frames_the_same_in_any_chunking(name: str) -> None:
    stream = _inbound(name)
    whole = EslFramer().feed(stream)
    rng = random.Random(name)
    framer = EslFramer()
    chunked: list[tuple[dict[str, str], bytes]] = []
    pos = 0
    while pos < len(stream):
        step = rng.choice((1, 2, 7, 64, 1500, 9000))
        chunked += framer.feed(stream[pos : pos + step])
        pos += step
    assert chunked == whole
    assert framer.pending_bytes == 0
    recorded = sum(1 for line in (TRACE_DIR / f"{name}.jsonl").read_text().splitlines() if '"in"' in line)
    assert len(whole) == recorded
    for headers, body in whole:
        assert len(body) == int(headers.get("Content-Length", 0))
        if headers.get("Content-Type") == "text/event-plain":
            assert parse_event(body).name


# --- the fault recordings (tests/fixtures/freeswitch-faults/) ------------------------------------


def _originates(name: str) -> list[dict[str, str]]:
    t = trace(name)
    return [t.originate(i) for i in range(sum(1 for m in t.msgs if m.out and "bgapi originate" in m.data))]


@pytest.mark.parametrize(
    "name",
    [
        # the transfer 0.3 ms after CHANNEL_ANSWER; BACKGROUND_JOB -ERR ORIGINATOR_CANCEL 20.7 ms after the
        # answer, before the agent leg and the bridge
        "freeswitch-faults/early-transfer-originator-cancel",
        # the same race with a busy lead dialled meanwhile; the -ERR comes after the agent leg's answer
        "freeswitch-faults/early-transfer-originator-cancel-while-dialling",
    ],
)
async def test_originator_cancel_of_an_answered_call_is_not_its_end(name: str) -> None:
    """FreeSWITCH answers `-ERR ORIGINATOR_CANCEL` to an originate whose call our transfer took over at
    CHANNEL_ANSWER, and the call goes on: it is bridged, talks, and ends at CHANNEL_HANGUP_COMPLETE."""
    recorded = _originates(name)
    log = EventLog()
    async with EslPeer(time_scale=0.05) as peer, driver(peer, log) as gw:
        session = peer.play_session(name)
        call_id = await place(gw, recorded[0]["number"])
        others = [await place(gw, r["number"]) for r in recorded[1:]]
        await log.wait_type(CallAnswered, call_id)
        await gw.connect_agent(call_id, "1001")  # at once, as the recorded client did
        connected = await log.wait_for(
            lambda e: isinstance(e, CallConnected | CallEnded) and e.call_id == call_id
        )
        assert isinstance(connected, CallConnected), f"ended while FreeSWITCH still had it: {connected}"
        ended = await log.ended(call_id)
        await asyncio.wait_for(session, 5)
        other_ends = [await log.ended(i) for i in others]
    assert kinds(log.of(call_id)) == ["CallRinging", "CallAnswered", "CallConnected", "CallEnded"]
    assert connected.extension == "1001"
    assert (ended.result, ended.cause) == (EndResult.ANSWERED, 16)
    assert "NORMAL_CLEARING" in ended.detail and "recv_bye" in ended.detail  # the customer's BYE
    assert [(e.result, e.cause) for e in other_ends] == [(EndResult.BUSY, 17)] * len(others)


async def test_shutdown_cuts_ringing_calls_refused_refuses_every_originate_drains_then_reconnects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """graceful-shutdown-while-ringing.jsonl: three calls ring; SHUTDOWN; their CHANNEL_HANGUP_COMPLETE
    SYSTEM_SHUTDOWN and `-ERR SYSTEM_SHUTDOWN`; then 30 originates, each `+OK Job-UUID` and `-ERR
    CHAN_NOT_IMPLEMENTED` with no channel; the disconnect notice 30.9 s after SHUTDOWN, and the close."""
    name = "freeswitch-faults/graceful-shutdown-while-ringing"
    recorded = _originates(name)
    caplog.set_level(logging.INFO, logger="callcenter.gateways.freeswitch")
    log = EventLog()
    async with EslPeer(time_scale=0.02) as peer, driver(peer, log, end_grace_s=0.1) as gw:
        peer.play_session(name)
        ringing = [await place(gw, r["number"], ring_timeout_s=60) for r in recorded[:3]]
        cut = [await log.ended(i) for i in ringing]
        assert [e.result for e in cut] == [EndResult.REFUSED] * 3, cut
        draining = await log.wait_type(GatewayDraining)
        late = [await place(gw, r["number"]) for r in recorded[3:]]
        refused = [await log.ended(i) for i in late]
        down = await log.wait_for(lambda e: isinstance(e, GatewayLink) and not e.up)
        await asyncio.sleep(0.3)  # FreeSWITCH is gone: reconnect attempts fail
        assert not gw.link_up
        peer.start_up()
        up = await log.wait_for(lambda e: isinstance(e, GatewayLink) and e.up and e is not log.events[0])
    assert draining.detail == "SHUTDOWN: System Shutting Down"
    for end in cut:  # cut before the answer: the customer never had a chance
        assert (end.result, end.cause) == (EndResult.REFUSED, 16), end
        assert "SYSTEM_SHUTDOWN" in end.detail
    for end in refused:  # no channel ever: not a customer's outcome, no lead burnt
        assert (end.result, end.cause) == (EndResult.REFUSED, 66), end
        assert "CHAN_NOT_IMPLEMENTED" in end.detail and "no channel" in end.detail
    assert all(kinds(log.of(i)) == ["CallEnded"] for i in late)
    assert down.detail == "The system is being shut down."
    assert sum(isinstance(e, GatewayDraining) for e in log.events) == 1
    assert log.events.index(draining) < log.events.index(down) < log.events.index(up)
    assert any("up again" in r.getMessage() for r in caplog.records)


async def test_keepalive_answered_not_ready_reports_draining() -> None:
    """graceful-shutdown-idle-keepalive.jsonl: after SHUTDOWN every `api status` says `is not ready`. A
    link that missed the SHUTDOWN event (connected after it) learns it from its keepalive."""
    log = EventLog()
    async with EslPeer(time_scale=0.02) as peer, driver(peer, log, keepalive_s=0.2):
        peer.shutting_down = True  # no SHUTDOWN event on this link
        draining = await log.wait_type(GatewayDraining, timeout=3)
        await asyncio.sleep(0.3)  # more keepalives: reported once
    assert draining.detail == "api status: FreeSWITCH is not ready (shutting down)"
    assert sum(isinstance(e, GatewayDraining) for e in log.events) == 1
    assert "api status" in peer.commands


async def test_session_rate_throttle_refuses_the_originates_that_never_got_a_channel() -> None:
    """session-rate-throttle.jsonl (sessions-per-second 5): of 12 originates sent at once, 4 get channels
    and the other 8 `-ERR DESTINATION_OUT_OF_ORDER` (a real network cause's name) with no channel event;
    three more 3.2 s later get channels. The 7 answered calls get the abandon message 2 s after the
    answer, as the recorded dialer sent it."""
    name = "freeswitch-faults/session-rate-throttle"
    recorded = _originates(name)
    log = EventLog()

    def abandon_later(event: GatewayEvent) -> None:
        if isinstance(event, CallAnswered):
            asyncio.get_running_loop().call_later(
                2.0 * 0.02, lambda: asyncio.ensure_future(gw.play_and_hangup(event.call_id, "abandon"))
            )

    log.hooks.append(abandon_later)
    async with EslPeer(time_scale=0.02) as peer, driver(peer, log, end_grace_s=0.1) as gw:
        peer.play_session(name)
        first = [await place(gw, r["number"]) for r in recorded[:12]]
        # Eight of them fail within the second (the recording's 5th to 12th); the next three wait for it.
        await asyncio.gather(*(log.ended(i) for i in first[4:]))
        later = [await place(gw, r["number"]) for r in recorded[12:]]
        ends = {i: await log.ended(i) for i in first + later}
    refused = [i for i, e in ends.items() if e.result is EndResult.REFUSED]
    answered = [i for i, e in ends.items() if e.result is EndResult.ANSWERED]
    assert (len(refused), len(answered)) == (8, 7), {i: e.result.value for i, e in ends.items()}
    assert set(refused) <= set(first)
    for i in refused:
        assert ends[i].cause == 27 and "DESTINATION_OUT_OF_ORDER" in ends[i].detail
        assert kinds(log.of(i)) == ["CallEnded"]
    for i in answered:
        assert_well_ordered(log, i)


async def test_restarted_driver_lists_an_answered_call_adopts_it_and_connects_it() -> None:
    """reconnect-show-channels-answered*.jsonl: link 1 originates, sees the answer and the call park in
    `wait`, then drops; link 2 sees only the `show channels` row (callstate ACTIVE, no event replayed),
    transfers the call to an agent and follows it to the customer's hang-up."""
    link1 = "freeswitch-faults/reconnect-show-channels-answered.link1"
    recorded = _originates(link1)[0]
    log = EventLog()
    async with EslPeer(time_scale=0.05) as peer:
        async with driver(peer, log) as gw:
            peer.play_session(link1)
            call_id = await place(gw, recorded["number"], call_id=recorded["uuid"])
            await log.wait_type(CallAnswered, call_id)
        peer.play_session("freeswitch-faults/reconnect-show-channels-answered")
        log2 = EventLog()
        async with driver(peer, log2) as gw2:
            calls = {c.call_id: c for c in await gw2.active_calls()}
            assert await gw2.adopt(call_id)
            await gw2.connect_agent(call_id, "1001")
            connected = await log2.wait_type(CallConnected, call_id)
            ended = await log2.ended(call_id)
    listed = calls[call_id]
    assert (listed.state, listed.answered) == ("active", True)
    assert connected.extension == "1001"
    assert (ended.result, ended.cause) == (EndResult.ANSWERED, 16)
    assert kinds(log2.of(call_id)) == ["CallConnected", "CallEnded"]
    # The call is the engine's, adopted: not a stranger's channel.
    assert not [e for e in log2.events if isinstance(e, UnknownChannel)]


async def test_unregistered_agent_phone_reports_the_disposition_and_the_customer_waits() -> None:
    """agent-not-registered.jsonl: the transfer to agent_1001 gets `+OK`, then CUSTOM
    callcenter::agent_failed `cc_status=USER_NOT_REGISTERED` and no agent channel at all; the customer
    is parked again, and the recorded dialer plays the abandon message 2 s after the answer."""
    name = "freeswitch-faults/agent-not-registered"
    log = EventLog()
    async with EslPeer(time_scale=0.05) as peer, driver(peer, log) as gw:
        peer.play_session(name)
        call_id = await place(gw, _originates(name)[0]["number"])
        await log.wait_type(CallAnswered, call_id)
        await gw.connect_agent(call_id, "1001")
        failed = await log.wait_type(AgentLegFailed, call_id)
        await gw.play_and_hangup(call_id, "abandon")  # the customer is still there, answered
        ended = await log.ended(call_id)
    # The PBX's word, verbatim: the engine tells a PBX-side reason from an agent who did not answer.
    assert (failed.extension, failed.detail) == ("1001", "USER_NOT_REGISTERED")
    assert (ended.result, ended.cause) == (EndResult.ANSWERED, 16)
    assert kinds(log.of(call_id)) == ["CallRinging", "CallAnswered", "AgentLegFailed", "CallEnded"]
