"""From ESL events to domain events: the state of every call and spy leg the FreeSWITCH driver follows.

Pure bookkeeping on the event loop: `on_event` gets each ESL event that `esl_wire` parsed (`wanted`
decides, before parsing, which ones are worth it: docs/decisions/0006) and calls `emit` with the domain
events of `callcenter.engine.events`; `resync` does the same from the `show channels as json` rows read
after a (re)connect. The commands and the link are `freeswitch.py`.

Mapping (the same situations as the Asterisk driver reports, see base.py rule 3): `BACKGROUND_JOB`
`+OK <uuid>` means answered. A call ends at its `CHANNEL_HANGUP_COMPLETE`, when FreeSWITCH no longer has
it; the originate's `-ERR <CAUSE>` is only its verdict (docs/decisions/0007): after the answer it ends
nothing (our transfer at CHANNEL_ANSWER makes the originate give up with ORIGINATOR_CANCEL while the call
is bridged and goes on); before the answer the channel's hang-up follows within a grace, and with no
event of its channel at all FreeSWITCH never created one: `refused`. Once answered, the end is
`answered`. Before answer:
USER_BUSY (17) -> busy; NO_ANSWER (19), NO_USER_RESPONSE (18), ALLOTTED_TIMEOUT, PROGRESS_TIMEOUT ->
no_answer; NORMAL_CIRCUIT_CONGESTION (34), SWITCH_CONGESTION (42) -> congestion; NORMAL_CLEARING /
ORIGINATOR_CANCEL after our `uuid_kill` -> cancelled (uuid_kill reports NORMAL_CLEARING like a normal
end, so the driver keeps its own record); everything else (41 for a 503 or an unreachable host, 102 for
no response, 3, 1, ...) -> failed. The cause reported is
`variable_hangup_cause_q850` when present, else the Q.850 code of the cause name (FreeSWITCH's own
causes above 127 count as 16, as `switch_channel_cause_q850` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from callcenter.engine.events import (
    AgentLegFailed,
    AnswerKind,
    CallAnswered,
    CallConnected,
    CallEnded,
    CallRinging,
    EndResult,
    GatewayEvent,
    ManualCallStarted,
    SpyEnded,
    SpyMode,
    SpyStarted,
    UnknownChannel,
)
from callcenter.errors import Invalid
from callcenter.gateways.esl_wire import EslEvent, peek_header
from callcenter.validation import validate_call_id, validate_extension, validate_number

log = logging.getLogger(__name__)

# CUSTOM events the shipped dialplan fires (freeswitch/templates/dialplan/callcenter.xml.j2).
ANSWERED_SUBCLASS = "callcenter::answered"  # fired by `wait` / `wait_amd` (header cc_amd with AMD)
MANUAL_SUBCLASS = "callcenter::manual"  # fired by the agents' context (headers cc_agent, cc_number)
# fired by the agent extension when the bridge to the agent failed (headers cc_agent, cc_status)
AGENT_FAILED_SUBCLASS = "callcenter::agent_failed"

# Only what the mapping reads: about a third of `ALL` by volume (see the burst trace's notes).
# SHUTDOWN comes with SIGTERM and `fsctl shutdown`, SHUTDOWN_REQUESTED with `fsctl shutdown elegant|asap`
# (freeswitch-faults/README.md); the event socket then stays open about 31 s, refusing every call.
EVENTS = (
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE",
    "CHANNEL_HANGUP_COMPLETE",
    "BACKGROUND_JOB",
    "SHUTDOWN",
    "SHUTDOWN_REQUESTED",
)

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
# Q.850 34 / 42. FreeSWITCH reports a carrier's plain 503 as NORMAL_TEMPORARY_FAILURE (41), the same as an
# unreachable address (tests/fixtures/freeswitch/README.md), so only these names say "no room".
_CONGESTION_CAUSES = frozenset({"NORMAL_CIRCUIT_CONGESTION", "SWITCH_CONGESTION"})
_NO_ANSWER_CAUSES = frozenset({"NO_ANSWER", "NO_USER_RESPONSE", "ALLOTTED_TIMEOUT", "PROGRESS_TIMEOUT"})
_CANCEL_CAUSES = frozenset({"NORMAL_CLEARING", "ORIGINATOR_CANCEL"})
_AMD_VERDICTS = {"HUMAN": AnswerKind.HUMAN, "MACHINE": AnswerKind.MACHINE}


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
    >>> classify_end("NORMAL_CIRCUIT_CONGESTION", answered=False, cancelled=False)
    <EndResult.CONGESTION: 'congestion'>
    >>> classify_end("SYSTEM_SHUTDOWN", answered=False, cancelled=False)
    <EndResult.REFUSED: 'refused'>
    """
    if answered:
        return EndResult.ANSWERED
    name = (cause_name or "").strip().upper()
    if name in _BUSY_CAUSES:
        return EndResult.BUSY
    if name in _NO_ANSWER_CAUSES:
        return EndResult.NO_ANSWER
    if name in _CONGESTION_CAUSES:
        return EndResult.CONGESTION
    if name == "SYSTEM_SHUTDOWN":  # FreeSWITCH cut the ringing call as it shut down: the customer never
        return EndResult.REFUSED  # had a chance (graceful-shutdown-while-ringing.jsonl)
    if name in _CANCEL_CAUSES and cancelled:
        return EndResult.CANCELLED
    if name == "ORIGINATOR_CANCEL":  # the agent gave up a call dialled by hand
        return EndResult.CANCELLED
    return EndResult.FAILED


