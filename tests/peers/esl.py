"""A FreeSWITCH stand-in for tests: a real ESL server on 127.0.0.1 that answers by replaying the
FreeSWITCH side of the recorded conversations in `TRACE_DIR` (read at run time), time-compressed.

What is recorded and what is made up
------------------------------------
- Replayed as recorded (only ids substituted: Unique-ID / origination_uuid, Job-UUID, cc_call_id,
  the agent leg's and the supervisor leg's UUIDs, the dialled number and extensions in the headers
  that carry them, Content-Length recomputed): every `in` message after an `out` command of the
  trace whose scenario the dialled number selects: auth, `event plain`, `bgapi originate` for busy,
  503, unreachable, no response, no answer, answered (up to the park), the agent bridge after
  `uuid_transfer`, the customer's hang-up while waiting (answered-then-abandoned), `uuid_kill` while
  ringing, the supervisor's `&eavesdrop` leg and its end, `api status` / `api version`.
- Timing: trace times multiplied by `time_scale`; `originate_timeout` stretches the no-answer ring
  (the trace used 6 s); where the trace shows a client command (uuid_transfer after the park,
  uuid_kill while ringing) the replay waits for that command.
- Synthesized (no FreeSWITCH trace has them), always built from recorded event shapes:
  * `show channels as json`: rows in the recorded row shape, filled from the live channel table that
    the replayed events maintain (a channel exists from its first event to HANGUP_COMPLETE);
  * a hang-up ordered by the controller on an answered call (`uuid_kill`, or the abandon message's
    end): the answered-then-abandoned hang-up events with `sip_hangup_disposition=send_bye`;
  * the abandon message (`uuid_transfer <id> abandon_<sound>`): `abandon_s` of playback, then that
    hang-up;
  * the AMD verdict (`wait_amd`): the recorded `callcenter::answered` CUSTOM event plus a `cc_amd`
    header (`amd_verdicts[number]`, default NOTSURE, as Asterisk reported for the same SIPp customer);
  * a call dialled by hand from an agent phone (`agent_dials`): the recorded agent-bridge segment of
    originate-answered-agent-bridged with the roles swapped (the bridging A-leg becomes the agent's
    inbound leg, the B-leg becomes the customer), preceded by a CUSTOM `callcenter::manual` event
    made from the recorded `callcenter::answered` one (headers `cc_agent`, `cc_number`), as the
    shipped `agents` dialplan context fires it;
  * a transfer to an agent in `unreachable_agents`: a CUSTOM `callcenter::agent_failed` made from the
    recorded `callcenter::answered` one (headers `cc_agent`, `cc_status`), as the shipped `agent`
    extension fires it when the bridge fails; the customer stays parked.

Fault injection: `drop()` (abort every client connection), `go_silent()` / `resume()` (read and
record commands, send nothing), `hold_replies()` / `release_replies()` (answer late, in order),
`drop_on_command` (carry out the next matching command, then drop instead of replying),
`refuse_connections` (accept and close at once). The fake switch keeps running across connections,
as FreeSWITCH does: calls go on while the controller is away. `replay_file(name)` replays a whole
recording verbatim instead (the burst), only the Job-UUIDs swapped for the client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import re
import uuid
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TRACE_DIR = FIXTURES / "freeswitch"
# The fault recordings (freeswitch-faults/README.md), asked for as "freeswitch-faults/<file>".
FAULTS_DIR = FIXTURES / "freeswitch-faults"

DEFAULT_PASSWORD = "ClueCon-test"
DISCONNECT_BODY = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"

# Dialled number -> scenario; the numbers are the ones the recordings dialled.
DEFAULT_NUMBERS = {
    "10000001": "answer",
    "10000002": "busy",
    "10000003": "no_answer",
    "10000004": "congestion",
    "10000005": "unreachable",
    "10000006": "abandon",
    "10000007": "no_answer",
    "10000008": "answer",
    "10000009": "no_response",
    "10000010": "circuit_congestion",
    "10000011": "answer_race",
}
SCENARIO_TRACES = {
    "answer": "originate-answered-agent-bridged",
    "busy": "originate-busy",
    "no_answer": "originate-no-answer",
    "congestion": "originate-503-congestion",
    "unreachable": "originate-unreachable",
    "abandon": "answered-then-abandoned",
    "no_response": "originate-no-response",
    "circuit_congestion": "originate-503-congestion",
}
SHUTDOWN_TRACE = "freeswitch-faults/graceful-shutdown-while-ringing"
SHUTDOWN_IDLE_TRACE = "freeswitch-faults/graceful-shutdown-idle-keepalive"
THROTTLE_TRACE = "freeswitch-faults/session-rate-throttle"
# Scenarios played from a fault recording with `_Player`: the client's commands are its cues.
RECORDED_CALLS = {
    # answers; the transfer sent at CHANNEL_ANSWER races the originate: -ERR ORIGINATOR_CANCEL, then bridged
    "answer_race": "freeswitch-faults/early-transfer-originator-cancel",
}
# Synthesized variation: no recording has Q.850 34. The 503 recording with the cause FreeSWITCH reports
# when the far end's 503 carries `Reason: Q.850;cause=34` (or a TDM gateway runs out of circuits).
_CIRCUIT_CONGESTION = {
    "variable_hangup_cause_q850": "34",
    "variable_sip_term_cause": "34",
}
# Headers that carry a dialled number or an extension (rewritten by value, digit-bounded).
_NUMBER_HEADERS = frozenset(
    {
        "Caller-Destination-Number",
        "Caller-Callee-ID-Number",
        "Caller-Caller-ID-Number",
        "Caller-ANI",
        "Caller-RDNIS",
        "Caller-Orig-Caller-ID-Number",
        "Channel-Name",
        "Caller-Channel-Name",
        "Other-Leg-Destination-Number",
        "Other-Leg-Caller-ID-Number",
        "Other-Leg-Callee-ID-Number",
        "Other-Leg-Channel-Name",
        "Other-Leg-RDNIS",
        "Application-Data",
        "variable_cc_agent",
        "cc_agent",
        "variable_sip_to_user",
        "variable_sip_req_uri",
        "variable_sip_destination_url",
        "variable_channel_name",
        "variable_dialed_user",
        "variable_destination_number",
    }
)
# The keys of a `show channels as json` row, in FreeSWITCH 1.10's order (see the eavesdrop trace).
_ROW_KEYS = tuple(
    [
        "uuid",
        "direction",
        "created",
        "created_epoch",
        "name",
        "state",
        "cid_name",
        "cid_num",
        "ip_addr",
        "dest",
        "application",
        "application_data",
        "dialplan",
        "context",
        "read_codec",
        "read_rate",
        "read_bit_rate",
        "write_codec",
        "write_rate",
        "write_bit_rate",
        "secure",
        "hostname",
        "presence_id",
        "presence_data",
        "accountcode",
        "callstate",
        "callee_name",
        "callee_num",
        "callee_direction",
        "call_uuid",
        "sent_callee_name",
        "sent_callee_num",
        "initial_cid_name",
        "initial_cid_num",
        "initial_ip_addr",
        "initial_dest",
        "initial_dialplan",
        "initial_context",
    ]
)


# --- traces -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Msg:
    t: float
    out: bool
    data: str


@dataclass(frozen=True)
class Ev:
    """One recorded event: time, body (the event-plain text) and a few parsed fields."""

    t: float
    index: int
    body: str
    name: str
    uid: str
    headers: dict[str, str]


class Trace:
    def __init__(self, name: str) -> None:
        self.name = name
        # "originate-busy" is read from freeswitch/, "freeswitch-faults/session-rate-throttle" from there.
        path = (FIXTURES if "/" in name else TRACE_DIR) / f"{name}.jsonl"
        self.msgs = [
            Msg(r["t"], r["dir"] == "out", r["data"])
            for r in (json.loads(line) for line in path.read_text().splitlines() if line.strip())
        ]

    def out_index(self, prefix: str, nth: int = 0) -> int:
        hits = [i for i, m in enumerate(self.msgs) if m.out and m.data.startswith(prefix)]
        return hits[nth]

    def reply_after(self, index: int) -> str:
        """The body of the api/response (or the reply text) that answered the `out` at index."""
        for m in self.msgs[index + 1 :]:
            if m.out:
                break
            head, _, body = m.data.partition("\n\n")
            if "Content-Type: api/response" in head:
                return body
            if "Content-Type: command/reply" in head:
                return _header(head, "Reply-Text") or ""
        raise LookupError(f"{self.name}: no reply after message {index}")

    def events(self, start: int = 0, end: int | None = None) -> list[Ev]:
        """Events among messages start..end (indexes, end exclusive)."""
        out = []
        for i, m in enumerate(self.msgs[start:end], start):
            if m.out or "Content-Type: text/event-plain" not in m.data.split("\n\n", 1)[0]:
                continue
            body = m.data.split("\n\n", 1)[1]
            headers = _parse_headers(body.split("\n\n", 1)[0])
            out.append(Ev(m.t, i, body, headers.get("Event-Name", ""), headers.get("Unique-ID", ""), headers))
        return out

    def originate(self, nth: int = 0) -> dict[str, str]:
        """Ids of the nth `bgapi originate` of the trace: uuid, cc_call_id, job, number."""
        m = self.msgs[self.out_index("bgapi originate", nth)]
        parsed = parse_originate(m.data.split("\n", 1)[0].removeprefix("bgapi "))
        job = _header(m.data, "Job-UUID") or ""
        return {
            "uuid": parsed.variables.get("origination_uuid", ""),
            "cc_call_id": parsed.variables.get("cc_call_id", ""),
            "job": job,
            "number": parsed.number,
        }


@functools.cache
def trace(name: str) -> Trace:
    return Trace(name)


def _parse_headers(block: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split("\n"):
        k, sep, v = line.partition(": ")
        if sep:
            headers[k] = unquote(v)
    return headers


def _header(block: str, name: str) -> str | None:
    m = re.search(rf"^{re.escape(name)}: (.*)$", block, re.M)
    return m.group(1) if m else None


# --- originate parsing ----------------------------------------------------------------------


@dataclass
class Originate:
    variables: dict[str, str]
    dial: str
    number: str
    target: str  # extension, or "&app(args)"
    context: str


def parse_originate(command: str) -> Originate:
    """`originate {a=b,...}dial target [XML context]` as FreeSWITCH splits it."""
    rest = command.removeprefix("originate ").strip()
    variables: dict[str, str] = {}
    if rest.startswith("{"):
        inner, _, rest = rest[1:].partition("}")
        for part in inner.split(","):
            k, _, v = part.partition("=")
            variables[k] = v.strip("'")
    # A quoted value may hold spaces: split the remainder outside single quotes.
    args = re.findall(r"(?:'[^']*'|\S)+", rest)
    dial = args[0] if args else ""
    target = args[1] if len(args) > 1 else ""
    context = args[3] if len(args) > 3 else ""
    m = re.search(r"(\+?\d+)(?:@[^/]*)?$", dial)
    return Originate(variables, dial, m.group(1).lstrip("+") if m else "", target, context)


# --- event building ---------------------------------------------------------------------------


def frame_event(body: str) -> bytes:
    data = body.encode()
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(data) + data


def rebuild(
    body: str,
    subs: dict[str, str],
    numbers: dict[str, str] | None = None,
    set_headers: dict[str, str] | None = None,
) -> str:
    """Substitute ids everywhere, numbers/extensions in the headers that carry them, set headers,
    and recompute the inner Content-Length (BACKGROUND_JOB)."""
    if subs:
        pattern = re.compile("|".join(re.escape(k) for k in sorted(subs, key=len, reverse=True)))
        body = pattern.sub(lambda m: subs[m.group(0)], body)
    head, sep, inner = body.partition("\n\n")
    lines = head.split("\n")
    if numbers:
        num_re = re.compile(
            r"(?<![0-9])("
            + "|".join(re.escape(k) for k in sorted(numbers, key=len, reverse=True))
            + r")(?![0-9])"
        )
        for i, line in enumerate(lines):
            name, s, value = line.partition(": ")
            if s and name in _NUMBER_HEADERS:
                lines[i] = f"{name}: {num_re.sub(lambda m: numbers[m.group(1)], value)}"
    for name, value in (set_headers or {}).items():
        encoded = quote(value, safe="/@+-_.")
        found = False
        for i, line in enumerate(lines):
            if line.startswith(name + ": "):
                lines[i] = f"{name}: {encoded}"
                found = True
        if not found:
            lines.append(f"{name}: {encoded}")
    if inner:
        # A job result (BACKGROUND_JOB) follows the header block; its length is the inner Content-Length.
        lines = [ln for ln in lines if not ln.startswith("Content-Length: ")]
        lines.append(f"Content-Length: {len(inner.encode())}")
    return "\n".join(lines) + (sep or "\n\n") + inner


# --- the fake switch ---------------------------------------------------------------------------


@dataclass
class FakeCall:
    uuid: str
    job: str
    cc_call_id: str
    number: str
    variables: dict[str, str]
    target: str
    commands: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    deferred: list[str] = field(default_factory=list)  # arrived while the replay could not act on it
    task: asyncio.Task[None] | None = None
    agent_uuid: str | None = None
    agent_extension: str | None = None


class _Player:
    """Replays one recorded connection (`EslPeer.play_session`) with the client standing in for the
    recorded client: each recorded `bgapi originate` waits for the client's next originate (and maps the
    recorded origination_uuid and Job-UUID to the client's), each recorded `api uuid_transfer` /
    `api uuid_kill` waits for the client's same command; the events in between are played with their
    recorded spacing (times `time_scale`) from the moment the client acted. The client's own keepalive,
    subscription and channel list commands are answered live; the recorded `show channels` reply with
    rows, if the file has one, is served for them. A `text/disconnect-notice` that FreeSWITCH sent on its
    own (the shutdown files) is sent, and the connections closed."""

    def __init__(self, peer: EslPeer, t: Trace, subs: dict[str, str] | None = None) -> None:
        self.peer = peer
        self.trace = t
        self.subs = dict(subs or {})
        self.originates: asyncio.Queue[tuple[str, str]] = asyncio.Queue()  # (uuid, Job-UUID) sent
        self.commands: asyncio.Queue[str] = asyncio.Queue()  # `uuid_transfer ...` / `uuid_kill ...` sent
        self.early: list[str] = []  # commands the client sent before the recording reached them
        self.done = False
        self.rows = ""
        for i, m in enumerate(t.msgs):
            if m.out and m.data.startswith("api show channels"):
                reply = t.reply_after(i)
                if '"rows"' in reply:
                    self.rows = reply

    def show_channels(self) -> str:
        text = self.rows
        for old, new in self.subs.items():
            text = text.replace(old, new)
        return text

    async def _command(self, want: str) -> None:
        """Wait for the client's command `want`; others it sent meanwhile wait for their own turn."""
        if want in self.early:
            self.early.remove(want)
            return
        while True:
            got = (await self.commands.get()).strip()
            if got == want:
                return
            self.early.append(got)

    async def run(self) -> None:
        peer, t = self.peer, self.trace
        loop = asyncio.get_running_loop()
        first = (
            t.out_index("bgapi originate")
            if any(m.out and m.data.startswith("bgapi originate") for m in t.msgs)
            else next(i for i, m in enumerate(t.msgs) if m.out and m.data.startswith("api uuid_"))
        )
        origin, base = loop.time(), t.msgs[first].t
        for index in range(first, len(t.msgs)):
            m = t.msgs[index]
            line = m.data.split("\n", 1)[0]
            if m.out:
                if line.startswith("bgapi originate"):
                    ids = t.originate(
                        sum(1 for x in t.msgs[:index] if x.out and x.data.startswith("bgapi orig"))
                    )
                    uid, job = await self.originates.get()
                    self.subs.update({ids["uuid"]: uid, ids["job"]: job})
                    if ids["cc_call_id"]:
                        self.subs[ids["cc_call_id"]] = uid
                elif line.startswith(("api uuid_transfer", "api uuid_kill")):
                    await self._command(rebuild(line, self.subs).removeprefix("api ").strip())
                elif line == "exit":
                    break
                else:
                    continue  # keepalive, subscriptions, channel lists: answered live
                origin, base = loop.time(), m.t
                continue
            head, _, body = m.data.partition("\n\n")
            if "Content-Type: text/event-plain" not in head and "text/disconnect-notice" not in head:
                continue  # a reply: the live session sends its own
            await asyncio.sleep(max(0.0, origin + (m.t - base) * peer.time_scale - loop.time()))
            if "text/disconnect-notice" in head:
                peer.disconnect_all(body)  # FreeSWITCH's own (after an `exit` the loop ended before)
                break
            peer.emit(rebuild(body, self.subs))
        self.done = True


