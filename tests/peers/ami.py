"""A test peer that plays Asterisk on a loopback TCP socket, speaking real AMI.

It answers the banner, Login (success / failure, honouring the `Events:` class mask the way Asterisk
does), Ping, Logoff and CoreShowChannels itself, and answers every call action by replaying the
Asterisk side of the matching recorded conversation (read at run time), with the ActionIDs, call ids
(ChannelId / Uniqueid / Linkedid), channel names, numbers, extensions and caller IDs substituted. A
customer's scenario is chosen by the dialled number (`scenarios`: digits -> trace file).

Which recordings: a `TraceSet`, `CHAN_SIP` (tests/fixtures/asterisk-20/, chan_sip, `read = all`) or
`CHAN_PJSIP` (tests/fixtures/asterisk-20-pjsip/, chan_pjsip under the project's filtered AMI user). A set
names the file for each part of a call besides the dialled scenario; where the pjsip set has no recording
(a wrong secret, a Hangup ordered while ringing or after answer, an unknown endpoint, AMD) it plays the
chan_sip one, and both play the pjsip restart recordings (the AMI core's refusals, not the channel
driver's).

Replays are time-compressed by `speed`, except the ring timeout, which follows the client's own
`Timeout` header. Where a trace shows the client acting next (the `Redirect` after the answer) the
replay waits for the client's action; what the client does then picks the continuation from the trace
that recorded it (Redirect to agent-connect: `agent_bridged`; Hangup while ringing: `hangup_ringing`;
Hangup after answer: `hangup_answered`; Redirect to an unreachable agent or to the abandon message:
`agent_unavailable` / `abandon_message` where the set has them); a customer nobody redirects hangs up
as in `waiting` (8 s, trace time, after the answer).

`replay(trace, call_ids)` plays a whole recording (e.g. the interleaved `burst-20-mixed.jsonl`) for
calls the client originated into numbers without a scenario (`default_scenario=None`), and
`agent_dials` plays the set's `manual` recording for any agent and number.

The peer keeps the PBX's channels (updated from every event it plays) across connections: a dropped
client that reconnects sees the calls that went on meanwhile in CoreShowChannels. It can drop a
connection or go silent on command or at a chosen action, and it records every byte it received.

Synthesized (the traces have no recording of them), built from recorded shapes:
- (chan_sip set) the abandon message: after `Redirect` into the abandon context, a `Newexten` running
  `Playback` then the customer's `Hangup` Cause 16, shaped like the recorded customer Hangup; and an
  unreachable agent: the recorded CallCenterAnswered UserEvent turned into CallCenterAgentFailed
  (DialStatus CHANUNAVAIL, as the pjsip set recorded it);
- the replies to `Setvar` ("Variable Set") and to actions on a channel that is gone
  ("No such channel" / "Channel specified does not exist"), which are Asterisk's own messages;
- CoreShowChannels answers (from the recorded CoreShowChannel shape, filled from the live channels);
- the spy leg's OriginateResponse names the Context/Exten we originate into instead of the
  recording's `Application: ChanSpy`, and its ChanSpyStop / Hangup are played when the spied channel
  hangs up (ChanSpy's `E` option), not at their recorded time;
- for a Hangup on a bridged call, the reply comes from the recorded Hangup reply and the tear-down from
  the recorded end of the bridged call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callcenter.gateways.ami_dialplan import DEFAULT_DIALPLAN, Dialplan

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BANNER = "Asterisk Call Manager/9.0.0\r\n"
EOL = "\r\n"
_NOISE = {"FullyBooted", "SuccessfulAuth"}
_SHUTTING_DOWN = "Asterisk is shutting down"
# graceful-restart-login-during-shutdown.jsonl ends at the refusal; its README gives the close: t = 0.711 s.
_LOGIN_REFUSED_CLOSE_S = 0.711


@dataclass(frozen=True)
class TraceSet:
    """One set of recordings (a folder of tests/fixtures/) and the file that plays each part the peer
    needs besides the dialled scenarios. Paths are relative to tests/fixtures/; an empty one means the
    set has no recording of it and the peer synthesizes it from recorded shapes (module docstring)."""

    name: str
    folder: str
    login: str  # the Login success reply, and the events that follow it
    login_failure: str  # a Login with a wrong secret
    login_shutdown: str  # a Login while Asterisk shuts down
    restart: str  # `core restart now` while calls ring
    shutdown_event: str  # a connection that receives the system class (read-all), for `Event: Shutdown`
    agent_bridged: str  # after a Redirect into agent-connect: agent leg, bridge, talk, hang-up
    waiting: str  # an answered customer nobody redirects hangs up in Wait()
    abandon_message: str  # after a Redirect into abandon-message
    agent_unavailable: str  # after a Redirect to an agent whose phone is unreachable
    hangup_ringing: str  # the client's Hangup while the customer rings
    hangup_answered: str  # the client's Hangup of an answered, unbridged customer
    spy: str  # a supervisor originated into ChanSpy
    channel_list: str  # a CoreShowChannels reply (the CoreShowChannel shape)
    manual: str  # an agent's phone dials a customer
    unknown: str  # an Originate to an endpoint Asterisk does not know

    def path(self, name: str) -> str:
        """A scenario's file: a bare name is in this set's folder, `folder/name` anywhere in fixtures."""
        return name if "/" in name else f"{self.folder}/{name}"


# The first recordings: Asterisk 20, chan_sip, `read = all` (tests/fixtures/asterisk-20/README.md).
CHAN_SIP = TraceSet(
    name="chan_sip",
    folder="asterisk-20",
    login="asterisk-20/login-ping-logoff.jsonl",
    login_failure="asterisk-20/login-failure.jsonl",
    # Only recorded on chan_pjsip; the refusals and the Shutdown event are Asterisk's core, not the channel
    # driver's, so the chan_sip set plays the same recordings.
    login_shutdown="asterisk-20-pjsip/graceful-restart-login-during-shutdown.jsonl",
    restart="asterisk-20-pjsip/graceful-restart-while-ringing.jsonl",
    shutdown_event="asterisk-20-pjsip/read-all/graceful-restart-while-ringing.jsonl",
    agent_bridged="asterisk-20/originate-answered-agent-bridged.jsonl",
    waiting="asterisk-20/answered-then-abandoned.jsonl",
    abandon_message="",
    agent_unavailable="",
    hangup_ringing="asterisk-20/hangup-while-ringing.jsonl",
    hangup_answered="asterisk-20/answered-amd-verdict.jsonl",
    spy="asterisk-20/core-show-channels-and-chanspy.jsonl",
    channel_list="asterisk-20/core-show-channels-and-chanspy.jsonl",
    manual="asterisk-20/manual-call-from-agent-phone.jsonl",
    unknown="asterisk-20/originate-unknown-peer.jsonl",
)

# Asterisk 20.20.1, chan_pjsip, the project's filtered AMI user (tests/fixtures/asterisk-20-pjsip/README.md).
# What it has no recording of is played from the chan_sip set: a wrong secret (the AMI core's answer), a
# Hangup ordered while ringing or after answer, an unknown endpoint.
CHAN_PJSIP = TraceSet(
    name="chan_pjsip",
    folder="asterisk-20-pjsip",
    login="asterisk-20-pjsip/originate-busy.jsonl",
    login_failure=CHAN_SIP.login_failure,
    login_shutdown=CHAN_SIP.login_shutdown,
    restart=CHAN_SIP.restart,
    shutdown_event=CHAN_SIP.shutdown_event,
    agent_bridged="asterisk-20-pjsip/originate-answered-agent-bridged.jsonl",
    waiting="asterisk-20-pjsip/answered-then-abandoned-in-wait.jsonl",
    abandon_message="asterisk-20-pjsip/answered-then-abandon-message.jsonl",
    agent_unavailable="asterisk-20-pjsip/agent-leg-unavailable.jsonl",
    hangup_ringing=CHAN_SIP.hangup_ringing,
    hangup_answered=CHAN_SIP.hangup_answered,
    spy="asterisk-20-pjsip/chanspy-listen-whisper-barge.jsonl",
    channel_list="asterisk-20-pjsip/reconnect-coreshowchannels-answered.jsonl",
    manual="asterisk-20-pjsip/manual-call-from-agent-phone.jsonl",
    unknown=CHAN_SIP.unknown,
)


# --- traces ---------------------------------------------------------------------------------------


def parse(text: str) -> list[tuple[str, str]]:
    """AMI message -> ordered (key, value) pairs."""
    pairs = []
    for line in text.split(EOL):
        key, sep, value = line.partition(": ")
        if sep:
            pairs.append((key, value))
        elif line.endswith(":"):
            pairs.append((line[:-1], ""))
    return pairs


def first(pairs: list[tuple[str, str]], key: str, default: str = "") -> str:
    return next((v for k, v in pairs if k.lower() == key.lower()), default)


@dataclass(frozen=True)
class Record:
    t: float
    out: bool  # sent by the client
    data: str
    pairs: tuple[tuple[str, str], ...]

    def get(self, key: str, default: str = "") -> str:
        return first(list(self.pairs), key, default)

    @property
    def name(self) -> str:
        return self.get("Event") or self.get("Action") or self.get("Response")


@functools.cache
def load(name: str) -> tuple[Record, ...]:
    """A recording, by its path relative to tests/fixtures/ (e.g. `asterisk-20/originate-busy.jsonl`)."""
    records = []
    for line in (FIXTURES / name).read_text().splitlines():
        item = json.loads(line)
        data = item["data"]
        records.append(Record(item["t"], item["dir"] == "out", data, tuple(parse(data))))
    return tuple(records)


def after(records: tuple[Record, ...], pred: Callable[[Record], bool]) -> tuple[Record, tuple[Record, ...]]:
    """The first record matching `pred` and everything after it."""
    for i, rec in enumerate(records):
        if pred(rec):
            return rec, records[i + 1 :]
    raise LookupError("record not found in trace")


@dataclass(frozen=True)
class CallTrace:
    """The identifiers one recorded call used, so a replay can swap them for the live ones."""

    call_id: str
    action_id: str
    dial: str  # Originate Channel header, e.g. SIP/cust-answer/10000001 or PJSIP/8613910000001@trunk
    number: str  # the digits dialled
    timeout_s: float
    caller_num: str
    caller_name: str
    channel: str  # the customer channel Asterisk created

    @classmethod
    def of(cls, records: tuple[Record, ...], call_id: str | None = None) -> CallTrace:
        orig = next(
            r
            for r in records
            if r.out and r.name == "Originate" and (not call_id or r.get("ChannelId") == call_id)
        )
        cid = orig.get("ChannelId")
        m = re.fullmatch(r'"(.*)" <(.*)>', orig.get("CallerID"))
        new = next(
            (r for r in records if not r.out and r.name == "Newchannel" and r.get("Uniqueid") == cid), None
        )
        digits = re.search(r"(\d+)(?:@[^/]*)?$", orig.get("Channel"))
        return cls(
            call_id=cid,
            action_id=orig.get("ActionID"),
            dial=orig.get("Channel"),
            number=digits.group(1) if digits else "",
            timeout_s=int(orig.get("Timeout") or 30000) / 1000,
            caller_num=m.group(2) if m else "",
            caller_name=m.group(1) if m else "",
            channel=new.get("Channel") if new else "",
        )


class Subst:
    """Whole-token replacement of recorded identifiers by live ones."""

    def __init__(self, pairs: dict[str, str] | None = None) -> None:
        self.map: dict[str, str] = {}
        self._re: re.Pattern[str] | None = None
        for old, new in (pairs or {}).items():
            self.add(old, new)

    def add(self, old: str, new: str) -> Subst:
        if old and old != new:
            self.map[old] = new
            self._re = None
        return self

    def apply(self, text: str) -> str:
        if not self.map:
            return text
        if self._re is None:
            alts = "|".join(re.escape(k) for k in sorted(self.map, key=len, reverse=True))
            self._re = re.compile(rf"(?<![\w.])(?:{alts})(?![\w])")
        return self._re.sub(lambda m: self.map[m.group(0)], text)


# --- the PBX state ----------------------------------------------------------------------------------

_SNAPSHOT = (
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
)


@dataclass
class Conn:
    index: int
    writer: asyncio.StreamWriter
    authed: bool = False
    mask: set[str] | None = None  # None = every class ("Events: on"); empty = no events
    silent: bool = False
    closed: bool = False
    sent: Counter[str] = field(default_factory=Counter)  # events written, by name

    def write(self, text: str) -> None:
        if self.closed or self.silent or self.writer.is_closing():
            return
        self.writer.write(text.encode())

    def wants(self, privilege: str) -> bool:
        if not self.authed:
            return False
        if self.mask is None:
            return True
        classes = {c for c in privilege.split(",") if c and c != "all"}
        return classes <= self.mask  # Asterisk: every class of the event must be subscribed


@dataclass
class PeerCall:
    """A customer call placed by a client's Originate."""

    call_id: str
    action_id: str
    conn: Conn
    dial: str
    number: str
    timeout_s: float
    caller_num: str
    caller_name: str
    channel: str
    device: str
    dialstring: str
    context: str
    vars: dict[str, str] = field(default_factory=dict)
    variations: dict[str, str] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    patience: asyncio.Task[None] | None = None
    held: list[str] = field(default_factory=list)  # OriginateResponse held back (`late_responses`)

    def identity(self, trace: CallTrace) -> Subst:
        """Recorded identifiers of `trace` -> this call's."""
        device = trace.channel.rpartition("-")[0] if trace.channel else ""
        return Subst(
            {
                **self.variations,
                trace.call_id: self.call_id,
                trace.action_id: self.action_id,
                trace.dial: self.dial,
                trace.dial.partition("/")[2]: self.dialstring,
                trace.channel: self.channel,
                device: self.device,
                trace.number: self.number,
                trace.caller_num: self.caller_num,
                trace.caller_name: self.caller_name,
            }
        )


