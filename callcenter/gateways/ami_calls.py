"""From AMI events to domain events: the state of every call and spy leg the Asterisk driver follows.

Pure bookkeeping on the event loop: `on_event` gets each AMI event that `ami_wire` let through and
calls `emit` with the domain events of `base.py`; `resync` does the same from a `CoreShowChannels` list.

Mapping (base.py rule 3). Our call id is the customer channel's Uniqueid (the Originate's `ChannelId`),
so every event is looked up by Uniqueid (or Linkedid for the legs it spawns), never by channel name,
which differs between chan_sip and chan_pjsip.
- `Newstate` Ringing gives `CallRinging`. The dialplan's `UserEvent(CallCenterAnswered)` gives
  `CallAnswered` (with the AMD verdict from `AMDSTATUS` when asked); why not the channel going Up:
  docs/decisions/0005.
- `CallEnded` comes from the customer channel's `Hangup` (its Q.850 cause), or, when Asterisk reports
  no channel at all (`OriginateResponse` Reason 0 without a channel, e.g. an unknown peer), from the
  `OriginateResponse` after a short grace (`end_grace_s`) in which a late `Hangup` would still give
  the real cause: the traces show the failure `OriginateResponse` both before and after the `Hangup`.
  A `Hangup` we asked for before answer is `cancelled`; anything after answer is `answered`. Before
  answer the cause decides, not the Reason: chan_pjsip gives Reason 0 for busy and 503 alike (17 busy,
  34/42 congestion, 18/19 no answer); a Hangup with no cause at all (0) before answer is Asterisk
  dropping the call itself (a restart): `refused`. After answer, Cause 0 (chan_pjsip: the far end hung
  up outside a bridge) is reported as 16. `HangupRequest` (which the user's `Event: Hangup` filter lets
  through) is dropped by name: the `Hangup` after it carries the same cause.
- `BridgeEnter` gives `CallConnected`; the dialplan's `UserEvent(CallCenterAgentFailed)`, `AgentLegFailed`;
  `ChanSpyStart`/`ChanSpyStop` give `SpyStarted`/`SpyEnded`.
- Calls an agent dials by hand show up as a `Newchannel` in the agents' context whose Exten is a number
  and whose Uniqueid is its own Linkedid: `ManualCallStarted`, then `CallConnected` at `BridgeEnter`,
  then `CallEnded`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from panoramisk.message import Message

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
from callcenter.gateways.ami_dialplan import Dialplan
from callcenter.validation import validate_extension, validate_number

log = logging.getLogger(__name__)

# Events we act on; everything else is dropped by name before parsing. `Shutdown` (class system) is
# the link's business (asterisk.py): Asterisk announces a shutdown or restart with it.
WANTED_EVENTS = frozenset(
    {
        "Shutdown",
        "Newchannel",
        "Newstate",
        "Hangup",
        "OriginateResponse",
        "UserEvent",
        "BridgeEnter",
        "DialEnd",
        "ChanSpyStart",
        "ChanSpyStop",
        "CoreShowChannel",
        "CoreShowChannelsComplete",
    }
)

# OriginateResponse Reason = the last control frame Asterisk saw on the outgoing channel.
REASON_TEXT = {
    0: "failed or cancelled before any answer",
    1: "hung up before answer",
    3: "still ringing at the timeout",
    4: "answered",
    5: "busy",
    8: "congestion",
}
REASON_RESULT = {
    0: EndResult.FAILED,
    1: EndResult.FAILED,
    3: EndResult.NO_ANSWER,
    5: EndResult.BUSY,
    8: EndResult.CONGESTION,
}
# Q.850 causes of an unanswered call that are not plain failures. chan_pjsip reports busy and 503 with
# OriginateResponse Reason 0 (chan_sip said 5 / 8), so the Hangup cause decides (asterisk-20-pjsip/
# README.md; originate-busy.jsonl 17/486, originate-congestion.jsonl 34/503).
CAUSE_RESULT = {
    17: EndResult.BUSY,
    18: EndResult.NO_ANSWER,
    19: EndResult.NO_ANSWER,
    34: EndResult.CONGESTION,
    42: EndResult.CONGESTION,
}
# Dial() status of an agent's own call that never got answered.
DIALSTATUS_RESULT = {
    "BUSY": EndResult.BUSY,
    "NOANSWER": EndResult.NO_ANSWER,
    "CANCEL": EndResult.CANCELLED,
}
AMD_VERDICT = {"HUMAN": AnswerKind.HUMAN, "MACHINE": AnswerKind.MACHINE}
ASTERISK_UID = re.compile(r"\d+\.\d+")  # Asterisk's own Uniqueids; ours come from ChannelId


def endpoint_of(channel: str) -> str | None:
    """The endpoint / peer name in a channel name: `PJSIP/1001-0000001e` and `SIP/1001-0000001e` both
    give `1001`; None when it is not an agent-like name."""
    _, _, rest = channel.partition("/")
    name = rest.rpartition("-")[0]
    try:
        return validate_extension(name)
    except Invalid:
        return None


@dataclass(slots=True, eq=False)
class Call:
    call_id: str
    manual: bool = False  # dialled by hand from an agent phone (call id = the agent channel's Uniqueid)
    amd: bool = False
    channel: str = ""  # customer channel (originated) or the agent's channel (manual)
    ringing: bool = False  # CallRinging emitted
    answered: bool = False  # the PBX saw the answer
    announced: bool = False  # CallAnswered emitted
    connecting: str | None = None  # extension asked for by connect_agent
    connected: bool = False
    extension: str | None = None
    agent_channel: str = ""
    hangup_requested: bool = False
    reason: int | None = None  # failure OriginateResponse Reason waiting for its Hangup
    timer: asyncio.TimerHandle | None = None
    dial_status: str = ""
    sound: str = ""


@dataclass(slots=True, eq=False)
class Spy:
    spy_id: str
    target_extension: str
    mode: SpyMode
    channel: str = ""
    started: bool = False


def bridge_peer(snap: Message, channels: list[Message]) -> Message | None:
    bridge = snap.get("BridgeId", "")
    if not bridge:
        return None
    return next(
        (m for m in channels if m.get("BridgeId") == bridge and m.get("Uniqueid") != snap.get("Uniqueid")),
        None,
    )


class CallTracker:
    """Calls and spy legs by id (our call id = the customer channel's Uniqueid; a manual call's id =
    the agent channel's Uniqueid; a spy's id = the supervisor channel's Uniqueid)."""

    def __init__(
        self,
        *,
        emit: Callable[[GatewayEvent], None],
        clock: Callable[[], float],
        dialplan: Dialplan,
        end_grace_s: float,
        hangup: Callable[[str], None],
    ) -> None:
        self._emit = emit
        self.clock = clock
        self.dialplan = dialplan
        self.end_grace_s = end_grace_s
        self._hangup = hangup
        self.calls: dict[str, Call] = {}
        self.spies: dict[str, Spy] = {}
        self._recent: set[str] = set()  # ids that ended lately: their late events are not news
        self._recent_order: deque[str] = deque()
        self._handlers: dict[str, Callable[[Message], None]] = {
            "Newchannel": self._on_newchannel,
            "Newstate": self._on_newstate,
            "Hangup": self._on_hangup,
            "OriginateResponse": self._on_originate_response,
            "UserEvent": self._on_user_event,
            "BridgeEnter": self._on_bridge_enter,
            "DialEnd": self._on_dial_end,
            "ChanSpyStart": self._on_chanspy_start,
            "ChanSpyStop": self._on_chanspy_stop,
        }

    def on_event(self, msg: Message) -> None:
        handler = self._handlers.get(msg.get("Event"))
        if handler is not None:
            handler(msg)

    def ended_lately(self, some_id: str) -> bool:
        return some_id in self._recent

    def stop_timers(self) -> None:
        for call in self.calls.values():
            if call.timer is not None:
                call.timer.cancel()

    def resync(self, channels: list[Message]) -> None:
        """After a reconnect: catch up on what changed, end what vanished, report what we don't know."""
        by_uid = {m.get("Uniqueid", ""): m for m in channels}
        for call in list(self.calls.values()):
            snap = by_uid.get(call.call_id)
            if snap is not None:
                self._catch_up(call, snap, channels)
            elif call.reason is not None:
                self._end_from_reason(call)
            else:
                self._end(call, EndResult.LOST, 0, "channel gone when the AMI link came back")
        for spy in list(self.spies.values()):
            if spy.spy_id not in by_uid:
                self._end_spy(spy)
        now = self.clock()
        for snap in channels:
            uid, linked = snap.get("Uniqueid", ""), snap.get("Linkedid", "")
            if any(i in self.calls or i in self.spies or i in self._recent for i in (uid, linked)):
                continue
            self._emit(
                UnknownChannel(
                    snap.get("Channel", ""),
                    now,
                    f"uniqueid {uid}, {snap.get('ChannelStateDesc', '?')}, in "
                    f"{snap.get('Context', '')},{snap.get('Exten', '')} ({snap.get('Application', '')})",
                )
            )

    def _catch_up(self, call: Call, snap: Message, channels: list[Message]) -> None:
        call.channel = snap.get("Channel", call.channel)
        state = snap.get("ChannelState")
        if not call.manual:
            if state == "5" and not call.ringing and not call.answered:
                call.ringing = True
                self._emit(CallRinging(call.call_id, self.clock()))
            if state == "6":
                call.answered = True
                if not call.announced and snap.get("Application") != "AMD":
                    self._announce(call, AnswerKind.UNKNOWN)  # the verdict, if any, was missed
        if not call.connected and (call.manual or call.connecting):
            peer = bridge_peer(snap, channels)
            if peer is not None:
                if not call.manual:
                    call.agent_channel = peer.get("Channel", "")
                self._connected(call)

    def _on_newchannel(self, msg: Message) -> None:
        uid = msg["Uniqueid"]
        call = self.calls.get(uid)
        if call is not None:
            call.channel = msg["Channel"]
            if call.hangup_requested:
                self._hangup(call.channel)  # asked for before the channel existed
            return
        linked = msg["Linkedid"]
        if linked != uid:
            call = self.calls.get(linked)
            if call is not None and not call.manual:
                call.agent_channel = msg["Channel"]  # the leg agent-connect dials
            return
        spy = self.spies.get(uid)
        if spy is not None:
            spy.channel = msg["Channel"]
            return
        if msg.get("Context") == self.dialplan.agents_context:
            self._maybe_manual(msg)

    def _maybe_manual(self, msg: Message) -> None:
        try:
            number = validate_number(msg.get("Exten", ""))
        except Invalid:
            return  # `s`, a feature code, an internal extension: not a call to a customer
        extension = endpoint_of(msg["Channel"])
        if extension is None:
            return
        call_id = msg["Uniqueid"]
        call = Call(call_id, manual=True, channel=msg["Channel"], extension=extension)
        self.calls[call_id] = call
        self._emit(ManualCallStarted(call_id, self.clock(), extension, number))

    def _on_newstate(self, msg: Message) -> None:
        call = self.calls.get(msg["Uniqueid"])
        if call is None or call.manual:
            return
        state = msg["ChannelState"]
        if state == "5" and not call.ringing and not call.answered:
            call.ringing = True
            self._emit(CallRinging(call.call_id, self.clock()))
        elif state == "6":
            call.answered = True

    def _on_originate_response(self, msg: Message) -> None:
        uid = msg.get("Uniqueid", "")
        call = self.calls.get(uid)
        if call is None:
            spy = self.spies.get(uid)
            if spy is not None and msg.get("Response") != "Success":
                self._end_spy(spy)  # the supervisor did not answer
            return
        if msg.get("Response") == "Success":
            call.answered = True
            if not call.channel:
                call.channel = msg.get("Channel", "")
            return
        try:
            call.reason = int(msg.get("Reason", "0"))
        except ValueError:
            call.reason = 0
        # The Hangup (with the real cause) may come before or after this; give it a moment.
        call.timer = asyncio.get_running_loop().call_later(self.end_grace_s, self._end_from_reason, call)

    def _on_user_event(self, msg: Message) -> None:
        if msg.get("UserEvent") == self.dialplan.answered_event:
            call = self.calls.get(msg.get("Uniqueid", "")) or self.calls.get(msg.get("CallId", ""))
            if call is None or call.manual or call.announced:
                return
            verdict = AnswerKind.UNKNOWN
            if call.amd:
                verdict = AMD_VERDICT.get(msg.get("AMDStatus", "").upper(), AnswerKind.UNKNOWN)
            self._announce(call, verdict)
        elif msg.get("UserEvent") == self.dialplan.agent_failed_event:
            call = self.calls.get(msg.get("Uniqueid", ""))
            if call is not None and not call.connected and call.connecting:
                status = msg.get("DialStatus") or ""
                extension = call.connecting
                log.info("call %s: agent %s did not answer (%s)", call.call_id, extension, status)
                call.connecting = None
                call.agent_channel = ""
                self._emit(AgentLegFailed(call.call_id, self.clock(), extension, status))

    def _on_bridge_enter(self, msg: Message) -> None:
        uid = msg["Uniqueid"]
        call = self.calls.get(uid)
        leg = False
        if call is None:
            call = self.calls.get(msg["Linkedid"])
            leg = True
        if call is None or call.connected or not (call.manual or call.connecting):
            return
        if leg and not call.manual:
            call.agent_channel = msg["Channel"]
        self._connected(call)

    def _on_dial_end(self, msg: Message) -> None:
        call = self.calls.get(msg.get("Uniqueid", ""))
        if call is not None and call.manual:
            call.dial_status = msg.get("DialStatus", "")

    def _on_hangup(self, msg: Message) -> None:
        uid = msg["Uniqueid"]
        call = self.calls.get(uid)
        if call is None:
            spy = self.spies.get(uid)
            if spy is not None:
                self._end_spy(spy)
                return
            call = self.calls.get(msg["Linkedid"])
            if call is not None and not call.connected and call.agent_channel == msg["Channel"]:
                call.agent_channel = ""  # the agent leg failed; the customer still waits
            return
        try:
            cause = int(msg.get("Cause", "0"))
        except ValueError:
            cause = 0
        result = self._result_for_hangup(call, cause)
        reported, detail = cause, f"Hangup Cause {cause}"
        if cause == 0 and result is EndResult.ANSWERED:
            # chan_pjsip gives no cause when the far end hangs up outside a bridge: the customer waiting
            # in Wait() (answered-then-abandoned-in-wait.jsonl, the burst's answered calls), where
            # chan_sip said 16. A customer's hang-up, counted as the normal clearing it is.
            reported = 16
            detail += " (none given: hung up outside a bridge), counted as 16"
        elif cause == 0 and result is EndResult.REFUSED:
            detail += " (none given: Asterisk dropped the unanswered call itself, as in a restart)"
        else:
            detail += f" ({msg.get('Cause-txt', '')})"
        if msg.get("TechCause"):  # chan_pjsip: the SIP status behind a failure cause
            detail += f", TechCause {msg.get('TechCause')}"
        if call.reason is not None:
            detail += f", OriginateResponse Reason {call.reason}"
        if call.sound:
            detail += f", after playing {call.sound}"
        self._end(call, result, reported, detail)

    def _on_chanspy_start(self, msg: Message) -> None:
        spy = self.spies.get(msg.get("SpyerUniqueid", ""))
        if spy is not None and not spy.started:
            spy.started = True
            self._emit(SpyStarted(spy.spy_id, self.clock(), spy.target_extension, spy.mode))

    def _on_chanspy_stop(self, msg: Message) -> None:
        spy = self.spies.get(msg.get("SpyerUniqueid", ""))
        if spy is not None:
            self._end_spy(spy)

    # --- outcomes --------------------------------------------------------------------------------

    @staticmethod
    def _result_for_hangup(call: Call, cause: int) -> EndResult:
        if call.manual:
            if call.connected:
                return EndResult.ANSWERED
            if call.dial_status:
                return DIALSTATUS_RESULT.get(call.dial_status, EndResult.FAILED)
        elif call.answered:
            return EndResult.ANSWERED
        if call.hangup_requested:
            return EndResult.CANCELLED
        if cause == 0 and not call.manual:
            # Nobody gave a cause for an unanswered call: no far end refused it (that carries 17, 34,
            # 19 ...) and we did not hang it up. Asterisk cut it itself: `core restart now` ends every
            # ringing call so (graceful-restart-while-ringing.jsonl: OriginateResponse Reason 0, Hangup
            # Cause 0, no HangupRequest). The customer never got a chance: refused, not failed.
            return EndResult.REFUSED
        if cause in CAUSE_RESULT:
            return CAUSE_RESULT[cause]
        if call.reason is not None:
            return REASON_RESULT.get(call.reason, EndResult.FAILED)
        return EndResult.FAILED

    def _end_from_reason(self, call: Call) -> None:
        reason = call.reason if call.reason is not None else 0
        if call.hangup_requested and not call.answered:
            result = EndResult.CANCELLED
        else:
            result = REASON_RESULT.get(reason, EndResult.FAILED)
        detail = f"OriginateResponse Reason {reason} ({REASON_TEXT.get(reason, 'unknown')}), no Hangup"
        self._end(call, result, 0, detail)

    def _announce(self, call: Call, verdict: AnswerKind) -> None:
        call.answered = call.announced = True
        self._emit(CallAnswered(call.call_id, self.clock(), verdict))

    def _connected(self, call: Call) -> None:
        call.connected = True
        if not call.manual:
            call.extension = call.connecting
        assert call.extension is not None
        self._emit(CallConnected(call.call_id, self.clock(), call.extension))

    def _end(self, call: Call, result: EndResult, cause: int, detail: str) -> None:
        if self.calls.pop(call.call_id, None) is None:
            return
        if call.timer is not None:
            call.timer.cancel()
        self.remember(call.call_id)
        self._emit(CallEnded(call.call_id, self.clock(), result, cause, detail))

    def _end_spy(self, spy: Spy) -> None:
        if self.spies.pop(spy.spy_id, None) is not None:
            self.remember(spy.spy_id)
            self._emit(SpyEnded(spy.spy_id, self.clock()))

    def remember(self, ended_id: str) -> None:
        self._recent.add(ended_id)
        self._recent_order.append(ended_id)
        if len(self._recent_order) > 4096:
            self._recent.discard(self._recent_order.popleft())

    def refused(self, target: str, detail: str) -> None:
        """Asterisk refused the Originate of call or spy `target` outright (`Response: Error`): nothing was
        queued, no channel exists, the customer's line was never tried."""
        call = self.calls.get(target)
        if call is not None:
            self._end(call, EndResult.REFUSED, 0, detail)
        spy = self.spies.get(target)
        if spy is not None:
            log.warning("spy %s: %s", spy.spy_id, detail)
            self._end_spy(spy)