class _Session:
    def __init__(self, peer: EslPeer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.peer = peer
        self.reader = reader
        self.writer = writer
        self.authed = False
        self.all_events = False
        self.events: set[str] = set()
        self.subclasses: set[str] = set()
        self.received = bytearray()
        self.held: list[bytes] = []

    def write(self, data: bytes) -> None:
        if self.peer.silent or self.writer.transport.is_closing():
            return
        if self.peer.holding:
            self.held.append(data)
            return
        self.writer.write(data)

    def release(self) -> None:
        held, self.held = self.held, []
        for data in held:
            self.write(data)

    def reply(self, text: str, extra: str = "") -> None:
        self.write(f"Content-Type: command/reply\nReply-Text: {text}\n{extra}\n".encode())

    def api(self, body: str) -> None:
        data = body.encode()
        self.write(b"Content-Type: api/response\nContent-Length: %d\n\n" % len(data) + data)

    def wants(self, name: str, subclass: str) -> bool:
        if not self.authed:
            return False
        if self.all_events:
            return True
        if name == "CUSTOM":
            return "CUSTOM" in self.events and (not self.subclasses or subclass in self.subclasses)
        return name in self.events

    def subscribe(self, spec: str) -> None:
        tokens = spec.split()
        if tokens and tokens[0] in ("plain", "json", "xml"):
            tokens = tokens[1:]
        for tok in tokens:
            if tok == "ALL":
                self.all_events = True
            elif "::" in tok:
                self.subclasses.add(tok)
            else:
                self.events.add(tok)

    def abort(self) -> None:
        self.writer.transport.abort()

    async def run(self) -> None:
        peer = self.peer
        if peer.refuse_connections:
            self.abort()
            return
        self.write(b"Content-Type: auth/request\n\n")
        try:
            while True:
                data = await self.reader.readuntil(b"\n\n")
                self.received += data
                peer.received += data
                lines = data.decode("utf-8", "replace").rstrip("\n").split("\n")
                await self.handle(lines[0], _parse_headers("\n".join(lines[1:])))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(Exception):
                self.writer.close()

    async def handle(self, line: str, headers: dict[str, str]) -> None:
        peer = self.peer
        peer.commands.append(line)
        if not self.authed:
            if line == f"auth {peer.password}":
                self.authed = True
                self.reply("+OK accepted")
            else:
                # Replayed as recorded: `-ERR invalid`, the disconnect notice, then the close.
                failure = trace("auth-failure")
                for m in failure.msgs[failure.out_index("auth ") + 1 :]:
                    if not m.out:
                        self.write(m.data.encode())
                await self.writer.drain()
                self.writer.close()
            return
        if peer.drop_on_command is not None and peer.drop_on_command(line):
            peer.drop_on_command = None
            # The switch carries the command out; only its reply is lost with the connection.
            if line.startswith("bgapi originate"):
                peer.start_originate(
                    line.removeprefix("bgapi "), headers.get("Job-UUID") or str(uuid.uuid4())
                )
            elif line.startswith("api "):
                peer.api(line.removeprefix("api "))
            self.abort()
            return
        if line.startswith("event "):
            self.subscribe(line.removeprefix("event "))
            self.reply("+OK event listener enabled plain")
        elif line.startswith("bgapi "):
            job = headers.get("Job-UUID") or str(uuid.uuid4())
            self.reply(f"+OK Job-UUID: {job}", f"Job-UUID: {job}\n")
            command = line.removeprefix("bgapi ")
            if command.startswith("originate "):
                peer.start_originate(command, job)
        elif line.startswith("api "):
            self.api(peer.api(line.removeprefix("api ")))
        elif line == "exit":
            self.reply("+OK bye")
            self.write(_disconnect_notice())
            await self.writer.drain()
            self.writer.close()
        else:
            self.reply("-ERR command not found")


def _circuit_congestion(ev: Ev) -> dict[str, str] | None:
    if ev.name == "CHANNEL_HANGUP_COMPLETE":
        return _CIRCUIT_CONGESTION
    return None


def _is_kill(command: str) -> bool:
    return command.startswith("uuid_kill")


def _disconnect_notice() -> bytes:
    return b"Content-Type: text/disconnect-notice\nContent-Length: %d\n\n%s" % (
        len(DISCONNECT_BODY),
        DISCONNECT_BODY.encode(),
    )


class EslPeer:
    """The fake FreeSWITCH. `async with EslPeer() as peer:` then connect to `peer.port`."""

    def __init__(
        self,
        *,
        password: str = DEFAULT_PASSWORD,
        time_scale: float = 0.05,
        numbers: dict[str, str] | None = None,
        amd_verdicts: dict[str, str] | None = None,
        abandon_s: float = 3.0,
    ) -> None:
        self.password = password
        self.time_scale = time_scale
        self.numbers = {**DEFAULT_NUMBERS, **(numbers or {})}
        self.amd_verdicts = amd_verdicts or {}
        self.abandon_s = abandon_s
        # Agent extensions whose phone is not registered: a transfer to them fails at once (synthesized
        # CUSTOM callcenter::agent_failed, as the shipped dialplan fires it) and the customer waits on.
        self.unreachable_agents: set[str] = set()
        self.port = 0
        self.sessions: list[_Session] = []
        self.received = bytearray()
        self.commands: list[str] = []
        self.calls: dict[str, FakeCall] = {}
        self.channels: dict[str, dict[str, str]] = {}
        self.ended: set[str] = set()
        self._end_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.silent = False
        self.holding = False
        self.refuse_connections = False
        self.accepted_at: list[float] = []
        self._file: Trace | None = None
        self._file_jobs: dict[str, str] = {}
        self._player: _Player | None = None  # play_session: the whole-connection replay running
        self._call_players: dict[str, _Player] = {}  # by call uuid: scenarios played as recorded
        # After SHUTDOWN (shut_down(), or a recording's): `api status` says "not ready" and every
        # originate fails at once with CHAN_NOT_IMPLEMENTED, no channel (freeswitch-faults/README.md).
        self.shutting_down = False
        # sessions-per-second (0: none): of the originates in one second, N-1 get a channel and the rest
        # -ERR DESTINATION_OUT_OF_ORDER 15 ms later, with no channel event (session-rate-throttle.jsonl).
        self.session_rate = 0
        self._rate_window: tuple[int, int] = (-1, 0)
        self.drop_on_command: Callable[[str], bool] | None = None
        self.originates = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count(1)

    async def __aenter__(self) -> EslPeer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 1.0)
        for s in self.sessions:
            s.abort()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted_at.append(asyncio.get_running_loop().time())
        session = _Session(self, reader, writer)
        self.sessions.append(session)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await session.run()

    # --- fault injection ---------------------------------------------------------------------

    def drop(self) -> None:
        """Abort every client connection (a TCP drop); calls go on without the controller."""
        for s in self.sessions:
            s.abort()

    def go_silent(self) -> None:
        """Keep the connections open but send nothing more (replies, events): a wedged switch."""
        self.silent = True

    def resume(self) -> None:
        self.silent = False

    def hold_replies(self) -> None:
        """Queue everything instead of sending it (a switch that answers late)."""
        self.holding = True

    def release_replies(self) -> None:
        self.holding = False
        for s in self.sessions:
            s.release()

    def play_session(self, name: str, subs: dict[str, str] | None = None) -> asyncio.Task[None]:
        """Replay a whole recorded connection with the client in the recorded client's place (`_Player`).
        `subs` maps recorded ids the client does not originate itself (a call of an earlier connection)."""
        player = self._player = _Player(self, trace(name), subs)
        return self._spawn(player.run())

    def disconnect_all(self, body: str) -> None:
        """FreeSWITCH's own goodbye (`text/disconnect-notice` with `body`), then the close: every session.
        After a shutdown's notice the switch is gone: connections are refused until `start_up()`."""
        data = body.encode()
        frame = b"Content-Type: text/disconnect-notice\nContent-Length: %d\n\n%s" % (len(data), data)
        for s in self.sessions:
            s.write(frame)
            s.writer.close()
        if self.shutting_down:
            self.refuse_connections = True

    # --- shutdown, throttle ------------------------------------------------------------------

    def shut_down(self, window_s: float | None = None) -> None:
        """SIGTERM, as graceful-shutdown-while-ringing.jsonl recorded it: SHUTDOWN, every ringing call
        hung up SYSTEM_SHUTDOWN and its job `-ERR SYSTEM_SHUTDOWN`; then `window_s` (recorded: 30.9 s,
        times `time_scale`) in which the socket stays open, `api status` says not ready and every
        originate fails CHAN_NOT_IMPLEMENTED; then the disconnect notice and the close."""
        t = trace(SHUTDOWN_TRACE)
        events = t.events()
        shutdown = next(e for e in events if e.name == "SHUTDOWN")
        self.emit(shutdown.body)
        hangup = next(e for e in events if e.name == "CHANNEL_HANGUP_COMPLETE")
        job = next(e for e in events if e.name == "BACKGROUND_JOB" and "SYSTEM_SHUTDOWN" in e.body)
        for call in list(self.calls.values()):
            row = self.channels.get(call.uuid)
            if row is None or row.get("callstate") == "ACTIVE":
                continue  # only ringing calls were recorded being cut
            if call.task is not None:
                call.task.cancel()
            subs = self._subs(call, t)
            self.emit(rebuild(hangup.body, subs, self._numbers(call, t)))
            self.emit(rebuild(job.body, subs))
        notice = next(m for m in t.msgs if not m.out and "text/disconnect-notice" in m.data)
        if window_s is None:
            window_s = (notice.t - shutdown.t) * self.time_scale

        async def close() -> None:
            await asyncio.sleep(window_s)
            self.disconnect_all(notice.data.partition("\n\n")[2])

        self._spawn(close())

    def start_up(self) -> None:
        """FreeSWITCH started again: connections and calls accepted."""
        self.shutting_down = False
        self.refuse_connections = False

    def _refused_job(self, job: str, cause: str, delay: float) -> None:
        """A BACKGROUND_JOB `-ERR <cause>` for an originate that never got a channel, from the recording
        that shows it (shutdown: CHAN_NOT_IMPLEMENTED 0.1 ms after; throttle: DESTINATION_OUT_OF_ORDER)."""
        name = SHUTDOWN_TRACE if cause == "CHAN_NOT_IMPLEMENTED" else THROTTLE_TRACE
        t = trace(name)
        rec = next(e for e in t.events() if e.name == "BACKGROUND_JOB" and f"-ERR {cause}" in e.body)
        body = rebuild(rec.body, {rec.headers["Job-UUID"]: job})

        async def later() -> None:
            await asyncio.sleep(delay)
            self.emit(body)

        self._spawn(later())

    def _over_session_rate(self) -> bool:
        if self.session_rate <= 0:
            return False
        second = int(asyncio.get_running_loop().time())
        start, count = self._rate_window
        count = count + 1 if start == second else 1
        self._rate_window = (second, count)
        # The counter is decremented before the test (switch_core_session.c:2416-2422): N-1 get through.
        return count > self.session_rate - 1

    def replay_file(self, name: str) -> None:
        """Replay a whole recording verbatim: the next originates are matched to the recorded ones by
        origination_uuid (the test uses the recorded UUIDs as call ids); when all have arrived, every
        recorded event after the first originate is sent with its recorded timing, only the Job-UUIDs
        replaced by the ones the client chose."""
        self._file = trace(name)
        self._file_jobs = {}

    @property
    def live_sessions(self) -> int:
        return sum(1 for s in self.sessions if not s.writer.transport.is_closing())

    # --- events out ----------------------------------------------------------------------------

    def emit(self, body: str) -> None:
        """Deliver one event (body text) to every subscribed session, and keep the channel table."""
        head = body.split("\n\n", 1)[0]
        headers = _parse_headers(head)
        name = headers.get("Event-Name", "")
        if name in ("SHUTDOWN", "SHUTDOWN_REQUESTED"):
            self.shutting_down = True
        self._track(name, headers)
        frame = frame_event(body)
        subclass = headers.get("Event-Subclass", "")
        for s in self.sessions:
            if s.wants(name, subclass):
                s.write(frame)

    def _track(self, name: str, h: dict[str, str]) -> None:
        uid = h.get("Unique-ID")
        if not uid or name in ("API", "HEARTBEAT", "RE_SCHEDULE", "BACKGROUND_JOB"):
            return
        if uid in self.ended:
            return
        if name in ("CHANNEL_HANGUP_COMPLETE", "CHANNEL_DESTROY"):
            self.channels.pop(uid, None)
            self.ended.add(uid)
            for fut in self._end_waiters.pop(uid, []):
                if not fut.done():
                    fut.set_result(None)
            return
        row = self.channels.setdefault(uid, dict.fromkeys(_ROW_KEYS, ""))
        row.update(
            uuid=uid,
            call_uuid=h.get("Channel-Call-UUID", row["call_uuid"] or uid),
            direction=h.get("Call-Direction", row["direction"]),
            name=h.get("Channel-Name", row["name"]),
            state=h.get("Channel-State", row["state"]),
            callstate=h.get("Channel-Call-State", row["callstate"]),
            cid_name=h.get("Caller-Caller-ID-Name", row["cid_name"]),
            cid_num=h.get("Caller-Caller-ID-Number", row["cid_num"]),
            dest=h.get("Caller-Destination-Number", row["dest"]),
            context=h.get("Caller-Context", row["context"]),
            hostname=h.get("FreeSWITCH-Hostname", row["hostname"]),
        )
        if h.get("Application"):
            row["application"] = h["Application"]
            row["application_data"] = h.get("Application-Data", "")

    def wait_end(self, uid: str) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if uid in self.ended or uid not in self.channels:
            fut.set_result(None)
        else:
            self._end_waiters.setdefault(uid, []).append(fut)
        return fut

    # --- api ---------------------------------------------------------------------------------

    def api(self, command: str) -> str:
        verb, _, args = command.partition(" ")
        player = self._player if self._player is not None and not self._player.done else None
        if verb in ("uuid_kill", "uuid_transfer"):
            uid = args.split(" ", 1)[0]
            player = self._call_players.get(uid) or player
            if player is not None and not player.done:
                player.commands.put_nowait(command)
                return "+OK\n"  # as recorded for both commands
        if command == "show channels as json" and player is not None and player.show_channels():
            return player.show_channels()
        if command == "status" and self.shutting_down:
            t = trace(SHUTDOWN_IDLE_TRACE)
            return t.reply_after(t.out_index("api status"))
        if command in ("status", "version"):
            t = trace("auth-ok-then-exit")
            return t.reply_after(t.out_index(f"api {command}"))
        if command == "show channels as json":
            rows = list(self.channels.values())
            if not rows:
                return '{"row_count":0}\n'
            return json.dumps({"row_count": len(rows), "rows": rows}, separators=(",", ":")) + "\n"
        if verb == "uuid_exists":
            return "true" if args.strip() in self.channels else "false"
        if verb in ("uuid_kill", "uuid_transfer"):
            uid = args.split(" ", 1)[0]
            call = self.calls.get(uid)
            if uid not in self.channels or call is None:
                return "-ERR No such channel!\n"
            call.commands.put_nowait(command)
            return "+OK\n"
        return f"-ERR {verb} Command not found!\n"

    # --- calls -------------------------------------------------------------------------------

    def start_originate(self, command: str, job: str) -> None:
        self.originates += 1
        o = parse_originate(command)
        uid = o.variables.get("origination_uuid") or str(uuid.uuid4())
        if self._player is not None and not self._player.done:
            self._player.originates.put_nowait((uid, job))
            return
        if self.shutting_down:
            self._refused_job(job, "CHAN_NOT_IMPLEMENTED", 0.0001 * self.time_scale)
            return
        if self._over_session_rate():
            self._refused_job(job, "DESTINATION_OUT_OF_ORDER", 0.015 * self.time_scale)
            return
        if self._file is not None:
            self._file_originate(uid, job)
            return
        if o.target.startswith("&eavesdrop("):
            target = o.target.removeprefix("&eavesdrop(").rstrip(")")
            self._spawn(self._spy(uid, job, o, target))
            return
        call = FakeCall(uid, job, o.variables.get("cc_call_id", ""), o.number, o.variables, o.target)
        self.calls[uid] = call
        scenario = self.numbers.get(o.number, "unreachable")
        call.task = self._spawn(self._run_call(call, scenario))

    def _file_originate(self, uid: str, job: str) -> None:
        t = self._file
        assert t is not None
        count = sum(1 for m in t.msgs if m.out and m.data.startswith("bgapi originate"))
        recorded = {t.originate(i)["uuid"]: t.originate(i)["job"] for i in range(count)}
        if uid in recorded:
            self._file_jobs[recorded[uid]] = job
        if len(self._file_jobs) == count:
            first = t.out_index("bgapi originate")
            events = t.events(first + 1, t.out_index("exit"))
            self._file = None
            self._spawn(self._play(None, t, events, t.msgs[first].t, subs=dict(self._file_jobs), numbers={}))

    async def _run_call(self, call: FakeCall, scenario: str) -> None:
        if scenario in RECORDED_CALLS:  # one call of a fault recording, played as recorded
            player = self._call_players[call.uuid] = _Player(self, trace(RECORDED_CALLS[scenario]))
            player.originates.put_nowait((call.uuid, call.job))
            await player.run()
        elif scenario == "no_answer":
            await self._no_answer(call)
        elif scenario in ("answer", "abandon"):
            await self._answered(call, trace(SCENARIO_TRACES[scenario]))
        else:
            t = trace(SCENARIO_TRACES[scenario])
            start = t.out_index("bgapi originate")
            subs = self._subs(call, t)
            edit = None
            if scenario == "circuit_congestion":  # the cause name also ends the job's `-ERR` line
                subs["NORMAL_TEMPORARY_FAILURE"] = "NORMAL_CIRCUIT_CONGESTION"
                edit = _circuit_congestion
            events = t.events(start + 1, t.out_index("exit"))
            await self._play(call, t, events, t.msgs[start].t, subs=subs, edit=edit)

    def _subs(self, call: FakeCall, t: Trace, nth: int = 0) -> dict[str, str]:
        ids = t.originate(nth)
        subs = {ids["uuid"]: call.uuid, ids["job"]: call.job}
        if ids["cc_call_id"]:
            subs[ids["cc_call_id"]] = call.cc_call_id or call.uuid
        return subs

    def _numbers(self, call: FakeCall, t: Trace) -> dict[str, str]:
        recorded = t.originate()["number"]
        return {recorded: call.number} if call.number and recorded != call.number else {}

    async def _play(
        self,
        call: FakeCall | None,
        t: Trace,
        events: Iterable[Ev],
        base_t: float,
        *,
        subs: dict[str, str] | None = None,
        numbers: dict[str, str] | None = None,
        factor: float = 1.0,
        stop_on: Callable[[str], bool] | None = None,
        edit: Callable[[Ev], dict[str, str] | None] | None = None,
        origin: float | None = None,
    ) -> str | None:
        """Replay events at (t - base_t) * time_scale * factor from now. A command for the call that
        `stop_on` accepts stops the replay and is returned; others wait in `call.deferred`. `origin`
        (loop time of base_t, default now) lets a second call continue the same timeline."""
        loop = asyncio.get_running_loop()
        start = loop.time() if origin is None else origin
        subs = subs if subs is not None else (self._subs(call, t) if call else {})
        numbers = numbers if numbers is not None else (self._numbers(call, t) if call else {})
        for ev in events:
            due = start + max(0.0, ev.t - base_t) * self.time_scale * factor
            while stop_on is not None and call is not None:
                try:
                    command = await asyncio.wait_for(call.commands.get(), max(0.0, due - loop.time()))
                except TimeoutError:
                    break
                if stop_on(command):
                    return command
                call.deferred.append(command)
            else:
                await asyncio.sleep(max(0.0, due - loop.time()))
            extra = edit(ev) if edit else None
            self.emit(rebuild(ev.body, subs, numbers, extra))
        return None

    async def _next_command(self, call: FakeCall, timeout: float) -> str | None:
        if call.deferred:
            return call.deferred.pop(0)
        try:
            return await asyncio.wait_for(call.commands.get(), timeout)
        except TimeoutError:
            return None

    async def _no_answer(self, call: FakeCall) -> None:
        t = trace("originate-no-answer")
        start = t.out_index("bgapi originate")
        events = t.events(start + 1, t.out_index("exit"))
        progress = next(e for e in events if e.name == "CHANNEL_PROGRESS")
        ring = [e for e in events if e.t <= progress.t + 0.001]
        rest = [e for e in events if e.t > progress.t + 0.001]
        # The recording asked for originate_timeout=6; stretch the wait to what was asked now.
        asked = float(call.variables.get("originate_timeout", "60") or 60)
        base = t.msgs[start].t
        command = await self._play(call, t, ring, base, stop_on=_is_kill)
        if command is None:
            command = await self._play(call, t, rest, progress.t, factor=asked / 6.0, stop_on=_is_kill)
        if command is not None:
            k = trace("uuid-kill-while-ringing")
            cue = k.out_index("api uuid_kill")
            await self._play(call, k, k.events(cue + 1, k.out_index("exit")), k.msgs[cue].t)

    async def _answered(self, call: FakeCall, t: Trace) -> None:
        """answer / abandon: ring, answer, park in `wait`; then whatever the controller asks for, or
        the customer hangs up after the recorded patience."""
        start = t.out_index("bgapi originate")
        events = t.events(start + 1)
        park = next(e for e in events if e.name == "CHANNEL_PARK")
        pre = [e for e in events if e.index <= park.index]
        amd = call.target == "wait_amd"

        def amd_edit(ev: Ev) -> dict[str, str] | None:
            if amd and ev.name == "CUSTOM":  # synthesized verdict header (see module docstring)
                return {"cc_amd": self.amd_verdicts.get(call.number, "NOTSURE")}
            return None

        command = await self._play(call, t, pre, t.msgs[start].t, stop_on=_is_kill, edit=amd_edit)
        abandoned = trace("answered-then-abandoned")
        a_events = abandoned.events(abandoned.out_index("bgapi originate") + 1, abandoned.out_index("exit"))
        a_park = next(e for e in a_events if e.name == "CHANNEL_PARK")
        hangup = [e for e in a_events if e.index > a_park.index]
        patience = (hangup[0].t - a_park.t) * self.time_scale
        if command is None:
            command = await self._next_command(call, patience)
        while command and command.startswith("uuid_transfer") and " agent_" in command:
            ext = command.split(" ")[2].removeprefix("agent_")
            if ext not in self.unreachable_agents:
                break
            custom = next(e for e in pre if e.name == "CUSTOM")
            failed = {"Event-Subclass": "callcenter::agent_failed", "cc_agent": ext}
            failed["cc_status"] = "USER_NOT_REGISTERED"
            await asyncio.sleep(0.02 * self.time_scale)
            self.emit(rebuild(custom.body, self._subs(call, t), None, failed))
            command = await self._next_command(call, patience)
        a_subs = self._subs(call, abandoned)
        a_numbers = self._numbers(call, abandoned)
        if command is None:  # the customer gave up waiting (recorded)
            await self._play(call, abandoned, hangup, hangup[0].t, subs=a_subs, numbers=a_numbers)
            return
        if command.startswith("uuid_transfer") and " agent_" in command:
            ext = command.split(" ")[2].removeprefix("agent_")
            await self._bridge_agent(call, ext)
            return
        if command.startswith("uuid_transfer") and " abandon_" in command:
            await asyncio.sleep(self.abandon_s * self.time_scale)  # the message plays (synthesized)
        await self._play(
            call,
            abandoned,
            hangup,
            hangup[0].t,
            subs=a_subs,
            numbers=a_numbers,
            edit=lambda ev: (
                {"variable_sip_hangup_disposition": "send_bye"}
                if "variable_sip_hangup_disposition" in ev.headers
                else None
            ),
        )

    async def _bridge_agent(self, call: FakeCall, extension: str) -> None:
        """Replay the recorded dialplan bridge to the agent after uuid_transfer, then the talk and
        the customer's hang-up. A uuid_kill meanwhile jumps to the hang-up."""
        t = trace("originate-answered-agent-bridged")
        cue = t.out_index("api uuid_transfer")
        events = t.events(cue + 1, t.out_index("exit"))
        recorded_agent = next(e for e in events if e.name == "CHANNEL_BRIDGE").headers["Other-Leg-Unique-ID"]
        call.agent_uuid = str(uuid.uuid4())
        call.agent_extension = extension
        subs = {**self._subs(call, t), recorded_agent: call.agent_uuid}
        numbers = {**self._numbers(call, t), "1001": extension}
        hang = next(e for e in events if e.name == "CHANNEL_HANGUP")
        talk = [e for e in events if e.index < hang.index]
        end = [e for e in events if e.index >= hang.index]
        origin = asyncio.get_running_loop().time()
        killed = await self._play(
            call, t, talk, t.msgs[cue].t, subs=subs, numbers=numbers, stop_on=_is_kill, origin=origin
        )
        if killed:
            await self._play(call, t, end, hang.t, subs=subs, numbers=numbers)
        else:
            await self._play(call, t, end, t.msgs[cue].t, subs=subs, numbers=numbers, origin=origin)

    async def _spy(self, spy_uuid: str, job: str, o: Originate, target: str) -> None:
        """The supervisor leg into &eavesdrop(target): recorded start, then the recorded end once
        the target leg has hung up."""
        t = trace("show-channels-and-eavesdrop")
        rec = t.originate(2)
        rec_agent = t.originate(1)["uuid"]
        rec_call = t.originate(0)
        cue = t.out_index("bgapi originate", 2)
        next_cue = t.out_index("api show channels", 1)
        row = self.channels.get(target, {})
        owner = self.calls.get(row.get("call_uuid", ""))
        subs = {rec["uuid"]: spy_uuid, rec["job"]: job, rec_agent: target}
        if owner is not None:
            subs[rec_call["uuid"]] = owner.uuid
            subs[rec_call["cc_call_id"]] = owner.cc_call_id or owner.uuid
        numbers = {rec["number"]: o.number}
        if owner is not None and owner.agent_extension:
            numbers["1001"] = owner.agent_extension

        def mine(e: Ev) -> bool:
            return (
                e.uid == rec["uuid"]
                or e.name.startswith("MEDIA_BUG")
                or (e.name == "BACKGROUND_JOB" and e.headers.get("Job-UUID") == rec["job"])
            )

        start = [e for e in t.events(cue + 1, next_cue) if mine(e)]
        finish = [e for e in t.events(next_cue + 1, t.out_index("exit")) if mine(e)]
        await self._play(None, t, start, t.msgs[cue].t, subs=subs, numbers=numbers)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait_end(target), 120)
        await self._play(None, t, finish, finish[0].t if finish else 0.0, subs=subs, numbers=numbers)

    # --- synthesized: a call dialled by hand from an agent phone ----------------------------------

    def agent_dials(self, extension: str, number: str, *, ring_s: float = 2.0) -> str:
        """Make the agent phone at `extension` dial `number` (the customer answers after `ring_s`
        recorded seconds); returns the agent leg's UUID. `uuid_kill` on it works as on any call."""
        agent_leg = str(uuid.uuid4())
        self._spawn(self._manual(agent_leg, extension, number, ring_s))
        return agent_leg

    async def _manual(self, agent_leg: str, extension: str, number: str, ring_s: float) -> None:
        t = trace("originate-answered-agent-bridged")
        ids = t.originate()
        cue = t.out_index("api uuid_transfer")
        events = t.events(t.out_index("bgapi originate") + 1, t.out_index("exit"))
        a_leg = ids["uuid"]
        b_leg = next(e for e in events if e.name == "CHANNEL_BRIDGE").headers["Other-Leg-Unique-ID"]
        customer = str(uuid.uuid4())
        subs = {
            a_leg: agent_leg,
            b_leg: customer,
            ids["cc_call_id"]: agent_leg,
            ids["job"]: str(uuid.uuid4()),
        }
        numbers = {ids["number"]: number, "1001": number, "agent_1001": number}
        inbound = {
            "Call-Direction": "inbound",
            "Presence-Call-Direction": "inbound",
            "Caller-Direction": "inbound",
            "Caller-Logical-Direction": "inbound",
            "variable_direction": "inbound",
            "Caller-Caller-ID-Number": extension,
            "Caller-Destination-Number": number,
            "Caller-Context": "agents",
            "Channel-Name": f"sofia/agents/{extension}@127.0.0.1",
            "variable_cc_agent": extension,
            "variable_cc_leg": "manual",
        }

        def roles(ev: Ev) -> dict[str, str] | None:
            if ev.uid == a_leg:  # the recorded bridging A-leg plays the agent's own phone leg
                return inbound
            if ev.uid == b_leg:
                return {"Caller-Destination-Number": number, "Caller-Caller-ID-Number": extension}
            return None

        create = next(e for e in events if e.name == "CHANNEL_CREATE" and e.uid == a_leg)
        custom = next(e for e in events if e.name == "CUSTOM")
        manual = {
            **inbound,
            "Event-Subclass": "callcenter::manual",
            "cc_agent": extension,
            "cc_number": number,
        }
        call = FakeCall(agent_leg, "", agent_leg, number, {}, "manual")
        self.calls[agent_leg] = call
        self.emit(rebuild(create.body, subs, None, inbound))
        await asyncio.sleep(0.02 * self.time_scale)
        self.emit(rebuild(custom.body, subs, None, manual))
        bridge_part = t.events(cue + 1, t.out_index("exit"))
        hang = next(e for e in bridge_part if e.name == "CHANNEL_HANGUP")
        talk = [e for e in bridge_part if e.index < hang.index]
        end = [e for e in bridge_part if e.index >= hang.index]
        play = functools.partial(self._play, call, t, subs=subs, numbers=numbers, edit=roles)
        killed = await self._next_command(call, ring_s * self.time_scale)  # the customer's phone rings
        if killed is None:
            origin = asyncio.get_running_loop().time()
            killed = await play(talk, t.msgs[cue].t, stop_on=_is_kill, origin=origin)
            if killed is None:
                await play(end, t.msgs[cue].t, origin=origin)
                return
        await play(end, hang.t)
