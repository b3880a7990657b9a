"""FreeSWITCH driver of the gateway contract, over the event socket (ESL).

A thin translator (see `callcenter.gateways.base` for the rules it follows): commands go out as
`bgapi originate` / `api uuid_*` lines built only from validated values, and a handful of ESL events
come back as domain events. The wire (framing, parsing, the authenticated connection) lives in
`esl_wire.py`; this module owns the policy: ids, the call table, the cause mapping, keepalive,
reconnect with capped exponential backoff, and the resync after a reconnect.

Why our own asyncio ESL client and not greenswitch 0.0.19
--------------------------------------------------------
The issue asked for greenswitch (gevent) in a thread of its own. Its source (esl.py, 640 lines) and
small experiments against a loopback server showed faults that no wrapper around it can contain:
- `ESLProtocol._read_socket` loops on `sock.read()` until it has Content-Length bytes; after EOF in
  the middle of a body `read()` returns b'' forever, so the receive greenlet spins at 100 % CPU and
  never yields. Every greenlet of that hub stops, `gevent.Timeout` can no longer fire, and a Python
  thread cannot be killed: measured 2.99 CPU-seconds in 3 s of wall time, then a heap-corruption abort
  at interpreter exit. Only replacing `_read_socket` / `receive_events` (forking the library) helps.
- `send()` waits on an `AsyncResult` with no timeout. For inbound connections nothing ever fails the
  pending results when the socket drops (`on_disconnect` exists only in `OutboundSession`), so a
  command in flight during a TCP drop blocks forever (confirmed: still blocked after 5 s), and there is
  no reconnect or keepalive at all.
- `ESLEvent.parse_data` URL-decodes the whole event before splitting it into lines, so the
  BACKGROUND_JOB result is glued onto the inner `Content-Length` value (`'15\\n\\n-ERR USER_BUSY'`, the
  result never reaches `.data`), and any decoded `%0A` in a value becomes a fake header line.
- An exception in `handle_event` (an unsolicited reply pops an empty list; a message without
  Content-Type raises KeyError) kills the receive greenlet while `connected` stays True.
- The thread hop costs: every event crosses gevent -> queue -> `call_soon_threadsafe` with the GIL
  shared between two busy threads, before the asyncio side even looks at it.
The replacement is ~300 lines of asyncio with byte-counted framing, one FIFO of reply futures failed on
disconnect, a timeout on every command and a keepalive watchdog; it runs on the caller's loop, so
`emit` is called on that loop with no hop, and it lets the driver look at each raw event's name and
Unique-ID before paying for the parse. Evidence and numbers: freeswitch/README.md.

Connecting a customer to an agent: `uuid_transfer`, not `uuid_bridge`
--------------------------------------------------------------------
`connect_agent` sends `api uuid_transfer <call> agent_<ext> XML campaign-answered`; the shipped dialplan
bridges the agent (`hangup_after_bridge`, ring timeout, back to `park` if the agent leg fails). With
`uuid_bridge` the controller would originate the agent leg itself, wait for its answer and then bridge:
two round trips, and between them FreeSWITCH knows nothing of the pairing, so a customer who hangs up
while the agent rings, or a link drop at that moment, leaves an orphaned agent leg that the controller
must clean up. With the transfer FreeSWITCH owns both legs from the start: the agent leg is cancelled
when the customer leaves, and a lost link changes nothing for the call. The customer keeps its
Unique-ID (our call id), CHANNEL_BRIDGE on it names the agent leg, which is what eavesdrop needs.

Mapping (the same situations as the Asterisk driver reports, see base.py rule 3)
-----------------------------------------------------------------------------
`BACKGROUND_JOB` `+OK <uuid>` means answered; `-ERR <CAUSE>` and `CHANNEL_HANGUP_COMPLETE` end the
call, whichever comes first (the traces show both orders). Once answered, the end is `answered`.
Before answer: USER_BUSY (17) -> busy; NO_ANSWER (19), NO_USER_RESPONSE (18), ALLOTTED_TIMEOUT,
PROGRESS_TIMEOUT -> no_answer; NORMAL_CLEARING / ORIGINATOR_CANCEL after our `uuid_kill` -> cancelled
(uuid_kill reports NORMAL_CLEARING like a normal end, so the driver keeps its own record); everything
else (41 for a 503 or an unreachable host, 102 for no response, 34, 3, 1, ...) -> failed. The cause
reported is `variable_hangup_cause_q850` when present, else the Q.850 code of the cause name
(FreeSWITCH's own causes above 127 count as 16, as `switch_channel_cause_q850` does).
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
from dataclasses import dataclass
from typing import Any

from callcenter.engine.commands import OriginateRequest
from callcenter.engine.events import (
    ActiveCall,
    AgentLegFailed,
    AnswerKind,
    CallAnswered,
    CallConnected,
    CallEnded,
    CallRinging,
    EndResult,
    EventSink,
    GatewayEvent,
    GatewayLink,
    ManualCallStarted,
    SpyEnded,
    SpyMode,
    SpyStarted,
    UnknownChannel,
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
from callcenter.gateways.esl_wire import (
    EslClosed,
    EslError,
    EslEvent,
    EslProtocol,
    EslReply,
    open_connection,
    peek_header,
)
from callcenter.validation import (
    validate_call_id,
    validate_extension,
    validate_number,
    validate_sound,
    validate_variables,
)

log = logging.getLogger(__name__)

# The dialplan names the shipped configuration defines (freeswitch/templates/dialplan.xml.j2).
DEFAULT_CONTEXT = "campaign-answered"
DEFAULT_WAIT_EXTENSION = "wait"
DEFAULT_AMD_EXTENSION = "wait_amd"
DEFAULT_AGENT_PREFIX = "agent_"
DEFAULT_ABANDON_PREFIX = "abandon_"
ANSWERED_SUBCLASS = "callcenter::answered"  # fired by `wait` / `wait_amd` (header cc_amd with AMD)
MANUAL_SUBCLASS = "callcenter::manual"  # fired by the agents' context (headers cc_agent, cc_number)
# fired by the agent extension when the bridge to the agent failed (headers cc_agent, cc_status)
AGENT_FAILED_SUBCLASS = "callcenter::agent_failed"

# Only what the mapping reads: about a third of `ALL` by volume (see the burst trace's notes).
EVENTS = (
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE",
    "CHANNEL_HANGUP_COMPLETE",
    "BACKGROUND_JOB",
)
SUBSCRIBE_COMMAND = "event plain " + " ".join(
    (*EVENTS, "CUSTOM", ANSWERED_SUBCLASS, MANUAL_SUBCLASS, AGENT_FAILED_SUBCLASS)
)
KEEPALIVE_COMMAND = "api status"
UUID_MAX_LEN = 36  # SWITCH_UUID_FORMATTED_LENGTH

# FreeSWITCH cause names (switch_types.h) -> Q.850 code; names above 127 are FreeSWITCH's own.
HANGUP_CAUSES: dict[str, int] = {
    "UNSPECIFIED": 0,
    "UNALLOCATED_NUMBER": 1,
    "NO_ROUTE_TRANSIT_NET": 2,
    "NO_ROUTE_DESTINATION": 3,
    "CHANNEL_UNACCEPTABLE": 6,
    "CALL_AWARDED_DELIVERED": 7,
    "NORMAL_CLEARING": 16,
    "USER_BUSY": 17,
    "NO_USER_RESPONSE": 18,
    "NO_ANSWER": 19,
    "SUBSCRIBER_ABSENT": 20,
    "CALL_REJECTED": 21,
    "NUMBER_CHANGED": 22,
    "REDIRECTION_TO_NEW_DESTINATION": 23,
    "EXCHANGE_ROUTING_ERROR": 25,
    "DESTINATION_OUT_OF_ORDER": 27,
    "INVALID_NUMBER_FORMAT": 28,
    "FACILITY_REJECTED": 29,
    "RESPONSE_TO_STATUS_ENQUIRY": 30,
    "NORMAL_UNSPECIFIED": 31,
    "NORMAL_CIRCUIT_CONGESTION": 34,
    "NETWORK_OUT_OF_ORDER": 38,
    "NORMAL_TEMPORARY_FAILURE": 41,
    "SWITCH_CONGESTION": 42,
    "ACCESS_INFO_DISCARDED": 43,
    "REQUESTED_CHAN_UNAVAIL": 44,
    "PRE_EMPTED": 45,
    "FACILITY_NOT_SUBSCRIBED": 50,
    "OUTGOING_CALL_BARRED": 52,
    "INCOMING_CALL_BARRED": 54,
    "BEARERCAPABILITY_NOTAUTH": 57,
    "BEARERCAPABILITY_NOTAVAIL": 58,
    "SERVICE_UNAVAILABLE": 63,
    "BEARERCAPABILITY_NOTIMPL": 65,
    "CHAN_NOT_IMPLEMENTED": 66,
    "FACILITY_NOT_IMPLEMENTED": 69,
    "SERVICE_NOT_IMPLEMENTED": 79,
    "INVALID_CALL_REFERENCE": 81,
    "INCOMPATIBLE_DESTINATION": 88,
    "INVALID_MSG_UNSPECIFIED": 95,
    "MANDATORY_IE_MISSING": 96,
    "MESSAGE_TYPE_NONEXIST": 97,
    "WRONG_MESSAGE": 98,
    "IE_NONEXIST": 99,
    "INVALID_IE_CONTENTS": 100,
    "WRONG_CALL_STATE": 101,
    "RECOVERY_ON_TIMER_EXPIRE": 102,
    "MANDATORY_IE_LENGTH_ERROR": 103,
    "PROTOCOL_ERROR": 111,
    "INTERWORKING": 127,
    "SUCCESS": 142,
    "ORIGINATOR_CANCEL": 487,
    "CRASH": 700,
    "SYSTEM_SHUTDOWN": 701,
    "LOSE_RACE": 502,
    "MANAGER_REQUEST": 503,
    "BLIND_TRANSFER": 600,
    "ATTENDED_TRANSFER": 601,
    "ALLOTTED_TIMEOUT": 602,
    "USER_CHALLENGE": 603,
    "MEDIA_TIMEOUT": 604,
    "PICKED_OFF": 605,
    "USER_NOT_REGISTERED": 606,
    "PROGRESS_TIMEOUT": 607,
    "INVALID_GATEWAY": 608,
    "GATEWAY_DOWN": 609,
    "INVALID_URL": 610,
    "INVALID_PROFILE": 611,
    "NO_PICKUP": 612,
    "SRTP_READ_ERROR": 613,
}
_BUSY_CAUSES = frozenset({"USER_BUSY"})
_NO_ANSWER_CAUSES = frozenset({"NO_ANSWER", "NO_USER_RESPONSE", "ALLOTTED_TIMEOUT", "PROGRESS_TIMEOUT"})
_CANCEL_CAUSES = frozenset({"NORMAL_CLEARING", "ORIGINATOR_CANCEL"})
_AMD_VERDICTS = {"HUMAN": AnswerKind.HUMAN, "MACHINE": AnswerKind.MACHINE}

# Inside `{name=value,...}` of an originate: these end the value, the list or the command, or expand.
_ORIGINATE_META = re.compile(r"[{}\[\],'\"^|;=$\\\x00-\x1f\x7f]")
# Variables FreeSWITCH runs as commands or that we set ourselves: never from a request.
_RESERVED_VARIABLE = re.compile(
    r"(?i)^(origination_|cc_call_id$|cc_leg$|cc_agent$|ignore_early_media$|originate_timeout$"
    r"|api_|execute_|exec_|bridge_pre_execute|(transfer|park)_after_bridge$|.*_hook$)"
)
_NO_SUCH_CHANNEL = re.compile(r"(?i)no such channel|invalid uuid|not found")


def q850_of(cause_name: str | None) -> int:
    """Q.850 code of a FreeSWITCH cause name; FreeSWITCH's own causes (> 127) count as 16, unknown 0."""
    code = HANGUP_CAUSES.get((cause_name or "").strip().upper(), 0)
    return 16 if code > 127 else code


