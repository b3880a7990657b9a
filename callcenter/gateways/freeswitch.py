"""FreeSWITCH driver of the gateway contract, over the event socket (ESL).

A thin translator (see `callcenter.gateways.base` for the rules it follows): commands go out as
`bgapi originate` / `api uuid_*` lines built only from validated values, and a handful of ESL events
come back as domain events. The wire (framing, parsing, the authenticated connection) lives in
`esl_wire.py`; the call table and the mapping of ESL events to domain events in `esl_calls.py`; this
module owns the commands and the link: ids, keepalive, reconnect with capped exponential backoff, and
the resync after a reconnect. What each command lands on in the shipped dialplan: freeswitch/README.md.

Decisions (docs/decisions/): 0003 our own asyncio ESL client, not greenswitch; 0004 agents connected
by `uuid_transfer` into the dialplan, not `uuid_bridge`; 0006 few events, dropped before parsing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from callcenter.engine.commands import OriginateRequest
from callcenter.engine.events import (
    ActiveCall,
    EventSink,
    GatewayDraining,
    GatewayEvent,
    GatewayLink,
    SpyMode,
)
from callcenter.errors import Invalid
from callcenter.gateways.base import (
    CallNotFound,
    CommandTimeout,
    GatewayError,
    GatewayUnavailable,
    check_spy_request,
    render_template,
)
from callcenter.gateways.esl_calls import (
    AGENT_FAILED_SUBCLASS,
    ANSWERED_SUBCLASS,
    EVENTS,
    MANUAL_SUBCLASS,
    Call,
    CallTracker,
    Spy,
)
from callcenter.gateways.esl_wire import (
    EslClosed,
    EslError,
    EslEvent,
    EslProtocol,
    EslReply,
    open_connection,
)
from callcenter.validation import (
    validate_call_id,
    validate_extension,
    validate_number,
    validate_sound,
    validate_variables,
)

log = logging.getLogger(__name__)

# The dialplan names the shipped configuration defines (freeswitch/templates/dialplan/callcenter.xml.j2).
DEFAULT_CONTEXT = "campaign-answered"
DEFAULT_WAIT_EXTENSION = "wait"
DEFAULT_AMD_EXTENSION = "wait_amd"
DEFAULT_AGENT_PREFIX = "agent_"
DEFAULT_ABANDON_PREFIX = "abandon_"
SUBSCRIBE_COMMAND = "event plain " + " ".join(
    (*EVENTS, "CUSTOM", ANSWERED_SUBCLASS, MANUAL_SUBCLASS, AGENT_FAILED_SUBCLASS)
)
KEEPALIVE_COMMAND = "api status"
# `api status` says "... is ready" normally and "... is not ready" once FreeSWITCH shuts down
# (freeswitch-faults/graceful-shutdown-idle-keepalive.jsonl): the keepalive notices a shutdown too.
_NOT_READY = re.compile(r"\bis not ready\b")
UUID_MAX_LEN = 36  # SWITCH_UUID_FORMATTED_LENGTH

# Inside `{name=value,...}` of an originate: these end the value, the list or the command, or expand.
_ORIGINATE_META = re.compile(r"[{}\[\],'\"^|;=$\\\x00-\x1f\x7f]")
# Variables FreeSWITCH runs as commands or that we set ourselves: never from a request.
_RESERVED_VARIABLE = re.compile(
    r"(?i)^(origination_|cc_call_id$|cc_leg$|cc_agent$|ignore_early_media$|originate_timeout$"
    r"|api_|execute_|exec_|bridge_pre_execute|(transfer|park)_after_bridge$|.*_hook$)"
)
_NO_SUCH_CHANNEL = re.compile(r"(?i)no such channel|invalid uuid|not found")
_ANSWERED_CALLSTATES = frozenset({"ACTIVE", "HELD"})


def originate_timeout_for(ring_timeout_s: float) -> int:
    """FreeSWITCH ends ringing when whole epoch seconds elapsed >= originate_timeout, i.e. up to a
    second early (5.9 s for 6 in the traces): ask for one more second than the ring time needed."""
    return math.ceil(ring_timeout_s) + 1


def check_originate_value(value: str, *, field: str) -> str:
    """A value placed inside `{...}` of an originate; refused if it could change the command."""
    if not isinstance(value, str) or _ORIGINATE_META.search(value):
        raise Invalid(
            f"{field} must not contain control characters or any of {{ }} [ ] , ' \" ^ | ; = $ \\",
            field=field,
        )
    return value


def _quoted(value: str) -> str:
    # FreeSWITCH splits originate arguments on spaces; a value with spaces goes in single quotes (a
    # quote inside is refused by check_originate_value, so the quoting cannot be broken out of).
    return f"'{value}'" if " " in value else value


class FreeswitchGateway:
    """A `Gateway` driving FreeSWITCH over ESL; see the module docstring."""

    kind = "freeswitch"

    def __init__(
        self,
        *,
        host: str,
        port: int = 8021,
        password: str,
        dial_template: str = "sofia/gateway/trunk/{number}",
        agent_template: str = "user/{extension}",
        clock: Callable[[], float] = time.time,
        timeout_s: float = 5.0,
        keepalive_s: float = 10.0,
        context: str = DEFAULT_CONTEXT,
        wait_extension: str = DEFAULT_WAIT_EXTENSION,
        amd_extension: str = DEFAULT_AMD_EXTENSION,
        agent_prefix: str = DEFAULT_AGENT_PREFIX,
        abandon_prefix: str = DEFAULT_ABANDON_PREFIX,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        spy_ring_timeout_s: float = 30.0,
        prefilter: bool = True,
        end_grace_s: float = 0.5,
    ) -> None:
        if timeout_s <= 0 or keepalive_s <= 0 or backoff_initial_s <= 0 or backoff_max_s < backoff_initial_s:
            raise ValueError("timeouts and backoff must be positive, backoff_max_s >= backoff_initial_s")
        for name, value in (("context", context), ("wait_extension", wait_extension)):
            validate_extension(value.replace("-", "_"), field=name)
        for name, value in (("amd_extension", amd_extension), ("agent_prefix", agent_prefix)):
            validate_extension(value, field=name)
        validate_extension(abandon_prefix, field="abandon_prefix")
        # Templates are ours (settings), but they end up on the wire too.
        render_template(dial_template, number="0")
        render_template(agent_template, extension="0")
        for name, value in (("dial_template", dial_template), ("agent_template", agent_template)):
            if re.search(r"[\s{}\[\],'\"]", value.replace("{number}", "").replace("{extension}", "")):
                raise Invalid(f"{name} must be a plain dial string", field=name)
        self.host = host
        self.port = port
        self._password = password
        self.dial_template = dial_template
        self.agent_template = agent_template
        self._clock = clock
        self.timeout_s = timeout_s
        self.keepalive_s = keepalive_s
        self.context = context
        self.wait_extension = wait_extension
        self.amd_extension = amd_extension
        self.agent_prefix = agent_prefix
        self.abandon_prefix = abandon_prefix
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.spy_ring_timeout_s = spy_ring_timeout_s
        self.prefilter = prefilter

        self._sink: EventSink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: EslProtocol | None = None
        self._up = False
        self._draining = False  # GatewayDraining sent on this link
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._tracker = CallTracker(
            emit=self._emit, clock=clock, end_grace_s=end_grace_s, draining=self._drain
        )
        self._calls = self._tracker.calls
        self._spies = self._tracker.spies
        self._jobs = self._tracker.jobs
        self.reconnects = 0

    @classmethod
    def from_settings(cls, settings: Any, *, clock: Callable[[], float] = time.time) -> FreeswitchGateway:
        """Build the driver from `callcenter.config.Settings` (esl_* and gateway_* fields)."""
        return cls(
            host=settings.esl_host,
            port=settings.esl_port,
            password=settings.esl_password.get_secret_value(),
            dial_template=settings.esl_dial_template,
            agent_template=settings.esl_agent_template,
            clock=clock,
            timeout_s=settings.gateway_timeout_s,
            keepalive_s=settings.gateway_keepalive_s,
        )

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, emit: EventSink) -> None:
        self._sink = emit
        self._loop = asyncio.get_running_loop()
        self._closing = False
        try:
            await self._connect(first=True)
        except (OSError, TimeoutError, EslError, GatewayError) as exc:
            await self._drop_connection()
            raise GatewayUnavailable(f"FreeSWITCH {self.host}:{self.port}: {_describe(exc)}") from None
        self._supervisor = asyncio.create_task(self._supervise(), name="freeswitch-supervisor")
        self._supervisor.add_done_callback(_log_task_failure)

    async def close(self) -> None:
        self._closing = True
        self._up = False
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        conn = self._conn
        if conn is not None and conn.is_open:
            with contextlib.suppress(EslError, GatewayError, TimeoutError, Invalid):
                await asyncio.wait_for(conn.send("exit"), min(self.timeout_s, 1.0))
        await self._drop_connection()
        self._tracker.stop_timers()

    # --- commands ----------------------------------------------------------------------------

    def originate_command(self, request: OriginateRequest) -> str:
        """The `originate` line for a request (sent as `bgapi`); every value checked again here."""
        validate_call_id(request.call_id)
        if len(request.call_id) > UUID_MAX_LEN:
            # switch_core_session_request_uuid copies origination_uuid into a 37-byte buffer: a
            # longer id would be cut, and no event would ever carry our call id.
            raise Invalid(f"FreeSWITCH keeps {UUID_MAX_LEN} characters of a channel id", field="call_id")
        validate_number(request.number)
        ring = request.ring_timeout_s
        if not isinstance(ring, int | float) or not 1 <= ring <= 300:
            raise Invalid("ring timeout must be 1-300 seconds", field="ring_timeout_s")
        variables: list[tuple[str, str]] = [
            ("origination_uuid", request.call_id),
            ("cc_call_id", request.call_id),
        ]
        if request.caller_id:
            variables.append(("origination_caller_id_number", validate_number(request.caller_id)))
        if request.caller_name:
            name = check_originate_value(request.caller_name, field="caller_name")
            variables.append(("origination_caller_id_name", _quoted(name)))
        variables.append(("ignore_early_media", "true"))
        variables.append(("originate_timeout", str(originate_timeout_for(request.ring_timeout_s))))
        extra = validate_variables(dict(request.variables))
        for name, value in extra.items():
            if _RESERVED_VARIABLE.match(name):
                raise Invalid(f"variables: {name} is set by the driver or runs commands", field="variables")
            variables.append((name, check_originate_value(value, field="variables")))
        dial = render_template(self.dial_template, number=request.digits)
        target = self.amd_extension if request.amd else self.wait_extension
        vars_text = ",".join(f"{k}={v}" for k, v in variables)
        return f"originate {{{vars_text}}}{dial} {target} XML {self.context}"

    def transfer_command(self, call_id: str, *, agent: str | None = None, sound: str | None = None) -> str:
        """The `uuid_transfer` that connects an agent (`agent_<ext>`) or plays the abandon message
        (`abandon_<sound>`); both extensions live in the answered-calls context."""
        validate_call_id(call_id)
        if agent is not None:
            target = self.agent_prefix + validate_extension(agent)
        elif sound is not None:
            target = self.abandon_prefix + validate_sound(sound)
        else:
            raise ValueError("transfer_command needs agent or sound")
        return f"uuid_transfer {call_id} {target} XML {self.context}"

    async def originate(self, request: OriginateRequest) -> None:
        if not isinstance(request, OriginateRequest):
            raise Invalid("originate takes an OriginateRequest", field="request")
        line = self.originate_command(request)
        self._require_up()
        if request.call_id in self._calls:
            raise Invalid(f"call id {request.call_id} is already in use", field="call_id")
        job = str(uuid.uuid4())
        call = Call(request.call_id, amd=request.amd, job_uuid=job)
        fut = self._send("bgapi " + line, {"Job-UUID": job})
        self._calls[call.call_id] = call
        self._jobs[job] = ("call", call.call_id)
        fut.add_done_callback(lambda f: self._on_originate_reply(call.call_id, f))

    async def hangup(self, call_id: str) -> None:
        call = self._call(call_id)
        self._require_up()
        if not call.answered:
            call.cancelled = True  # uuid_kill reports NORMAL_CLEARING: remember that it was us
        reply = await self._command(f"api uuid_kill {call.call_id}")
        if not reply.ok:
            call.cancelled = False
            self._raise_for(reply, call_id)

    async def connect_agent(self, call_id: str, extension: str) -> None:
        validate_extension(extension)
        call = self._call(call_id)
        if call.manual or not call.answered or call.connected:
            raise CallNotFound(f"call {call_id} is not an answered call waiting for an agent")
        self._require_up()
        call.extension = extension
        reply = await self._command("api " + self.transfer_command(call.call_id, agent=extension))
        if not reply.ok:
            self._raise_for(reply, call_id)

    async def play_and_hangup(self, call_id: str, sound: str) -> None:
        validate_sound(sound)
        call = self._call(call_id)
        if call.manual or not call.answered:
            raise CallNotFound(f"call {call_id} has not been answered")
        self._require_up()
        reply = await self._command("api " + self.transfer_command(call.call_id, sound=sound))
        if not reply.ok:
            self._raise_for(reply, call_id)

    async def spy(self, *, target_extension: str, supervisor_extension: str, mode: SpyMode) -> str:
        mode = check_spy_request(target_extension, supervisor_extension, mode)
        target = self._agent_leg(target_extension)
        self._require_up()
        spy_id = str(uuid.uuid4())
        job = str(uuid.uuid4())
        variables = [
            f"origination_uuid={spy_id}",
            "cc_leg=supervisor",
            f"cc_spy_target={target_extension}",
            f"origination_caller_id_number={target_extension}",
            f"originate_timeout={originate_timeout_for(self.spy_ring_timeout_s)}",
            # No DTMF: a listener must not be able to start whispering or barging by pressing a key.
            "eavesdrop_enable_dtmf=false",
        ]
        # We eavesdrop on the agent's leg. `whisper_bleg` mixes the supervisor into what that leg sends to
        # the agent's phone (ED_MUX_WRITE); `whisper_aleg` into what it passes on to the bridged party, the
        # customer (ED_MUX_READ): mod_dptools.c:931-942, switch_ivr_async.c:2076-2121, and the bed's RTP
        # (tests/fixtures/freeswitch-faults/README.md, eavesdrop-whisper-variants.jsonl).
        if mode is SpyMode.BARGE:
            variables.append("eavesdrop_whisper_aleg=true")  # the customer hears the supervisor ...
        if mode in (SpyMode.WHISPER, SpyMode.BARGE):
            variables.append("eavesdrop_whisper_bleg=true")  # ... the agent hears the supervisor
        dial = render_template(self.agent_template, extension=supervisor_extension)
        line = f"bgapi originate {{{','.join(variables)}}}{dial} &eavesdrop({target})"
        fut = self._send(line, {"Job-UUID": job})
        self._spies[spy_id] = Spy(spy_id, job, target_extension, mode)
        self._jobs[job] = ("spy", spy_id)
        try:
            reply = await self._await_reply(fut, "bgapi originate (spy)")
            if not reply.ok:
                raise GatewayError(f"FreeSWITCH refused the spy call: {reply.text}")
        except GatewayError:
            # The caller never learns this id; a supervisor leg that rings anyway is reported by the
            # next resync as an unknown channel.
            self._spies.pop(spy_id, None)
            self._jobs.pop(job, None)
            raise
        return spy_id

    async def active_calls(self) -> list[ActiveCall]:
        self._require_up()
        rows = await self._show_channels()
        calls = []
        for row in rows:
            uid = row.get("uuid", "")
            if not uid or (row.get("call_uuid") or uid) != uid:
                continue  # a leg of another call (agent or customer b-leg)
            tracked = self._calls.get(uid)
            callstate = (row.get("callstate") or "").upper()
            calls.append(
                ActiveCall(
                    channel=row.get("name", uid),
                    call_id=uid,
                    state=(row.get("callstate") or row.get("state") or "").lower(),
                    extension=tracked.extension if tracked else None,
                    # callstate ACTIVE (or HELD): answered; a new connection sees nothing else of it
                    # (reconnect-show-channels-answered.jsonl: no event is replayed).
                    answered=callstate in _ANSWERED_CALLSTATES or bool(tracked and tracked.answered),
                )
            )
        return calls

    async def adopt(self, call_id: str) -> bool:
        validate_call_id(call_id)
        if call_id in self._calls:
            return True
        self._require_up()
        rows = await self._show_channels()
        row = next((r for r in rows if r.get("uuid") == call_id), None)
        if row is None:
            return False
        call = Call(call_id)
        state = (row.get("callstate") or "").upper()
        # The caller of adopt knows the past: only what happens from now on is reported. An answered
        # call is ready for connect_agent (`uuid_transfer` works on a parked channel) and ends
        # `answered` at its CHANNEL_HANGUP_COMPLETE.
        call.ringing = True
        call.channel_seen = True
        call.answered = call.answer_reported = state in _ANSWERED_CALLSTATES
        for other in rows:
            if other.get("call_uuid") == call_id and other.get("uuid") != call_id:
                call.agent_uuid = other.get("uuid")
                call.connected = True
        self._calls[call_id] = call
        return True

    # --- link --------------------------------------------------------------------------------

    async def _connect(self, *, first: bool = False) -> None:
        conn = await open_connection(
            self.host,
            self.port,
            self._password,
            timeout=self.timeout_s,
            on_event=self._on_event,
            want=self._tracker.wanted if self.prefilter else None,
        )
        self._conn = conn
        reply = await self._command(SUBSCRIBE_COMMAND)
        if not reply.ok:
            raise GatewayError(f"event subscription refused: {reply.text}")
        # On the first connection nothing is tracked yet: the engine lists the PBX's calls and adopts its
        # own (active_calls, adopt), so they are not reported as unknown channels here.
        await self._resync(report_unknown=not first)
        self._watchdog = asyncio.create_task(self._keepalive(conn), name="freeswitch-keepalive")
        self._watchdog.add_done_callback(_log_task_failure)
        self._up = True
        self._draining = False
        self._emit(GatewayLink(True, self._clock(), f"FreeSWITCH {self.host}:{self.port}"))

    async def _drop_connection(self) -> None:
        self._up = False
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(conn.closed), 1.0)

    async def _supervise(self) -> None:
        """Wait for the link to die, report it, reconnect with capped exponential backoff."""
        while not self._closing:
            conn = self._conn
            if conn is not None:
                # Bounded by the keepalive watchdog: a dead or silent link is aborted within keepalive_s.
                await asyncio.shield(conn.closed)
                reason = conn.disconnect_notice or "connection lost"
                await self._drop_connection()
                self._emit(GatewayLink(False, self._clock(), reason))
            attempt = 0
            while not self._closing:
                delay = min(self.backoff_max_s, self.backoff_initial_s * 2**attempt)
                await asyncio.sleep(delay * random.uniform(0.8, 1.0))
                try:
                    await self._connect()
                    self.reconnects += 1
                    log.info(
                        "FreeSWITCH link to %s:%s up again after %d attempt(s), resynced",
                        self.host,
                        self.port,
                        attempt + 1,
                    )
                    break
                except (OSError, TimeoutError, EslError, GatewayError) as exc:
                    log.warning("FreeSWITCH reconnect attempt %d failed: %s", attempt + 1, _describe(exc))
                    await self._drop_connection()
                    attempt += 1

    async def _keepalive(self, conn: EslProtocol) -> None:
        """Probe an idle link after keepalive_s / 2; abort it when nothing at all arrived for
        keepalive_s (a peer that stopped answering, or a half-open TCP connection)."""
        half = self.keepalive_s / 2
        probe: asyncio.Future[EslReply] | None = None
        while conn.is_open:
            idle = time.monotonic() - conn.last_rx
            if idle >= self.keepalive_s:
                log.warning("FreeSWITCH link silent for %.1f s: dropping it", idle)
                conn.abort(EslClosed(f"silent for {idle:.1f} s"))
                return
            if idle >= half and (probe is None or probe.done()):
                try:
                    probe = conn.send(KEEPALIVE_COMMAND)
                    probe.add_done_callback(self._on_status)
                except EslError:
                    return
            wake = conn.last_rx + (self.keepalive_s if idle >= half else half)
            await asyncio.sleep(max(0.01, wake - time.monotonic()))

    def _on_status(self, fut: asyncio.Future[EslReply]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        if _NOT_READY.search(fut.result().body):
            self._drain("api status: FreeSWITCH is not ready (shutting down)")

    def _drain(self, detail: str) -> None:
        """FreeSWITCH announced its shutdown (SHUTDOWN, or `api status` says not ready): the socket stays
        open about 31 s, every originate failing at once, then closes with a disconnect notice."""
        if self._draining or not self._up:
            return
        self._draining = True
        log.warning("FreeSWITCH %s:%s draining: %s", self.host, self.port, detail)
        self._emit(GatewayDraining(self._clock(), detail))

    def _require_up(self) -> None:
        if not self._up or self._conn is None or not self._conn.is_open:
            raise GatewayUnavailable("the FreeSWITCH link is down")

    def _send(self, line: str, headers: Mapping[str, str] | None = None) -> asyncio.Future[EslReply]:
        """Write one command; its reply must come within timeout_s (else the future fails with
        CommandTimeout). Raises Invalid (nothing written) or GatewayUnavailable."""
        conn = self._conn
        if conn is None or not conn.is_open:
            raise GatewayUnavailable("the FreeSWITCH link is down")
        try:
            fut = conn.send(line, headers)
        except EslClosed as exc:
            raise GatewayUnavailable(f"the FreeSWITCH link is down: {exc}") from None
        what = line.split(" ", 2)[:2]
        assert self._loop is not None
        timer = self._loop.call_later(self.timeout_s, _overdue, fut, " ".join(what), self.timeout_s)

        def settled(f: asyncio.Future[EslReply]) -> None:
            timer.cancel()
            _consume(f)

        fut.add_done_callback(settled)
        return fut

    async def _await_reply(self, fut: asyncio.Future[EslReply], what: str) -> EslReply:
        try:
            # The timer armed by _send fails the future first; this bound is only a second fence.
            return await asyncio.wait_for(asyncio.shield(fut), self.timeout_s + 1.0)
        except CommandTimeout:
            raise
        except TimeoutError:
            raise CommandTimeout(f"FreeSWITCH did not answer {what} in {self.timeout_s} s") from None
        except EslClosed as exc:
            raise GatewayUnavailable(f"the FreeSWITCH link dropped during {what}: {exc}") from None

    async def _command(self, line: str) -> EslReply:
        return await self._await_reply(self._send(line), " ".join(line.split(" ", 2)[:2]))

    async def _show_channels(self) -> list[dict[str, str]]:
        reply = await self._command("api show channels as json")
        try:
            data = json.loads(reply.body or "{}")
        except ValueError:
            raise GatewayError(f"unreadable channel list: {reply.body[:80]!r}") from None
        rows = data.get("rows") if isinstance(data, dict) else None
        return [r for r in rows or [] if isinstance(r, dict)]

    async def _resync(self, *, report_unknown: bool = True) -> None:
        """After (re)connect: hand FreeSWITCH's channel list to the tracker (see `CallTracker.resync`)."""
        self._tracker.resync(await self._show_channels(), report_unknown=report_unknown)

    # --- events ------------------------------------------------------------------------------

    def _on_event(self, event: EslEvent) -> None:
        try:
            self._tracker.on_event(event)
        except Exception:  # one bad event must not take the link down
            log.exception("FreeSWITCH event %s could not be handled", event.name)

    def _on_originate_reply(self, call_id: str, fut: asyncio.Future[EslReply]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            # No reply (link dropped or timed out): the call is followed again by the resync.
            return
        reply = fut.result()
        if not reply.ok:
            self._tracker.refused(call_id, reply.text)

    # --- helpers -----------------------------------------------------------------------------

    def _call(self, call_id: str) -> Call:
        validate_call_id(call_id)
        call = self._calls.get(call_id)
        if call is None:
            raise CallNotFound(f"no call {call_id}")
        return call

    def _agent_leg(self, extension: str) -> str:
        for call in self._calls.values():
            if call.extension == extension and call.connected:
                leg = call.call_id if call.manual else call.agent_uuid
                if leg:
                    return validate_call_id(leg)
        raise CallNotFound(f"agent {extension} has no connected call to listen to")

    def _raise_for(self, reply: EslReply, call_id: str) -> None:
        if _NO_SUCH_CHANNEL.search(reply.text):
            raise CallNotFound(f"FreeSWITCH has no channel {call_id}: {reply.text}")
        raise GatewayError(f"FreeSWITCH refused the command for {call_id}: {reply.text}")

    def _emit(self, event: GatewayEvent) -> None:
        if self._sink is None:
            return
        try:
            self._sink(event)
        except Exception:  # the consumer's bug must not break the link
            log.exception("gateway event consumer failed on %s", type(event).__name__)

    # --- introspection (tests, monitoring) ---------------------------------------------------

    @property
    def link_up(self) -> bool:
        return self._up

    @property
    def tracked_calls(self) -> list[str]:
        return list(self._calls)


def _overdue(fut: asyncio.Future[EslReply], what: str, timeout: float) -> None:
    if not fut.done():
        fut.set_exception(CommandTimeout(f"FreeSWITCH did not answer {what} in {timeout} s"))


def _consume(fut: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (failures are handled where they matter)."""
    if not fut.cancelled():
        fut.exception()


def _log_task_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("FreeSWITCH driver task %s failed", task.get_name(), exc_info=task.exception())


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
