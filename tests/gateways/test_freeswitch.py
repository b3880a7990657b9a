"""The FreeSWITCH driver under faults (drops, a silent switch, late replies, torn events), with hostile
values (nothing unvalidated reaches the wire), and at login. Real sockets, the ESL test peer."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from callcenter.engine.commands import OriginateRequest
from callcenter.engine.events import (
    CallAnswered,
    CallConnected,
    CallEnded,
    CallRinging,
    EndResult,
    GatewayEvent,
    GatewayLink,
    ManualCallStarted,
    SpyMode,
    UnknownChannel,
)
from callcenter.errors import Invalid
from callcenter.gateways.base import CallNotFound, CommandTimeout, GatewayUnavailable
from callcenter.gateways.esl_calls import classify_end, q850_of
from callcenter.gateways.esl_wire import encode_command
from callcenter.gateways.freeswitch import FreeswitchGateway
from tests.gateways.contract import EventLog, assert_well_ordered, new_call_id
from tests.gateways.harness_freeswitch import make_gateway
from tests.peers.esl import EslPeer


@asynccontextmanager
async def driver(peer: EslPeer, log: EventLog, **overrides: Any) -> AsyncIterator[FreeswitchGateway]:
    gw = make_gateway(peer, **overrides)
    await asyncio.wait_for(gw.start(log.emit), 5)
    try:
        yield gw
    finally:
        await asyncio.wait_for(gw.close(), 5)


async def place(gw: FreeswitchGateway, number: str, **kw: Any) -> str:
    call_id = new_call_id()
    await gw.originate(OriginateRequest(call_id=call_id, number=number, caller_id="4000", **kw))
    return call_id


def links(log: EventLog) -> list[bool]:
    return [e.up for e in log.events if isinstance(e, GatewayLink)]


async def wait_link(log: EventLog, up: bool, after: int = 0, timeout: float = 5.0) -> GatewayLink:
    """The first GatewayLink(up) after the `after`-th link event."""

    def match(e: object) -> bool:
        if not isinstance(e, GatewayLink):
            return False
        idx = [x for x in log.events if isinstance(x, GatewayLink)].index(e)
        return idx >= after and e.up is up

    event: GatewayLink = await log.wait_for(match, timeout)
    return event


# --- link drops and resync ---------------------------------------------------------------------


async def test_drop_during_an_in_flight_originate_never_dials_twice_and_the_call_resolves() -> None:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        # FreeSWITCH takes the originate, then the TCP connection dies before the reply comes back.
        peer.drop_on_command = lambda line: line.startswith("bgapi originate")
        call_id = await place(gw, "10000006")  # answers after 0.1 s, hangs up 0.4 s later
        await wait_link(log, False)
        await wait_link(log, True, after=1)
        ended = await log.ended(call_id, timeout=10)
        originates = [c for c in peer.commands if c.startswith("bgapi originate")]
        assert peer.originates == 1 and len(originates) == 1
        assert len(peer.accepted_at) == 2  # one reconnect, no second dial
    # Resync found the channel, the later events came over the new connection.
    assert (ended.result, ended.cause) == (EndResult.ANSWERED, 16)
    assert any(isinstance(e, CallAnswered) for e in log.of(call_id))
    assert_well_ordered(log, call_id)
    assert links(log) == [True, False, True]


async def test_calls_that_vanished_while_the_link_was_down_end_lost_and_strangers_are_reported() -> None:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        ringing = await place(gw, "10000003", ring_timeout_s=30)  # still ringing after the outage
        vanishing = await place(gw, "10000006")
        await log.wait_type(CallAnswered, vanishing)
        peer.refuse_connections = True
        peer.drop()
        await wait_link(log, False)
        # While the controller is away: the answered customer hangs up, an agent dials by hand.
        await asyncio.wait_for(peer.wait_end(vanishing), 5)
        stranger = peer.agent_dials("1003", "10000099")
        await asyncio.sleep(0.05)
        peer.refuse_connections = False
        await wait_link(log, True, after=1)
        lost = await log.ended(vanishing)
        unknown = [e for e in log.events if isinstance(e, UnknownChannel)]
        assert not any(isinstance(e, CallEnded) for e in log.of(ringing))
        await gw.hangup(ringing)  # the survivor is still followed and still controllable
        cancelled = await log.ended(ringing)
    assert (lost.result, lost.cause) == (EndResult.LOST, 0)
    assert any(stranger in e.detail for e in unknown), unknown
    assert cancelled.result == EndResult.CANCELLED
    # Resync ran before the link was reported up again: the loss comes first.
    assert log.events.index(lost) < log.events.index(
        next(e for e in log.events[3:] if isinstance(e, GatewayLink) and e.up)
    )


async def test_silent_link_is_detected_within_the_keepalive_interval() -> None:
    log = EventLog()
    keepalive = 0.6
    async with EslPeer() as peer, driver(peer, log, keepalive_s=keepalive) as gw:
        call_id = await place(gw, "10000003", ring_timeout_s=30)
        await log.wait_type(CallRinging, call_id)
        peer.go_silent()  # TCP stays open, nothing comes back any more
        silent_at = time.monotonic()
        down = await wait_link(log, False, timeout=keepalive * 3)
        detected_after = time.monotonic() - silent_at
        assert "api status" in peer.commands  # the probe that went unanswered
        peer.resume()
        await wait_link(log, True, after=1)
        await gw.hangup(call_id)  # the call survived the outage on the switch
        ended = await log.ended(call_id)
    # Nothing arrived for `keepalive` seconds: dropped then (plus event-loop scheduling on a busy box).
    assert detected_after <= keepalive + 0.3, detected_after
    assert "silent" in down.detail
    assert ended.result == EndResult.CANCELLED


async def test_busy_but_healthy_link_is_not_dropped_by_the_keepalive() -> None:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log, keepalive_s=0.3):
        await asyncio.sleep(1.0)
        probes = peer.commands.count("api status")
    assert links(log) == [True]
    assert 2 <= probes <= 8


async def test_reconnect_backs_off_exponentially_up_to_the_cap() -> None:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log, backoff_initial_s=0.1, backoff_max_s=0.3):
        peer.refuse_connections = True
        dropped_at = asyncio.get_running_loop().time()
        peer.drop()
        await wait_link(log, False)
        await asyncio.sleep(1.6)
        attempts = list(peer.accepted_at[1:])
        peer.refuse_connections = False
        await wait_link(log, True, after=1)
    gaps = [b - a for a, b in itertools.pairwise([dropped_at, *attempts])]
    assert len(gaps) >= 5, gaps
    # Nominal 0.1, 0.2, then capped at 0.3 (uncapped: 0.4, 0.8, ...), each times a jitter of 0.8-1.0;
    # the upper bounds leave room for a loaded machine.
    slack = 0.25
    assert 0.1 * 0.8 - 0.01 <= gaps[0] <= 0.1 + slack, gaps
    assert 0.2 * 0.8 - 0.01 <= gaps[1] <= 0.2 + slack, gaps
    assert all(0.3 * 0.8 - 0.01 <= g <= 0.3 + slack for g in gaps[2:]), gaps


async def test_command_times_out_and_a_late_reply_is_not_taken_for_the_next_command() -> None:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log, timeout_s=0.3, keepalive_s=10) as gw:
        call_id = await place(gw, "10000003", ring_timeout_s=30)
        await log.wait_type(CallRinging, call_id)
        peer.hold_replies()
        started = time.monotonic()
        with pytest.raises(CommandTimeout):
            await gw.active_calls()
        assert time.monotonic() - started < 1.0  # timeout_s is 0.3
        peer.release_replies()  # the `show channels` answer arrives late, after the timeout
        await gw.hangup(call_id)  # must get its own `+OK`, not the late channel list
        ended = await log.ended(call_id)
        calls = await gw.active_calls()
    assert ended.result == EndResult.CANCELLED
    assert calls == []
    assert links(log) == [True]  # a slow answer is not a dead link


async def test_pending_command_fails_at_once_when_the_link_drops() -> None:
    """greenswitch 0.0.19 blocked such a send() forever."""
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        call_id = await place(gw, "10000003", ring_timeout_s=30)
        await log.wait_type(CallRinging, call_id)
        peer.drop_on_command = lambda line: line.startswith("api uuid_kill")
        started = time.monotonic()
        with pytest.raises(GatewayUnavailable):
            await gw.hangup(call_id)
        assert time.monotonic() - started < 1.0  # at once, not after timeout_s (2 s) or never
        await wait_link(log, True, after=1)
        ended = await log.ended(call_id)
        assert call_id in peer.ended  # the kill reached the switch; its reply was lost
    # The call ended while the driver was away: it cannot know how, so it is lost, not guessed.
    assert ended.result == EndResult.LOST


async def test_event_torn_by_a_drop_mid_body_is_discarded_without_spinning() -> None:
    """greenswitch 0.0.19 looped on read() == b'' forever here, at 100 % CPU."""
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        call_id = await place(gw, "10000003", ring_timeout_s=30)
        await log.wait_type(CallRinging, call_id)
        session = peer.sessions[-1]
        session.writer.write(
            b"Content-Length: 5000\nContent-Type: text/event-plain\n\nEvent-Name: CHANNEL_ANSW"
        )
        await session.writer.drain()
        cpu = time.process_time()
        session.abort()
        await wait_link(log, False)
        await wait_link(log, True, after=1)
        spent = time.process_time() - cpu
        await gw.hangup(call_id)
        ended = await log.ended(call_id)
    assert spent < 0.5, spent
    assert not any(isinstance(e, CallAnswered) for e in log.of(call_id))
    assert ended.result == EndResult.CANCELLED


async def test_background_job_split_across_packets_inside_its_content_length_still_maps() -> None:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        call_id = await place(gw, "10000003", ring_timeout_s=30)
        await log.wait_type(CallRinging, call_id)
        job = gw._calls[call_id].job_uuid
        body = (
            f"Event-Name: BACKGROUND_JOB\nJob-UUID: {job}\nJob-Command: originate\nContent-Length: 15\n\n"
            "-ERR USER_BUSY\n"
        ).encode()
        frame = b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(body) + body
        session = peer.sessions[-1]
        cut = frame.index(b"Content-Length: 15") + len(b"Content-Length: 1")
        for part in (frame[:cut], frame[cut : cut + 9], frame[cut + 9 :]):
            session.writer.write(part)
            await session.writer.drain()
            await asyncio.sleep(0.01)
        ended = await log.ended(call_id)
    assert (ended.result, ended.cause) == (EndResult.BUSY, 17)


async def test_events_are_emitted_on_the_loop_thread() -> None:
    threads: set[int] = set()

    class ThreadLog(EventLog):
        def emit(self, event: GatewayEvent) -> None:
            threads.add(threading.get_ident())
            super().emit(event)

    log = ThreadLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        call_id = await place(gw, "10000002")
        await log.ended(call_id)
    assert threads == {threading.get_ident()}


async def test_a_failing_event_consumer_does_not_break_the_link() -> None:
    class FaultyLog(EventLog):
        def emit(self, event: GatewayEvent) -> None:
            super().emit(event)
            if isinstance(event, CallRinging):
                raise RuntimeError("consumer bug")

    log = FaultyLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        call_id = await place(gw, "10000003", ring_timeout_s=30)
        await log.wait_type(CallRinging, call_id)
        await gw.hangup(call_id)
        ended = await log.ended(call_id)
    assert ended.result == EndResult.CANCELLED
    assert links(log) == [True]


# --- start, login, restart ---------------------------------------------------------------------


async def test_wrong_password_is_refused_at_start_and_nothing_else_is_sent() -> None:
    async with EslPeer() as peer:
        gw = make_gateway(peer, password="not-the-password")
        with pytest.raises(GatewayUnavailable, match="invalid"):
            await asyncio.wait_for(gw.start(EventLog().emit), 5)
        await asyncio.sleep(0.1)
        assert peer.commands == ["auth not-the-password"]  # as in auth-failure.jsonl
        assert len(peer.accepted_at) == 1  # start() does not retry
        await gw.close()


async def test_address_refused_by_the_event_socket_acl_fails_start() -> None:
    """mod_event_socket answers a connection from outside `apply-inbound-acl` with a rude rejection."""
    rejection = b"Access Denied, go away.\n"

    async def reject(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"Content-Type: text/rude-rejection\nContent-Length: %d\n\n" % len(rejection) + rejection
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(reject, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gw = FreeswitchGateway(host="127.0.0.1", port=port, password="x", timeout_s=1)
        with pytest.raises(GatewayUnavailable, match="Access Denied"):
            await asyncio.wait_for(gw.start(EventLog().emit), 5)
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


async def test_unreachable_switch_fails_start() -> None:
    async with EslPeer() as peer:
        port = peer.port
    gw = FreeswitchGateway(host="127.0.0.1", port=port, password="x", timeout_s=0.5)
    with pytest.raises(GatewayUnavailable):
        await asyncio.wait_for(gw.start(EventLog().emit), 5)


async def test_commands_while_the_link_is_down_send_nothing() -> None:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        call_id = await place(gw, "10000003", ring_timeout_s=30)
        await log.wait_type(CallRinging, call_id)
        peer.refuse_connections = True
        peer.drop()
        await wait_link(log, False)
        sent = len(peer.received)
        with pytest.raises(GatewayUnavailable):
            await place(gw, "10000002")
        with pytest.raises(GatewayUnavailable):
            await gw.hangup(call_id)
        assert len(peer.received) == sent
        peer.refuse_connections = False
        await wait_link(log, True, after=1)


async def test_restarted_driver_adopts_a_call_it_did_not_place() -> None:
    log1, log2 = EventLog(), EventLog()
    async with EslPeer() as peer:
        async with driver(peer, log1) as first:
            call_id = await place(first, "10000001")
            await log1.wait_type(CallAnswered, call_id)
        async with driver(peer, log2) as second:
            # The engine lists the PBX's calls after a restart and adopts its own: the first connection
            # does not report them as unknown channels first.
            assert call_id in {c.call_id for c in await second.active_calls()}
            assert not any(isinstance(e, UnknownChannel) for e in log2.events)
            assert await second.adopt(call_id)
            assert not await second.adopt(new_call_id())
            await second.connect_agent(call_id, "1001")
            await log2.wait_type(CallConnected, call_id)
            ended = await log2.ended(call_id)
    assert (ended.result, ended.cause) == (EndResult.ANSWERED, 16)
    assert not any(isinstance(e, CallAnswered) for e in log2.of(call_id))  # the dialer knew already


async def test_adopted_ringing_call_reports_its_answer_later() -> None:
    log1, log2 = EventLog(), EventLog()
    async with EslPeer(time_scale=0.2) as peer:  # the customer rings 0.4 s
        async with driver(peer, log1) as first:
            call_id = await place(first, "10000006")
            await log1.wait_type(CallRinging, call_id)
        async with driver(peer, log2) as second:
            assert await second.adopt(call_id)
            await log2.wait_type(CallAnswered, call_id)
            ended = await log2.ended(call_id, timeout=5)
    assert ended.result == EndResult.ANSWERED
    assert [type(e).__name__ for e in log2.of(call_id)] == ["CallAnswered", "CallEnded"]


async def test_manual_call_hung_up_by_the_controller_before_the_customer_answers_is_cancelled() -> None:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        agent_leg = peer.agent_dials("1002", "10000077", ring_s=5)
        started = await log.wait_type(ManualCallStarted)
        await gw.hangup(started.call_id)
        ended = await log.ended(started.call_id)
    assert (started.call_id, started.extension, started.number) == (agent_leg, "1002", "10000077")
    assert (ended.result, ended.cause) == (EndResult.CANCELLED, 16)
    assert not any(isinstance(e, CallConnected) for e in log.of(agent_leg))
    assert_well_ordered(log, started.call_id)


async def test_manual_call_connects_when_the_customer_answers_and_ends_answered() -> None:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        agent_leg = peer.agent_dials("1003", "10000078")
        connected = await log.wait_type(CallConnected, agent_leg)
        spy_id = await gw.spy(target_extension="1003", supervisor_extension="1002", mode=SpyMode.WHISPER)
        ended = await log.ended(agent_leg)
        spy_command = next(c for c in peer.commands if "&eavesdrop(" in c)
    assert connected.extension == "1003"
    assert (ended.result, ended.cause) == (EndResult.ANSWERED, 16)
    assert spy_command.endswith(f"&eavesdrop({agent_leg})")  # the agent's own leg
    assert spy_id
    assert [type(e).__name__ for e in log.of(agent_leg)] == [
        "ManualCallStarted",
        "CallConnected",
        "CallEnded",
    ]


async def test_commands_on_unknown_calls_raise_call_not_found() -> None:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        with pytest.raises(CallNotFound):
            await gw.hangup(new_call_id())
        with pytest.raises(CallNotFound):
            await gw.spy(target_extension="1001", supervisor_extension="1002", mode=SpyMode.LISTEN)
        ringing = await place(gw, "10000003", ring_timeout_s=30)
        await log.wait_type(CallRinging, ringing)
        with pytest.raises(CallNotFound):
            await gw.connect_agent(ringing, "1001")  # not answered yet
        with pytest.raises(Invalid):
            await gw.originate(OriginateRequest(call_id=ringing, number="10000002"))  # id in use
        await gw.hangup(ringing)
        await log.ended(ringing)


# --- nothing unvalidated reaches the wire --------------------------------------------------------

MARKER = "PWNED"
HOSTILE = [
    f"1001\n\napi {MARKER}",
    f"1001\r\nbgapi {MARKER}",
    f"1001 &{MARKER}",
    f"1001,{MARKER}=1",
    f"1001}}{MARKER}",
    f"1001{{{MARKER}}}",
    f"1001'{MARKER}",
    "",
]


@pytest.fixture
async def answered_call() -> AsyncIterator[tuple[EslPeer, FreeswitchGateway, EventLog, str]]:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        call_id = await place(gw, "10000006")
        await log.wait_type(CallAnswered, call_id)
        yield peer, gw, log, call_id


@pytest.mark.parametrize("value", HOSTILE)
async def test_hostile_extension_is_refused_before_any_byte_is_sent(
    answered_call: tuple[EslPeer, FreeswitchGateway, EventLog, str], value: str
) -> None:
    peer, gw, _, call_id = answered_call
    with pytest.raises(Invalid):
        await gw.connect_agent(call_id, value)
    with pytest.raises(Invalid):
        await gw.spy(target_extension=value, supervisor_extension="1002", mode=SpyMode.LISTEN)
    with pytest.raises(Invalid):
        await gw.spy(target_extension="1001", supervisor_extension=value, mode=SpyMode.LISTEN)
    with pytest.raises(Invalid):
        await gw.play_and_hangup(call_id, value)
    with pytest.raises(Invalid):
        await gw.hangup(value)
    assert MARKER.encode() not in peer.received


@pytest.mark.parametrize(
    "caller_name",
    [
        f"ACME,{MARKER}=1",
        f"ACME}}{MARKER}",
        f"ACME'{MARKER}",
        f"ACME{{{MARKER}}}",
        f"x${{{MARKER}}}",
        f"a\\{MARKER}",
    ],
)
async def test_hostile_caller_name_is_refused_before_any_byte_is_sent(caller_name: str) -> None:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        request = OriginateRequest(call_id=new_call_id(), number="10000002", caller_name=caller_name)
        with pytest.raises(Invalid):
            await gw.originate(request)
        assert MARKER.encode() not in peer.received
        assert peer.originates == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("number", f"123\r\nbgapi {MARKER}"),
        ("number", f"{{{MARKER}=1}}123"),
        ("number", f"123,{MARKER}"),
        ("number", f"123'{MARKER}"),
        ("caller_id", f"4000\n{MARKER}"),
        ("call_id", f"x\n\napi {MARKER}"),
        ("call_id", f"x,{MARKER}=1"),
        ("variables", {"cc_task": f"a,{MARKER}=1"}),
        ("variables", {"cc_task": f"a}}{MARKER}"}),
        ("variables", {"cc_task": f"a'{MARKER}"}),
        ("variables", {"cc_task": f"a\r\n{MARKER}"}),
        ("variables", {f"x\n{MARKER}": "1"}),
        ("variables", {"execute_on_answer": MARKER}),
        ("variables", {"api_hangup_hook": MARKER}),
        ("variables", {"origination_uuid": MARKER}),
        ("ring_timeout_s", float("nan")),
    ],
)
async def test_request_tampered_after_validation_is_refused_at_the_wire(field: str, value: Any) -> None:
    """OriginateRequest validates on construction; a request changed afterwards (or built by other
    means) is checked again by the driver, and nothing of it is sent."""
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        request = OriginateRequest(call_id=new_call_id(), number="10000002", caller_id="4000")
        object.__setattr__(request, field, value)
        with pytest.raises(Invalid):
            await gw.originate(request)
        assert MARKER.encode() not in peer.received
        assert peer.originates == 0


async def test_call_id_longer_than_a_freeswitch_uuid_is_refused() -> None:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        with pytest.raises(Invalid, match="36"):
            await gw.originate(OriginateRequest(call_id="c" * 37, number="10000002"))
        assert peer.originates == 0
        call_id = "c" * 36
        await gw.originate(OriginateRequest(call_id=call_id, number="10000002"))
        ended = await log.ended(call_id)
    assert ended.result == EndResult.BUSY


async def test_reserved_variables_cannot_be_set_by_a_request() -> None:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        for name in ("execute_on_answer", "api_on_answer", "cc_call_id", "origination_caller_id_name"):
            with pytest.raises(Invalid):
                await gw.originate(
                    OriginateRequest(call_id=new_call_id(), number="10000002", variables={name: "x"})
                )
        call_id = await place(gw, "10000002", variables={"cc_task": "42", "cc_lead": "lead-7"})
        await log.ended(call_id)
        sent = next(c for c in peer.commands if "originate" in c)
    assert ",cc_task=42,cc_lead=lead-7}" in sent


async def test_caller_name_with_spaces_is_quoted() -> None:
    log = EventLog()
    async with EslPeer() as peer, driver(peer, log) as gw:
        call_id = await place(gw, "10000002", caller_name="ACME Support 呼叫中心")
        await log.ended(call_id)
        sent = next(c for c in peer.commands if "originate" in c)
    assert "origination_caller_id_name='ACME Support 呼叫中心'," in sent


def test_the_wire_encoder_refuses_line_breaks_anywhere() -> None:
    for line, headers in (
        ("api status\nexit", None),
        ("api status\r", None),
        ("bgapi originate x", {"Job-UUID": "a\nb"}),
        ("bgapi originate x", {"Job\nUUID": "a"}),
    ):
        with pytest.raises(Invalid):
            encode_command(line, headers)
    assert encode_command("bgapi status", {"Job-UUID": "j"}) == b"bgapi status\nJob-UUID: j\n\n"


def test_settings_are_not_trusted_either() -> None:
    with pytest.raises(Invalid):
        FreeswitchGateway(host="h", password="p", dial_template="sofia/gateway/x/{number} &park")
    with pytest.raises(Invalid):
        FreeswitchGateway(host="h", password="p", agent_template="user/{extension},loopback/1")


# --- the mapping as a table ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cause", "answered", "cancelled", "result", "code"),
    [
        ("NORMAL_CLEARING", True, False, EndResult.ANSWERED, 16),
        ("NORMAL_CLEARING", True, True, EndResult.ANSWERED, 16),  # hung up by us after answer
        ("USER_BUSY", False, False, EndResult.BUSY, 17),
        ("NO_ANSWER", False, False, EndResult.NO_ANSWER, 19),
        ("NO_USER_RESPONSE", False, False, EndResult.NO_ANSWER, 18),
        ("NORMAL_CLEARING", False, True, EndResult.CANCELLED, 16),
        ("NO_ANSWER", False, True, EndResult.NO_ANSWER, 19),  # rang out before our kill landed
        ("NORMAL_CLEARING", False, False, EndResult.FAILED, 16),
        ("NORMAL_TEMPORARY_FAILURE", False, False, EndResult.FAILED, 41),
        ("NORMAL_CIRCUIT_CONGESTION", False, False, EndResult.CONGESTION, 34),
        ("SWITCH_CONGESTION", False, False, EndResult.CONGESTION, 42),
        ("NORMAL_CIRCUIT_CONGESTION", True, False, EndResult.ANSWERED, 34),
        ("RECOVERY_ON_TIMER_EXPIRE", False, False, EndResult.FAILED, 102),
        ("NO_ROUTE_DESTINATION", False, False, EndResult.FAILED, 3),
        ("UNALLOCATED_NUMBER", False, False, EndResult.FAILED, 1),
        ("ORIGINATOR_CANCEL", False, False, EndResult.CANCELLED, 16),
        ("GATEWAY_DOWN", False, False, EndResult.FAILED, 16),
        ("SOMETHING_NEW", False, False, EndResult.FAILED, 0),
    ],
)
def test_hangup_cause_maps_like_the_asterisk_driver(
    cause: str, answered: bool, cancelled: bool, result: EndResult, code: int
) -> None:
    assert classify_end(cause, answered=answered, cancelled=cancelled) is result
    assert q850_of(cause) == code


def test_tampered_request_dataclass_replace_revalidates() -> None:
    request = OriginateRequest(call_id=new_call_id(), number="10000002")
    with pytest.raises(Invalid):
        dataclasses.replace(request, number="1\n2")