class AmiPeer:
    """See the module docstring. `scenarios` maps dialled digits to a trace file name (in `traces`'s
    folder, or `folder/name` relative to tests/fixtures/)."""

    def __init__(
        self,
        scenarios: dict[str, str],
        *,
        traces: TraceSet = CHAN_SIP,
        username: str = "callcenter",
        secret: str = "s3cret-ami",
        speed: float = 20.0,
        dial_template: str = "PJSIP/{number}@trunk",
        agent_template: str = "PJSIP/{extension}",
        dialplan: Dialplan = DEFAULT_DIALPLAN,
        default_scenario: str | None = "",
        variations: dict[str, str] | None = None,
        late_responses: set[str] | None = None,
    ) -> None:
        self.traces = traces
        self.scenarios = {digits: traces.path(name) for digits, name in scenarios.items()}
        self.username, self.secret = username, secret
        self.speed = speed
        self.dial_template, self.agent_template = dial_template, agent_template
        self.dialplan = dialplan
        # Numbers without a scenario: "" = the set's unknown endpoint; None = queued and left to `replay`.
        self.default_scenario = (
            traces.unknown if default_scenario == "" else default_scenario and traces.path(default_scenario)
        )
        # Recorded values replaced in every call replay, e.g. {"NOTSURE": "MACHINE"} for another AMD
        # verdict: a synthesized variation of a recording, for mapping tests.
        self.variations = dict(variations or {})
        # Dialled digits whose answered OriginateResponse is held back until the client has acted on the
        # answer (its Redirect): the order chan_pjsip showed in 4 of 11 answered calls, where the
        # UserEvent came first (asterisk-20-pjsip/README.md), pushed to where a fast client meets it.
        self.late_responses = set(late_responses or ())
        self._dial_re = _template_re(dial_template, "number", r"\d+")
        self._agent_re = _template_re(agent_template, "extension", r"[0-9A-Za-z_]+")
        self.host = "127.0.0.1"
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self.conns: list[Conn] = []
        self.received = bytearray()  # every byte any client sent
        self.actions: list[tuple[int, list[tuple[str, str]]]] = []  # (connection index, headers)
        self.channels: dict[str, dict[str, str]] = {}  # Uniqueid -> snapshot
        self._created: dict[str, float] = {}
        self.calls: dict[str, PeerCall] = {}  # by call id
        self._hangup_listeners: dict[str, list[Callable[[], None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._seq = 0x40
        self._uid_base = int(time.time())
        self.fault: tuple[str, str] | None = None  # (action name, mode), see fail_next
        self.reject_connections = False
        self.shutting_down = False  # every action refused "Asterisk is shutting down" (restart_now)
        # Agent extensions whose phone cannot be reached: a Redirect to them ends in the dialplan's
        # agent-failed UserEvent (Dial's CHANUNAVAIL) and the customer waits again.
        self.unreachable_agents: set[str] = set()
        self.connect_times: list[float] = []
        self.login_times: list[float] = []

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> AmiPeer:
        self._server = await asyncio.start_server(self._client, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for conn in self.conns:
            self._close(conn)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        await asyncio.sleep(0)

    async def __aenter__(self) -> AmiPeer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- control for tests -------------------------------------------------------------------------

    def drop(self) -> None:
        """Close every client connection now, as a crashed network path would."""
        for conn in self.conns:
            self._close(conn, abort=True)

    def go_silent(self) -> None:
        """The open connections stay open but nothing more is written to them (a half-open link)."""
        for conn in self.conns:
            conn.silent = True

    def fail_next(self, action: str, mode: str) -> None:
        """At the next `action`: 'drop_before' (drop, do not execute it), 'drop_unreplied' (execute it,
        drop before any reply leaves), 'silent' (go silent, do not execute it)."""
        self.fault = (action.lower(), mode)

    def actions_named(self, name: str) -> list[list[tuple[str, str]]]:
        return [h for _, h in self.actions if first(h, "Action").lower() == name.lower()]

    def originates_for(self, call_id: str) -> int:
        return sum(first(h, "ChannelId") == call_id for h in self.actions_named("Originate"))

    def replay(self, name: str, call_ids: dict[str, str]) -> asyncio.Task[None]:
        """Play a whole recording's Asterisk side (after the login) for calls the client originated
        with ids `call_ids` (recorded id -> live id); the Originate replies it already had are skipped."""
        records = load(self.traces.path(name))
        live = {first(h, "ChannelId"): first(h, "ActionID") for h in self.actions_named("Originate")}
        subst = Subst(dict(call_ids))
        for rec in records:
            if rec.out and rec.name == "Originate" and rec.get("ChannelId") in call_ids:
                subst.add(rec.get("ActionID"), live[call_ids[rec.get("ChannelId")]])
        body = tuple(r for r in records if not r.out and r.get("Event") and r.name not in _NOISE)
        # A recording in which Asterisk starts refusing every action (a restart): from the first such
        # reply on, the peer refuses the client's actions the same way, and then shuts down.
        refusing = next((r.t for r in records if _SHUTTING_DOWN in r.get("Message")), None)
        return self._spawn(self._replay(body, subst, refusing))

    async def _replay(self, body: tuple[Record, ...], subst: Subst, refusing: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        t0, start = loop.time(), body[0].t
        for rec in body:
            if refusing is not None and rec.t >= refusing and not self.shutting_down:
                await asyncio.sleep(max(0.0, t0 + (refusing - start) / self.speed - loop.time()))
                self.shutting_down = True
            delay = t0 + (rec.t - start) / self.speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._emit(None, subst.apply(rec.data))
        if refusing is not None:
            self.shutting_down = True
            last = body[-1].t
            await self._shut_down(t0 + (last - start) / self.speed, self._restart_times()[1] - last)

    # --- shutdown --------------------------------------------------------------------------------

    def restart_now(self) -> None:
        """`core restart now` while calls ring (`traces.restart`): every ringing call is cut with the
        recorded OriginateResponse Failure Reason 0 and Hangup Cause 0, every later action (Login on a
        new connection too) is refused "Asterisk is shutting down", then `Event: Shutdown` (to sessions
        that subscribed to the system class) and the close, at their recorded distance. `back_up()`
        ends it."""
        records = load(self.traces.restart)
        cut_at, shutdown_at = self._restart_times()
        first_cut = next(r for r in records if r.name == "OriginateResponse" and r.t >= cut_at)
        trace = CallTrace.of(records, first_cut.get("Uniqueid"))
        cut = [
            r
            for r in records
            if not r.out and r.get("Uniqueid") == trace.call_id and r.name in ("OriginateResponse", "Hangup")
        ]
        for call in list(self.calls.values()):
            snap = self.channels.get(call.call_id)
            if snap is None or snap.get("ChannelState") == "6":
                continue  # only ringing calls were recorded being cut
            for task in (call.task, call.patience):
                if task is not None:
                    task.cancel()
            subst = call.identity(trace)
            for rec in cut:
                self._emit(call.conn, subst.apply(rec.data))
        self.shutting_down = True
        loop = asyncio.get_running_loop()
        self._spawn(self._shut_down(loop.time(), shutdown_at - cut_at))

    def back_up(self) -> None:
        """Asterisk is back after a restart: logins and actions are accepted again."""
        self.shutting_down = False

    def _restart_times(self) -> tuple[float, float]:
        """When the restart recording cut the ringing calls, and when the Shutdown event came (its
        read-all twin's clock; that connection opened just before the main one)."""
        cut = next(
            r.t
            for r in load(self.traces.restart)
            if r.name == "OriginateResponse" and r.get("Response") == "Failure" and r.get("Reason") == "0"
        )
        shutdown = next(r.t for r in load(self.traces.shutdown_event) if r.name == "Shutdown")
        return cut, shutdown

    async def _shut_down(self, since: float, after_s: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, since + after_s / self.speed - loop.time()))
        event = next(r for r in load(self.traces.shutdown_event) if r.name == "Shutdown")
        self._emit(None, event.data)
        await asyncio.sleep(0.007 / self.speed)  # the socket closed 7 ms after it
        for conn in self.conns:
            self._close(conn)

    def agent_dials(self, extension: str, number: str) -> None:
        """Agent `extension` dials `number` from its own phone (replays manual-call-from-agent-phone)."""
        self._spawn(self._manual(extension, number))

    # --- connection --------------------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn(len(self.conns), writer)
        self.conns.append(conn)
        self.connect_times.append(time.monotonic())
        if self.reject_connections:
            self._close(conn)
            return
        conn.write(BANNER)
        buf = b""
        try:
            while not conn.closed:
                data = await reader.read(65536)
                if not data:
                    break
                self.received += data
                buf += data
                while b"\r\n\r\n" in buf:
                    raw, buf = buf.split(b"\r\n\r\n", 1)
                    self._action(conn, parse(raw.decode("utf-8", "replace")))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._close(conn)

    def _close(self, conn: Conn, *, abort: bool = False) -> None:
        if conn.closed:
            return
        conn.closed = True
        transport = conn.writer.transport
        if abort:
            transport.abort()
        else:
            transport.close()

    def _reply(self, conn: Conn, action_id: str, *pairs: tuple[str, str]) -> None:
        lines = [f"{k}: {v}" for k, v in (pairs[0], ("ActionID", action_id), *pairs[1:])]
        conn.write(EOL.join(lines) + EOL + EOL)

    # --- actions -----------------------------------------------------------------------------------

    def _action(self, conn: Conn, headers: list[tuple[str, str]]) -> None:
        name = first(headers, "Action").lower()
        aid = first(headers, "ActionID")
        self.actions.append((conn.index, headers))
        if self.fault is not None and self.fault[0] == name:
            _, mode = self.fault
            self.fault = None
            if mode == "drop_before":
                self._close(conn, abort=True)
                return
            if mode == "silent":
                conn.silent = True
                return
            if mode == "drop_unreplied":
                conn.silent = True  # nothing of the reply leaves...
                self._action_ok(conn, name, aid, headers)
                self._close(conn, abort=True)  # ...and the link goes
                return
        if self.shutting_down:
            self._refuse(conn, aid, name)
        elif name == "login":
            self._login(conn, aid, headers)
        elif name == "logoff":
            self._reply(conn, aid, ("Response", "Goodbye"), ("Message", "Thanks for all the fish."))
            self._close(conn)
        elif not conn.authed:
            self._reply(conn, aid, ("Response", "Error"), ("Message", "Authentication Required"))
        else:
            self._action_ok(conn, name, aid, headers)

    def _action_ok(self, conn: Conn, name: str, aid: str, headers: list[tuple[str, str]]) -> None:
        if name == "ping":
            self._reply(
                conn, aid, ("Response", "Success"), ("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}")
            )
        elif name == "originate":
            self._originate(conn, aid, headers)
        elif name == "coreshowchannels":
            self._core_show_channels(conn, aid)
        elif name in ("hangup", "redirect", "setvar"):
            self._channel_action(conn, name, aid, headers)
        else:
            self._reply(
                conn,
                aid,
                ("Response", "Error"),
                (
                    "Message",
                    f"Invalid/unknown command: {first(headers, 'Action')}. "
                    "Use Action: ListCommands to show available commands.",
                ),
            )

    def _refuse(self, conn: Conn, aid: str, name: str) -> None:
        """Asterisk shutting down: the recorded refusal of every action; a Login's connection then
        closes (graceful-restart-login-during-shutdown.jsonl: 0.71 s later, when Asterisk exited)."""
        records = load(self.traces.login_shutdown if name == "login" else self.traces.restart)
        rec = next(r for r in records if _SHUTTING_DOWN in r.get("Message"))
        conn.write(_with(rec.pairs, ActionID=aid))
        if name == "login":

            async def close() -> None:
                await asyncio.sleep((_LOGIN_REFUSED_CLOSE_S - rec.t) / self.speed)
                self._close(conn)

            self._spawn(close())

    def _login(self, conn: Conn, aid: str, headers: list[tuple[str, str]]) -> None:
        self.login_times.append(time.monotonic())
        if first(headers, "Username") != self.username or first(headers, "Secret") != self.secret:
            # Asterisk answers a bad login after a pause, then closes (login-failure.jsonl).
            rec = next(r for r in load(self.traces.login_failure) if r.get("Response") == "Error")
            pause = rec.t / self.speed

            async def refuse() -> None:
                await asyncio.sleep(pause)
                conn.write(Subst({rec.get("ActionID"): aid}).apply(rec.data))
                self._close(conn)

            self._spawn(refuse())
            return
        events = first(headers, "Events", "on").strip().lower()
        if events in ("on", "yes", "true", ""):
            conn.mask = None
        elif events in ("off", "no", "false"):
            conn.mask = set()
        else:
            conn.mask = {c.strip() for c in events.split(",")}
        conn.authed = True
        records = load(self.traces.login)
        ok = next(r for r in records if r.get("Message") == "Authentication accepted")
        conn.write(Subst({ok.get("ActionID"): aid}).apply(ok.data))
        for rec in records:
            if rec.name in _NOISE:
                self._event(rec.data, only=conn)

    # --- calls ---------------------------------------------------------------------------------------

    def _originate(self, conn: Conn, aid: str, headers: list[tuple[str, str]]) -> None:
        sync = first(headers, "Async").lower() != "true"
        if sync:
            # A synchronous Originate: Asterisk answers when the call is placed, and raises no
            # OriginateResponse (with the replay compressed, "when placed" is now).
            self._reply(conn, aid, ("Response", "Success"), ("Message", "Originate successfully queued"))
        channel = first(headers, "Channel")
        context = first(headers, "Context")
        if context == self.dialplan.spy_context:
            self._spawn(self._spy(conn, aid, headers))
            return
        m = self._dial_re.fullmatch(channel)
        number = m.group("number") if m else "0"
        trace_name = self.scenarios.get(number, self.default_scenario)
        if trace_name is None:  # queued, and left to a later `replay`
            if not sync:
                self._reply(conn, aid, ("Response", "Success"), ("Message", "Originate successfully queued"))
            return
        trace = CallTrace.of(load(trace_name))
        cid = re.fullmatch(r'"(.*)" <(.*)>', first(headers, "CallerID"))
        tech, _, rest = channel.partition("/")
        device = f"{tech}/{rest.partition('@')[2] or rest.partition('/')[0]}"
        call = PeerCall(
            call_id=first(headers, "ChannelId") or self._uid(),
            action_id=aid,
            conn=conn,
            dial=channel,
            number=number,
            timeout_s=int(first(headers, "Timeout") or 30000) / 1000,
            caller_num=cid.group(2) if cid else "",
            caller_name=cid.group(1) if cid else "",
            channel=f"{device}-{self._next_seq():08x}",
            device=device,
            dialstring=rest,
            context=context,
            vars=dict(v.split("=", 1) for k, v in headers if k.lower() == "variable" and "=" in v),
            variations=self.variations,
        )
        self.calls[call.call_id] = call
        orig, segment = after(load(trace_name), lambda r: r.out and r.name == "Originate")
        if sync:
            segment = tuple(
                r for r in segment if r.name != "OriginateResponse" and r.get("ActionID") != trace.action_id
            )
        self._play_call(call, segment, call.identity(trace), start=orig.t, shift=trace.timeout_s)

    def _play_call(
        self,
        call: PeerCall,
        records: tuple[Record, ...],
        subst: Subst,
        *,
        start: float,
        shift: float | None = None,
    ) -> None:
        if call.task is not None:
            call.task.cancel()
        if call.patience is not None:
            call.patience.cancel()
        call.task = self._spawn(self._play(call, records, subst, start=start, shift=shift))

    async def _play(
        self,
        call: PeerCall,
        records: tuple[Record, ...],
        subst: Subst,
        *,
        start: float,
        shift: float | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for rec in records:
            if rec.out:
                # The recording shows the client acting here: wait for it (see _channel_action), but a
                # customer nobody talks to hangs up in the end.
                call.patience = self._spawn(self._patience(call))
                return
            if rec.name in _NOISE:
                continue
            if (
                rec.name == "OriginateResponse"
                and rec.get("Response") == "Success"
                and call.number in self.late_responses
            ):
                call.held.append(subst.apply(rec.data))
                continue
            rel = rec.t - start
            real = rel / self.speed
            if shift is not None and rel >= shift - 0.05:
                real = call.timeout_s + (rel - shift) / self.speed  # the ring timeout is the client's
            delay = t0 + real - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._emit(call.conn, subst.apply(rec.data))

    async def _patience(self, call: PeerCall) -> None:
        records = load(self.traces.waiting)
        trace = CallTrace.of(records)
        user_event, tail = after(records, lambda r: r.name == "UserEvent")
        # chan_pjsip may send the OriginateResponse after the UserEvent: the call's own segment had it.
        tail = tuple(r for r in tail if r.name != "OriginateResponse")
        call.task = None
        await self._play(call, tail, call.identity(trace), start=user_event.t, shift=None)

    def _channel_action(self, conn: Conn, name: str, aid: str, headers: list[tuple[str, str]]) -> None:
        target = first(headers, "Channel")
        snap = next(
            (s for s in self.channels.values() if target in (s.get("Channel"), s.get("Uniqueid"))), None
        )
        call = self.calls.get(snap["Uniqueid"]) if snap else None
        if snap is None:
            message = "Channel specified does not exist" if name == "redirect" else "No such channel"
            self._reply(conn, aid, ("Response", "Error"), ("Message", message))
            return
        if name == "setvar":
            if call is not None:
                call.vars[first(headers, "Variable")] = first(headers, "Value")
            self._reply(conn, aid, ("Response", "Success"), ("Message", "Variable Set"))
            return
        if call is None:  # a channel we did not originate: just acknowledge
            self._reply(
                conn,
                aid,
                ("Response", "Success"),
                ("Message", "Channel Hungup" if name == "hangup" else "Redirect successful"),
            )
            return
        call.conn = conn
        if name == "hangup":
            self._hangup(call, snap, aid)
        else:
            self._redirect(call, snap, aid, first(headers, "Context"), first(headers, "Exten"))
        held, call.held = call.held, []
        for text in held:  # the originate's result, after the client acted on the answer
            self._emit(call.conn, text)

    def _hangup(self, call: PeerCall, snap: dict[str, str], aid: str) -> None:
        if snap.get("ChannelState") != "6":
            records = load(self.traces.hangup_ringing)
            hup, tail = after(records, lambda r: r.out and r.name == "Hangup")
            subst = call.identity(CallTrace.of(records)).add(hup.get("ActionID"), aid)
            self._play_call(call, tail, subst, start=hup.t)
        elif snap.get("BridgeId"):
            records = load(self.traces.agent_bridged)
            trace = CallTrace.of(records)
            # The recorded end of the bridge: BridgeLeave (read = all), or the customer's first hang-up
            # event where the user's filter leaves BridgeLeave out (chan_pjsip set).
            leave, tail = after(
                records,
                lambda r: (
                    r.name == "BridgeLeave"
                    or (r.name in ("HangupRequest", "Hangup") and r.get("Uniqueid") == trace.call_id)
                ),
            )
            subst = self._agent_identity(call, records, snap)
            ok = next(r for r in load(self.traces.hangup_ringing) if r.get("Message") == "Channel Hungup")
            call.conn.write(Subst({ok.get("ActionID"): aid}).apply(ok.data))
            self._play_call(call, (leave, *tail), subst, start=leave.t - 0.001)
        else:
            records = load(self.traces.hangup_answered)
            hup, tail = after(records, lambda r: r.out and r.name == "Hangup")
            subst = call.identity(CallTrace.of(records)).add(hup.get("ActionID"), aid)
            self._play_call(call, tail, subst, start=hup.t)

    def _redirect(self, call: PeerCall, snap: dict[str, str], aid: str, context: str, exten: str) -> None:
        dp = self.dialplan
        if snap.get("ChannelState") != "6":
            self._reply(call.conn, aid, ("Response", "Error"), ("Message", "Channel is not up"))
            return
        if context == dp.agent_connect_context and exten in self.unreachable_agents:
            if self.traces.agent_unavailable:
                self._replay_redirect(call, self.traces.agent_unavailable, aid, exten)
            else:
                self._reply(call.conn, aid, ("Response", "Success"), ("Message", "Redirect successful"))
                self._spawn(self._agent_unreachable(call, exten))
        elif context == dp.agent_connect_context:
            records = load(self.traces.agent_bridged)
            redirect, tail = after(records, lambda r: r.out and r.name == "Redirect")
            subst = self._agent_identity(call, records, snap, extension=exten)
            subst.add(redirect.get("ActionID"), aid)
            self._play_call(call, tail, subst, start=redirect.t)
        elif context == dp.abandon_context and self.traces.abandon_message:
            self._replay_redirect(call, self.traces.abandon_message, aid, exten)
        elif context == dp.abandon_context:
            self._reply(call.conn, aid, ("Response", "Success"), ("Message", "Redirect successful"))
            sound = call.vars.get(dp.sound_var, "")
            if call.task is not None:
                call.task.cancel()
            if call.patience is not None:
                call.patience.cancel()
            call.task = self._spawn(self._abandon_message(call, context, exten, sound))
        else:
            self._reply(call.conn, aid, ("Response", "Success"), ("Message", "Redirect successful"))

    def _replay_redirect(self, call: PeerCall, name: str, aid: str, exten: str) -> None:
        """Play what a recording shows after its client's Redirect (its reply included), as this call's:
        the agent-failed UserEvent and the customer's later hang-up, or the abandon message's end."""
        records = load(name)
        redirect, tail = after(records, lambda r: r.out and r.name == "Redirect")
        subst = call.identity(CallTrace.of(records)).add(redirect.get("ActionID"), aid)
        subst.add(redirect.get("Exten"), exten)
        self._play_call(call, tail, subst, start=redirect.t)

    def _agent_identity(
        self, call: PeerCall, records: tuple[Record, ...], snap: dict[str, str], extension: str | None = None
    ) -> Subst:
        """Identity of `call` plus its agent leg (recorded: the first leg whose Linkedid is the call)."""
        trace = CallTrace.of(records)
        subst = call.identity(trace)
        leg = next(
            r
            for r in records
            if r.name == "Newchannel"
            and r.get("Linkedid") == trace.call_id
            and r.get("Uniqueid") != trace.call_id
        )
        # BridgeCreate is not in the chan_pjsip set (the user's filter); BridgeEnter names the bridge too.
        bridge = next(r.get("BridgeUniqueid") for r in records if r.name in ("BridgeCreate", "BridgeEnter"))
        redirect = next(r for r in records if r.out and r.name == "Redirect")
        live_leg = next(
            (
                s
                for s in self.channels.values()
                if s.get("Linkedid") == call.call_id and s["Uniqueid"] != call.call_id
            ),
            None,
        )
        ext = extension or (live_leg and _endpoint(live_leg["Channel"])) or "1001"
        agent_device = self.agent_template.format(extension=ext)
        subst.add(
            leg.get("Channel"),
            live_leg["Channel"] if live_leg and not extension else f"{agent_device}-{self._next_seq():08x}",
        )
        subst.add(leg.get("Uniqueid"), live_leg["Uniqueid"] if live_leg and not extension else self._uid())
        subst.add(bridge, snap.get("BridgeId") or str(uuid.uuid4()))
        old_ext = redirect.get("Exten")
        subst.add(leg.get("Channel").rpartition("-")[0], agent_device)
        subst.add(old_ext, ext)
        return subst

    async def _agent_unreachable(self, call: PeerCall, exten: str) -> None:
        # Synthesized from the recorded CallCenterAnswered UserEvent: the same channel, now in the agent
        # connect context, raising the agent-failed UserEvent after Dial gave up at once.
        records = load(self.traces.waiting)
        trace = CallTrace.of(records)
        user_event = next(r for r in records if r.name == "UserEvent")
        await asyncio.sleep(0.02)
        failed = _with(
            user_event.pairs,
            Context=self.dialplan.agent_connect_context,
            Exten=exten,
            Priority="3",
            UserEvent=self.dialplan.agent_failed_event,
            Extension=exten,
            DialStatus="CHANUNAVAIL",
        )
        self._emit(call.conn, call.identity(trace).apply(failed))

    async def _abandon_message(self, call: PeerCall, context: str, exten: str, sound: str) -> None:
        # Synthesized: a Newexten running Playback, then the recorded customer Hangup moved to our context.
        records = load(self.traces.waiting)
        trace = CallTrace.of(records)
        subst = call.identity(trace)
        hangup = next(r for r in records if r.name == "Hangup" and r.get("Uniqueid") == trace.call_id)
        newexten = next(
            r
            for r in records
            if r.name == "Newexten"
            and r.get("Uniqueid") == trace.call_id
            and r.get("Context") == self.dialplan.answered_context
        )
        play = _with(
            newexten.pairs,
            Context=context,
            Exten=exten,
            Priority="2",
            Extension=exten,
            Application="Playback",
            AppData=sound,
        )
        self._emit(call.conn, subst.apply(play))
        await asyncio.sleep(3.0 / self.speed)  # the message lasts about 3 s
        end = _with(hangup.pairs, Context=context, Exten=exten, Priority="3")
        self._emit(call.conn, subst.apply(end))

    # --- spy and manual calls -------------------------------------------------------------------

    async def _spy(self, conn: Conn, aid: str, headers: list[tuple[str, str]]) -> None:
        records = load(self.traces.spy)
        # The first spy of the recording: into the ChanSpy application (chan_sip set) or, as the driver
        # does, into the spy context (chan_pjsip set).
        orig, rest = after(
            records,
            lambda r: (
                r.out
                and r.name == "Originate"
                and (r.get("Application") == "ChanSpy" or r.get("Context") == self.dialplan.spy_context)
            ),
        )
        spy_id, old_aid = orig.get("ChannelId"), orig.get("ActionID")
        old_dev = orig.get("Channel")  # SIP/1002, PJSIP/1009
        old_cid = re.fullmatch(r'"(.*)" <(.*)>', orig.get("CallerID"))
        mine = tuple(
            r for r in rest if not r.out and any(x in r.data for x in (spy_id, old_aid, old_dev + "\r\n"))
        )
        start_idx = next(i for i, r in enumerate(mine) if r.name == "ChanSpyStart")
        before, later = mine[: start_idx + 1], mine[start_idx + 1 :]
        spy_rec = mine[start_idx]
        variables = dict(v.split("=", 1) for k, v in headers if k.lower() == "variable" and "=" in v)
        spied_name = variables.get(self.dialplan.spy_channel_var, "")
        spied = next((s for s in self.channels.values() if s.get("Channel") == spied_name), None)
        new_id = first(headers, "ChannelId") or self._uid()
        device = first(headers, "Channel")
        sup_ext = _endpoint(device + "-x") or "1002"
        cid = re.fullmatch(r'"(.*)" <(.*)>', first(headers, "CallerID"))
        subst = Subst(
            {
                spy_id: new_id,
                old_aid: aid,
                spy_rec.get("SpyerChannel"): f"{device}-{self._next_seq():08x}",
                old_dev: device,
                old_dev.partition("/")[2]: sup_ext,
                old_cid.group(1) if old_cid else "Supervisor": cid.group(1) if cid else "Supervisor",
            }
        )
        if spied is not None:
            subst.add(spy_rec.get("SpyeeChannel"), spied["Channel"])
            subst.add(spy_rec.get("SpyeeUniqueid"), spied["Uniqueid"])
            subst.add(spy_rec.get("SpyeeLinkedid"), spied["Linkedid"])
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for rec in before:
            if rec.name == "ChanSpyStart" and spied is None:
                return  # nothing to spy on: ChanSpy waits, silently
            delay = t0 + (rec.t - orig.t) / self.speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            data = rec.data
            if rec.name == "OriginateResponse":  # we originate into a context, not the application
                data = _with(
                    rec.pairs,
                    Application=None,
                    Data=None,
                    Context=first(headers, "Context"),
                    Exten=first(headers, "Exten"),
                )
            self._emit(conn, subst.apply(data))
        assert spied is not None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def spied_hung_up() -> None:
            if not done.done():
                done.set_result(None)

        self._hangup_listeners.setdefault(spied["Uniqueid"], []).append(spied_hung_up)
        await done
        t1 = loop.time()
        for rec in later:
            delay = t1 + (rec.t - later[0].t) / self.speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._emit(conn, subst.apply(rec.data))

    async def _manual(self, extension: str, number: str) -> None:
        records = load(self.traces.manual)
        body = tuple(r for r in records if not r.out and r.t > 0.01 and r.name not in _NOISE)
        news = [r for r in body if r.name == "Newchannel"]
        agent, customer = news[0], news[1]
        # BridgeCreate and DialBegin are not in the chan_pjsip set (the user's filter).
        bridge = next(r.get("BridgeUniqueid") for r in body if r.name in ("BridgeCreate", "BridgeEnter"))
        dial = next((r.get("DialString") for r in body if r.name == "DialBegin"), "")
        agent_device = self.agent_template.format(extension=extension)
        trunk = self.dial_template.format(number=number)
        tech, _, rest = trunk.partition("/")
        trunk_device = f"{tech}/{rest.partition('@')[2] or rest.partition('/')[0]}"
        old_ext = agent.get("CallerIDNum")
        subst = Subst(
            {
                agent.get("Channel"): f"{agent_device}-{self._next_seq():08x}",
                agent.get("Uniqueid"): self._uid(),
                customer.get("Channel"): f"{trunk_device}-{self._next_seq():08x}",
                customer.get("Uniqueid"): self._uid(),
                agent.get("Exten"): number,
                old_ext: extension,
                **({dial: rest} if dial else {}),
                customer.get("Channel").rpartition("-")[0]: trunk_device,
                agent.get("Channel").rpartition("-")[0]: agent_device,
                bridge: str(uuid.uuid4()),
            }
        )
        loop = asyncio.get_running_loop()
        t0, start = loop.time(), body[0].t
        for rec in body:
            delay = t0 + (rec.t - start) / self.speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._emit(None, subst.apply(rec.data))

    # --- CoreShowChannels ------------------------------------------------------------------------------

    def _core_show_channels(self, conn: Conn, aid: str) -> None:
        records = load(self.traces.channel_list)
        shape = next(r for r in records if r.name == "CoreShowChannel")
        self._reply(
            conn, aid, ("Response", "Success"), ("EventList", "start"), ("Message", "Channels will follow")
        )
        now = time.monotonic()
        for uid, snap in self.channels.items():
            age = int(now - self._created.get(uid, now))
            values = {k: snap.get(k, "") for k in _SNAPSHOT}
            values.update(
                ActionID=aid,
                Application=snap.get("Application", ""),
                ApplicationData=snap.get("ApplicationData", ""),
                Duration=f"{age // 3600:02d}:{age // 60 % 60:02d}:{age % 60:02d}",
                BridgeId=snap.get("BridgeId", ""),
            )
            conn.write(_with(shape.pairs, **values))
        self._reply(
            conn,
            aid,
            ("Event", "CoreShowChannelsComplete"),
            ("EventList", "Complete"),
            ("ListItems", str(len(self.channels))),
        )

    # --- emitting ----------------------------------------------------------------------------------------

    def _emit(self, conn: Conn | None, text: str) -> None:
        """Send one replayed message: a response to the client that asked, an event to every session
        subscribed to its class; events also update the channel table."""
        pairs = parse(text)
        if pairs and pairs[0][0] == "Response":
            if conn is not None:
                conn.write(text)
            return
        self._track(pairs)
        privilege = first(pairs, "Privilege")
        name = first(pairs, "Event")
        for c in self.conns:
            if c.wants(privilege) and not c.closed:
                c.sent[name] += 1
                c.write(text)

    def _event(self, text: str, *, only: Conn) -> None:
        if only.wants(first(parse(text), "Privilege")):
            only.write(text)

    def _track(self, pairs: list[tuple[str, str]]) -> None:
        event = first(pairs, "Event")
        uid = first(pairs, "Uniqueid")
        if not uid or not first(pairs, "Channel"):
            return
        if event == "Hangup":
            self.channels.pop(uid, None)
            for listener in self._hangup_listeners.pop(uid, []):
                listener()
            return
        snap = self.channels.get(uid)
        if snap is None:
            if event != "Newchannel":
                return
            snap = self.channels[uid] = {}
            self._created[uid] = time.monotonic()
        for key in _SNAPSHOT:
            if any(k.lower() == key.lower() for k, _ in pairs):
                snap[key] = first(pairs, key)
        if event == "Newexten":
            snap["Application"], snap["ApplicationData"] = (
                first(pairs, "Application"),
                first(pairs, "AppData"),
            )
        elif event == "DialBegin":
            snap["Application"], snap["ApplicationData"] = "Dial", first(pairs, "DialString")
        elif event == "BridgeEnter":
            snap["BridgeId"] = first(pairs, "BridgeUniqueid")
        elif event == "BridgeLeave":
            snap["BridgeId"] = ""

    # --- helpers -----------------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _uid(self) -> str:
        return f"{self._uid_base}.{self._next_seq()}"


def _template_re(template: str, name: str, pattern: str) -> re.Pattern[str]:
    head, _, tail = template.partition("{" + name + "}")
    return re.compile(re.escape(head) + f"(?P<{name}>{pattern})" + re.escape(tail))


def _endpoint(channel: str) -> str:
    return channel.partition("/")[2].rpartition("-")[0]


def _with(pairs: tuple[tuple[str, str], ...] | list[tuple[str, str]], **values: str | None) -> str:
    """A recorded message with some header values replaced (None drops the header; new keys are
    appended)."""
    out, seen = [], set()
    for key, value in pairs:
        if key in values:
            seen.add(key)
            replaced = values[key]
            if replaced is None:
                continue
            value = replaced
        out.append(f"{key}: {value}")
    out += [f"{k}: {v}" for k, v in values.items() if k not in seen and v is not None]
    return EOL.join(out) + EOL + EOL