def classify_end(cause_name: str | None, *, answered: bool, cancelled: bool) -> EndResult:
    """How a call that ended with `cause_name` counts (base.py rule 3).

    >>> classify_end("USER_BUSY", answered=False, cancelled=False)
    <EndResult.BUSY: 'busy'>
    >>> classify_end("NORMAL_CLEARING", answered=False, cancelled=True)
    <EndResult.CANCELLED: 'cancelled'>
    >>> classify_end("NORMAL_TEMPORARY_FAILURE", answered=False, cancelled=False)
    <EndResult.FAILED: 'failed'>
    """
    if answered:
        return EndResult.ANSWERED
    name = (cause_name or "").strip().upper()
    if name in _BUSY_CAUSES:
        return EndResult.BUSY
    if name in _NO_ANSWER_CAUSES:
        return EndResult.NO_ANSWER
    if name in _CANCEL_CAUSES and cancelled:
        return EndResult.CANCELLED
    if name == "ORIGINATOR_CANCEL":  # the agent gave up a call dialled by hand
        return EndResult.CANCELLED
    return EndResult.FAILED


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


@dataclass(slots=True)
class _Call:
    call_id: str
    amd: bool = False
    manual: bool = False
    job_uuid: str | None = None
    extension: str | None = None  # agent asked for by connect_agent, or the agent who dialled
    agent_uuid: str | None = None  # the agent's leg (what eavesdrop listens to)
    ringing: bool = False
    answered: bool = False
    answer_reported: bool = False
    connected: bool = False
    cancelled: bool = False  # we hung it up before answer