@dataclass(slots=True)
class Call:
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
    channel_seen: bool = False  # an event of its channel arrived: FreeSWITCH created one
    job_error: str | None = None  # the originate's `-ERR` cause, waiting for the channel's end
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class Spy:
    spy_id: str
    job_uuid: str
    target_extension: str
    mode: SpyMode
    started: bool = False


class CallTracker:
    """Calls and spy legs by id (our call id = the customer leg's Unique-ID, set by `origination_uuid`;
    a manual call's id = the agent leg's Unique-ID; a spy's id = the supervisor leg's Unique-ID), and
    the `bgapi` jobs whose BACKGROUND_JOB reports on them."""

    def __init__(
        self,
        *,
        emit: Callable[[GatewayEvent], None],
        clock: Callable[[], float],
        end_grace_s: float = 0.5,
        draining: Callable[[str], None] | None = None,
    ) -> None:
        self._emit = emit
        self.clock = clock
        self.end_grace_s = end_grace_s
        self._draining = draining  # told when FreeSWITCH announces its shutdown
        self.calls: dict[str, Call] = {}
        self.spies: dict[str, Spy] = {}
        self.jobs: dict[str, tuple[str, str]] = {}  # Job-UUID -> ("call" | "spy", id)
        self._handlers: dict[str, Callable[[EslEvent], None]] = {
            "CHANNEL_PROGRESS": self._on_progress,
            "CHANNEL_PROGRESS_MEDIA": self._on_progress,
            "CHANNEL_ANSWER": self._on_answer,
            "CHANNEL_BRIDGE": self._on_bridge,
            "CHANNEL_HANGUP_COMPLETE": self._on_hangup_complete,
            "BACKGROUND_JOB": self._on_background_job,
            "CUSTOM": self._on_custom,
            "SHUTDOWN": self._on_shutdown,
            "SHUTDOWN_REQUESTED": self._on_shutdown,
        }
        self._handled = frozenset(name.encode() for name in self._handlers)

    def wanted(self, body: bytes) -> bool:
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
        return key in self.calls or key in self.spies

    def on_event(self, event: EslEvent) -> None:
        handler = self._handlers.get(event.header("Event-Name") or "")
        if handler is not None:
            handler(event)

    def stop_timers(self) -> None:
        for call in self.calls.values():
            if call.timer is not None:
                call.timer.cancel()

    def resync(self, rows: list[dict[str, str]], *, report_unknown: bool = True) -> None:
        """After (re)connect, from `show channels as json`: calls FreeSWITCH no longer has end as lost;
        channels that none of our calls or spies explain are reported as UnknownChannel; missed answers
        and bridges are caught up."""
        now = self.clock()
        by_uuid = {r.get("uuid", ""): r for r in rows}
        for call in list(self.calls.values()):
            row = by_uuid.get(call.call_id)
            if row is None and call.job_error is not None:
                self._end_from_job(call)  # the originate had failed; its channel's end was missed
                continue
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
        for spy in list(self.spies.values()):
            if spy.spy_id not in by_uuid:
                self._spy_ended(spy, now)
        for row in rows if report_unknown else ():
            uid = row.get("uuid", "")
            owner = row.get("call_uuid") or uid
            if uid in self.calls or owner in self.calls or uid in self.spies:
                continue
            if any(c.agent_uuid == uid for c in self.calls.values()):
                continue
            self._emit(
                UnknownChannel(
                    row.get("name", uid),
                    now,
                    f"uuid {uid} {row.get('callstate', '')} dest {row.get('dest', '')}".strip(),
                )
            )

    def refused(self, call_id: str, text: str) -> None:
        """FreeSWITCH refused the `bgapi originate` of call `call_id` outright (`text`: its `-ERR` reply):
        nothing ran, no channel exists."""
        call = self.calls.get(call_id)
        if call is None:
            return
        cause = text.removeprefix("-ERR").strip()
        self._end(call, EndResult.REFUSED, q850_of(cause), f"bgapi refused: {text}")

    # --- events ------------------------------------------------------------------------------

    def _on_shutdown(self, event: EslEvent) -> None:
        if self._draining is not None:
            self._draining(f"{event.name}: {event.get('Event-Info') or 'FreeSWITCH is shutting down'}")

    def _on_progress(self, event: EslEvent) -> None:
        call = self.calls.get(event.header("Unique-ID") or "")
        if call is not None:
            call.channel_seen = True
        if call is not None and not call.ringing and not call.manual:
            call.ringing = True
            self._emit(CallRinging(call.call_id, self.clock()))

    def _on_answer(self, event: EslEvent) -> None:
        call = self.calls.get(event.header("Unique-ID") or "")
        if call is None or call.manual:
            return
        call.channel_seen = call.answered = True
        if not call.amd:
            self._report_answer(call, AnswerKind.UNKNOWN, self.clock())

    def _on_custom(self, event: EslEvent) -> None:
        subclass = event.get("Event-Subclass")
        if subclass == ANSWERED_SUBCLASS:
            call = self.calls.get(event.header("Unique-ID") or "")
            if call is None or call.manual:
                return
            call.channel_seen = call.answered = True
            verdict = _AMD_VERDICTS.get((event.get("cc_amd") or "").upper(), AnswerKind.UNKNOWN)
            self._report_answer(call, verdict if call.amd else AnswerKind.UNKNOWN, self.clock())
        elif subclass == MANUAL_SUBCLASS:
            self._on_manual(event)
        elif subclass == AGENT_FAILED_SUBCLASS:
            call = self.calls.get(event.header("Unique-ID") or "")
            if call is None or call.manual or call.connected or call.extension is None:
                return
            extension, call.extension = call.extension, None
            status = event.get("cc_status") or ""
            log.info("call %s: agent %s did not answer (%s)", call.call_id, extension, status)
            self._emit(AgentLegFailed(call.call_id, self.clock(), extension, status))

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
        if uid in self.calls:
            return
        self.calls[uid] = Call(uid, manual=True, extension=agent)
        self._emit(ManualCallStarted(uid, self.clock(), agent, number))

    def _on_bridge(self, event: EslEvent) -> None:
        call = self.calls.get(event.header("Unique-ID") or "")
        if call is None:
            return
        call.channel_seen = True
        if call.extension is None:
            agent = event.get("variable_cc_agent")
            if agent:
                with contextlib.suppress(Invalid):
                    call.extension = validate_extension(agent)
        if call.extension is not None:
            other = event.get("Other-Leg-Unique-ID")
            self._connected(call, call.call_id if call.manual else other, self.clock())

    def _on_background_job(self, event: EslEvent) -> None:
        job = self.jobs.get(event.header("Job-UUID") or "")
        if job is None:
            return
        kind, ident = job
        result = event.body.strip()
        now = self.clock()
        if kind == "spy":
            spy = self.spies.get(ident)
            if spy is None:
                return
            if result.startswith("+OK") and not spy.started:
                spy.started = True
                self._emit(SpyStarted(spy.spy_id, now, spy.target_extension, spy.mode))
            elif not result.startswith("+OK"):
                self._spy_ended(spy, now)
            return
        call = self.calls.get(ident)
        if call is None:
            return
        if result.startswith("+OK"):
            call.channel_seen = call.answered = True
            if not call.amd:
                self._report_answer(call, AnswerKind.UNKNOWN, now)
            return
        # `-ERR` is the originate's verdict, not the channel's end: a call the PBX still has is never
        # reported ended. Answered, it goes on (our transfer at CHANNEL_ANSWER made the originate give
        # up with ORIGINATOR_CANCEL, and FreeSWITCH bridged the call: early-transfer-originator-cancel
        # *.jsonl) and ends at its CHANNEL_HANGUP_COMPLETE. Before the answer, the channel (if any)
        # ends at once, with its HANGUP_COMPLETE just before or after the job (every recording): wait
        # a grace for it. No channel event at all by then: FreeSWITCH never created one and refused
        # the call itself (`_end_from_job`).
        cause = result.removeprefix("-ERR").strip().split(" ", 1)[0]
        call.job_error = cause
        if call.answered:
            log.info(
                "call %s: the originate said -ERR %s after the answer; the call goes on", call.call_id, cause
            )
            return
        if call.timer is None:
            loop = asyncio.get_running_loop()
            call.timer = loop.call_later(self.end_grace_s, self._end_from_job, call)

    def _end_from_job(self, call: Call) -> None:
        """The originate failed and no CHANNEL_HANGUP_COMPLETE came within the grace."""
        cause = call.job_error or ""
        if call.answered:
            return  # an answered call ends at its hang-up only
        if call.channel_seen:
            result = classify_end(cause, answered=False, cancelled=call.cancelled)
            self._end(
                call, result, q850_of(cause), f"BACKGROUND_JOB -ERR {cause}, no CHANNEL_HANGUP_COMPLETE"
            )
            return
        # Not one event of its channel: FreeSWITCH refused the originate before creating a channel, and
        # the customer's line was never tried. CHAN_NOT_IMPLEMENTED while it shuts down
        # (graceful-shutdown-while-ringing.jsonl), DESTINATION_OUT_OF_ORDER over sessions-per-second
        # (session-rate-throttle.jsonl; a real out-of-order destination has a channel and its hang-up).
        detail = f"BACKGROUND_JOB -ERR {cause}: no channel was created (refused by FreeSWITCH)"
        self._end(call, EndResult.REFUSED, q850_of(cause), detail)

    def _on_hangup_complete(self, event: EslEvent) -> None:
        uid = event.header("Unique-ID") or ""
        call = self.calls.get(uid)
        if call is None:
            spy = self.spies.get(uid)
            if spy is not None:
                self._spy_ended(spy, self.clock())
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
        if call.job_error and call.job_error != cause:
            detail += f", originate -ERR {call.job_error}"
        if answered and not call.manual:
            call.answered = True
        self._end(call, result, code, detail)

    # --- outcomes ----------------------------------------------------------------------------

    def _report_answer(self, call: Call, answer: AnswerKind, at: float) -> None:
        if not call.answer_reported:
            call.answer_reported = True
            self._emit(CallAnswered(call.call_id, at, answer))

    def _connected(self, call: Call, agent_uuid: str | None, at: float) -> None:
        if call.connected or call.extension is None:
            return
        call.connected = True
        call.agent_uuid = agent_uuid
        self._emit(CallConnected(call.call_id, at, call.extension))

    def _end(self, call: Call, result: EndResult, cause: int, detail: str) -> None:
        if self.calls.pop(call.call_id, None) is None:
            return
        if call.timer is not None:
            call.timer.cancel()
        if call.job_uuid:
            self.jobs.pop(call.job_uuid, None)
        now = self.clock()
        if result is EndResult.ANSWERED and not call.manual:
            # AMD verdict never came (hung up during detection): the answer still precedes the end.
            self._report_answer(call, AnswerKind.UNKNOWN, now)
        self._emit(CallEnded(call.call_id, now, result, cause, detail))

    def _spy_ended(self, spy: Spy, at: float) -> None:
        if self.spies.pop(spy.spy_id, None) is not None:
            self.jobs.pop(spy.job_uuid, None)
            self._emit(SpyEnded(spy.spy_id, at))