@dataclass(slots=True)
class _Spy:
    spy_id: str
    job_uuid: str
    target_extension: str
    mode: SpyMode
    started: bool = False


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
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._calls: dict[str, _Call] = {}
        self._spies: dict[str, _Spy] = {}
        self._jobs: dict[str, tuple[str, str]] = {}  # Job-UUID -> ("call" | "spy", id)
        self._handlers: dict[str, Callable[[EslEvent], None]] = {
            "CHANNEL_PROGRESS": self._on_progress,
            "CHANNEL_PROGRESS_MEDIA": self._on_progress,
            "CHANNEL_ANSWER": self._on_answer,
            "CHANNEL_BRIDGE": self._on_bridge,
            "CHANNEL_HANGUP_COMPLETE": self._on_hangup_complete,
            "BACKGROUND_JOB": self._on_background_job,
            "CUSTOM": self._on_custom,
        }
        self._handled = frozenset(name.encode() for name in self._handlers)
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
            await self._connect()
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
        call = _Call(request.call_id, amd=request.amd, job_uuid=job)
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
        if mode in (SpyMode.WHISPER, SpyMode.BARGE):
            variables.append("eavesdrop_whisper_aleg=true")  # the agent (the eavesdropped leg) hears
        if mode is SpyMode.BARGE:
            variables.append("eavesdrop_whisper_bleg=true")  # ... and so does the customer
        dial = render_template(self.agent_template, extension=supervisor_extension)
        line = f"bgapi originate {{{','.join(variables)}}}{dial} &eavesdrop({target})"
        fut = self._send(line, {"Job-UUID": job})
        self._spies[spy_id] = _Spy(spy_id, job, target_extension, mode)
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
            calls.append(
                ActiveCall(
                    channel=row.get("name", uid),
                    call_id=uid,
                    state=(row.get("callstate") or row.get("state") or "").lower(),
                    extension=tracked.extension if tracked else None,
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
        call = _Call(call_id)
        state = (row.get("callstate") or "").upper()
        # The caller of adopt knows the past: only what happens from now on is reported.
        call.ringing = True
        call.answered = call.answer_reported = state in ("ACTIVE", "HELD")
        for other in rows:
            if other.get("call_uuid") == call_id and other.get("uuid") != call_id:
                call.agent_uuid = other.get("uuid")
                call.connected = True
        self._calls[call_id] = call
        return True

    # --- link --------------------------------------------------------------------------------

    async def _connect(self) -> None:
        conn = await open_connection(
            self.host,
            self.port,
            self._password,
            timeout=self.timeout_s,
            on_event=self._on_event,
            want=self._wanted if self.prefilter else None,
        )
        self._conn = conn
        reply = await self._command(SUBSCRIBE_COMMAND)
        if not reply.ok:
            raise GatewayError(f"event subscription refused: {reply.text}")
        await self._resync()
        self._watchdog = asyncio.create_task(self._keepalive(conn), name="freeswitch-keepalive")
        self._watchdog.add_done_callback(_log_task_failure)
        self._up = True
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
                    probe.add_done_callback(_consume)
                except EslError:
                    return
            wake = conn.last_rx + (self.keepalive_s if idle >= half else half)
            await asyncio.sleep(max(0.01, wake - time.monotonic()))

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

    async def _resync(self) -> None:
        """After (re)connect: calls FreeSWITCH no longer has end as lost; channels that none of our
        calls or spies explain are reported as UnknownChannel; missed answers and bridges are caught up."""
        rows = await self._show_channels()
        now = self._clock()
        by_uuid = {r.get("uuid", ""): r for r in rows}
        for call in list(self._calls.values()):
            row = by_uuid.get(call.call_id)
            if row is None:
                self._end(call, EndResult.LOST, 0, "gone from FreeSWITCH after the link came back")
                continue
            state = (row.get("callstate") or "").upper()
            if state in ("ACTIVE", "HELD") and not call.manual and not call.answered:
                call.answered = True
                self._report_answer(call, AnswerKind.UNKNOWN, now)
            if call.extension and not call.connected:
                for other in rows:
                    if (
                        other.get("call_uuid") == call.call_id
                        and other.get("uuid") != call.call_id
                        and (other.get("callstate") or "").upper() == "ACTIVE"
                    ):
                        self._connected(call, other.get("uuid"), now)
        for spy in list(self._spies.values()):
            if spy.spy_id not in by_uuid:
                self._spy_ended(spy, now)
        for row in rows:
            uid = row.get("uuid", "")
            owner = row.get("call_uuid") or uid
            if uid in self._calls or owner in self._calls or uid in self._spies:
                continue
            if any(c.agent_uuid == uid for c in self._calls.values()):
                continue
            self._emit(
                UnknownChannel(
                    row.get("name", uid),
                    now,
                    f"uuid {uid} {row.get('callstate', '')} dest {row.get('dest', '')}".strip(),
                )
            )

    # --- events ------------------------------------------------------------------------------

    def _wanted(self, body: bytes) -> bool:
        """Before parsing: is this event one the mapping reads? Events of other names, and channel
        events of legs no call or spy of ours owns (agent legs, b-legs, other controllers' calls),
        are dropped without parsing their 5-10 KB of headers."""
        name = peek_header(body, b"Event-Name")
        if name not in self._handled:
            return False
        if name == b"BACKGROUND_JOB" or name == b"CUSTOM":
            return True
        uid = peek_header(body, b"Unique-ID")
        if uid is None:
            return True
        key = uid.decode("ascii", "replace")
        return key in self._calls or key in self._spies

    def _on_event(self, event: EslEvent) -> None:
        handler = self._handlers.get(event.header("Event-Name") or "")
        if handler is not None:
            try:
                handler(event)
            except Exception:  # one bad event must not take the link down
                log.exception("FreeSWITCH event %s could not be handled", event.name)

    def _on_progress(self, event: EslEvent) -> None:
        call = self._calls.get(event.header("Unique-ID") or "")
        if call is not None and not call.ringing and not call.manual:
            call.ringing = True
            self._emit(CallRinging(call.call_id, self._clock()))

    def _on_answer(self, event: EslEvent) -> None:
        call = self._calls.get(event.header("Unique-ID") or "")
        if call is None or call.manual:
            return
        call.answered = True
        if not call.amd:
            self._report_answer(call, AnswerKind.UNKNOWN, self._clock())

    def _on_custom(self, event: EslEvent) -> None:
        subclass = event.get("Event-Subclass")
        if subclass == ANSWERED_SUBCLASS:
            call = self._calls.get(event.header("Unique-ID") or "")
            if call is None or call.manual:
                return
            call.answered = True
            verdict = _AMD_VERDICTS.get((event.get("cc_amd") or "").upper(), AnswerKind.UNKNOWN)
            self._report_answer(call, verdict if call.amd else AnswerKind.UNKNOWN, self._clock())
        elif subclass == MANUAL_SUBCLASS:
            self._on_manual(event)
        elif subclass == AGENT_FAILED_SUBCLASS:
            call = self._calls.get(event.header("Unique-ID") or "")
            if call is None or call.manual or call.connected or call.extension is None:
                return
            extension, call.extension = call.extension, None
            status = event.get("cc_status") or ""
            log.info("call %s: agent %s did not answer (%s)", call.call_id, extension, status)
            self._emit(AgentLegFailed(call.call_id, self._clock(), extension, status))

    def _on_manual(self, event: EslEvent) -> None:
        uid = event.header("Unique-ID") or ""
        agent = event.get("cc_agent") or ""
        number = event.get("cc_number") or ""
        try:
            validate_call_id(uid)
            validate_extension(agent, field="cc_agent")
            validate_number(number, field="cc_number")
        except Invalid as exc:
            log.warning("ignoring a manual call event with bad fields: %s", exc)
            return
        if uid in self._calls:
            return
        self._calls[uid] = _Call(uid, manual=True, extension=agent)
        self._emit(ManualCallStarted(uid, self._clock(), agent, number))

    def _on_bridge(self, event: EslEvent) -> None:
        call = self._calls.get(event.header("Unique-ID") or "")
        if call is None:
            return
        if call.extension is None:
            agent = event.get("variable_cc_agent")
            if agent:
                with contextlib.suppress(Invalid):
                    call.extension = validate_extension(agent)
        if call.extension is not None:
            other = event.get("Other-Leg-Unique-ID")
            self._connected(call, call.call_id if call.manual else other, self._clock())

    def _on_background_job(self, event: EslEvent) -> None:
        job = self._jobs.get(event.header("Job-UUID") or "")
        if job is None:
            return
        kind, ident = job
        result = event.body.strip()
        now = self._clock()
        if kind == "spy":
            spy = self._spies.get(ident)
            if spy is None:
                return
            if result.startswith("+OK") and not spy.started:
                spy.started = True
                self._emit(SpyStarted(spy.spy_id, now, spy.target_extension, spy.mode))
            elif not result.startswith("+OK"):
                self._spy_ended(spy, now)
            return
        call = self._calls.get(ident)
        if call is None:
            return
        if result.startswith("+OK"):
            call.answered = True
            if not call.amd:
                self._report_answer(call, AnswerKind.UNKNOWN, now)
            return
        cause = result.removeprefix("-ERR").strip().split(" ", 1)[0]
        result_kind = classify_end(cause, answered=call.answered, cancelled=call.cancelled)
        self._end(call, result_kind, q850_of(cause), f"BACKGROUND_JOB -ERR {cause}".strip())

    def _on_hangup_complete(self, event: EslEvent) -> None:
        uid = event.header("Unique-ID") or ""
        call = self._calls.get(uid)
        if call is None:
            spy = self._spies.get(uid)
            if spy is not None:
                self._spy_ended(spy, self._clock())
            return
        cause = event.get("Hangup-Cause") or event.get("variable_hangup_cause") or ""
        q850 = event.get("variable_hangup_cause_q850")
        code = int(q850) if q850 and q850.isdigit() else q850_of(cause)
        answered = (
            call.answered or call.connected or (event.get("Caller-Channel-Answered-Time") or "0") != "0"
        )
        if call.manual:
            answered = call.connected
        result = classify_end(cause, answered=answered, cancelled=call.cancelled)
        detail = cause
        sip = event.get("variable_sip_term_status")
        if sip:
            detail += f", sip {sip}"
        disposition = event.get("variable_sip_hangup_disposition")
        if disposition:
            detail += f", {disposition}"
        if answered and not call.manual:
            call.answered = True
        self._end(call, result, code, detail)

    # --- call table --------------------------------------------------------------------------

    def _on_originate_reply(self, call_id: str, fut: asyncio.Future[EslReply]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            # No reply (link dropped or timed out): the call is followed again by the resync.
            return
        reply = fut.result()
        call = self._calls.get(call_id)
        if call is None or reply.ok:
            return
        cause = reply.text.removeprefix("-ERR").strip()
        self._end(call, EndResult.FAILED, q850_of(cause), f"bgapi refused: {reply.text}")

    def _report_answer(self, call: _Call, answer: AnswerKind, at: float) -> None:
        if not call.answer_reported:
            call.answer_reported = True
            self._emit(CallAnswered(call.call_id, at, answer))

    def _connected(self, call: _Call, agent_uuid: str | None, at: float) -> None:
        if call.connected or call.extension is None:
            return
        call.connected = True
        call.agent_uuid = agent_uuid
        self._emit(CallConnected(call.call_id, at, call.extension))

    def _end(self, call: _Call, result: EndResult, cause: int, detail: str) -> None:
        if self._calls.pop(call.call_id, None) is None:
            return
        if call.job_uuid:
            self._jobs.pop(call.job_uuid, None)
        now = self._clock()
        if result is EndResult.ANSWERED and not call.manual:
            # AMD verdict never came (hung up during detection): the answer still precedes the end.
            self._report_answer(call, AnswerKind.UNKNOWN, now)
        self._emit(CallEnded(call.call_id, now, result, cause, detail))

    def _spy_ended(self, spy: _Spy, at: float) -> None:
        if self._spies.pop(spy.spy_id, None) is not None:
            self._jobs.pop(spy.job_uuid, None)
            self._emit(SpyEnded(spy.spy_id, at))

    def _call(self, call_id: str) -> _Call:
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
