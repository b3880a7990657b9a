"""The gateway contract: what every PBX driver (simulated, Asterisk/AMI, FreeSWITCH/ESL) implements.

A driver is a thin translator. Commands go in as method calls with validated values; what happens to
calls comes out as the small set of domain events below, delivered to the `emit` callback given to
`start()`. Nothing outside `callcenter/gateways/` ever sees an AMI header or an ESL event name.

Rules every driver follows (the contract suite in `tests/gateways/` checks them against each one):

1. Ids. `OriginateRequest.call_id` is ours (a UUID string); the driver makes the PBX use it as the
   customer channel's id (Asterisk `ChannelId`, FreeSWITCH `origination_uuid`) and reports every event
   of that call under it. Calls an agent dials by hand get an id from the driver (the PBX's id of the
   agent's channel) announced by `ManualCallStarted`.
2. Events of one originated call, in order:
   `CallRinging`? -> `CallAnswered`? -> `CallConnected`? -> `CallEnded` (exactly once, always last).
   `CallAnswered` comes once: at answer, or, when the request asked for answering machine detection,
   when the verdict is known (`answer` says human / machine / unknown; without AMD it is unknown).
   `CallConnected` comes when the customer is bridged to the agent asked for by `connect_agent`;
   `AgentLegFailed` when that agent's phone did not take the call (no answer within the PBX's agent
   ring time, busy, unreachable): the customer is still up, waiting, and may be connected to another
   agent. Either may come more than once if `connect_agent` is called again.
3. `CallEnded.result` classifies the end the same way on every PBX:
   - `answered`: the customer had answered (whatever happened next, e.g. an abandon message);
   - `busy` (Q.850 17), `no_answer` (19; also when the ring timeout expires),
   - `failed`: congestion, unreachable, unknown peer, refused by the PBX (34, 41, 3, 102 ...),
   - `cancelled`: we hung it up before answer (`hangup()` while ringing),
   - `lost`: the driver lost track of it (link drop, then the PBX no longer knows the call).
   `cause` is the Q.850 cause the PBX reported (0 when it reported none) and `detail` a short
   human-readable note (e.g. "OriginateResponse Reason 5", "sip 486").
4. Errors. `originate()` returns once the request is on the wire; every outcome after that (including
   the PBX refusing it) arrives as events. It raises only `Invalid` (a value failed validation: nothing
   was sent) or `GatewayUnavailable` (the link is down: nothing was sent). Other commands raise
   `GatewayUnavailable`, `CommandTimeout`, `CallNotFound` or `GatewayError`.
   A driver never re-sends an originate: if the link drops after one was sent, the call is followed
   after reconnect by a resync against the PBX's channel list and ends as `lost` if it is gone.
5. Every await on the PBX has a timeout. The driver keeps its link alive (keepalive that detects a
   dead or silent link), reconnects with capped exponential backoff, reports `GatewayLink` up/down,
   resyncs after reconnect and reports channels it does not know as `UnknownChannel`.
6. Nothing unvalidated reaches the wire: numbers, extensions, variables, caller IDs and sound names
   go through `callcenter.validation` before any byte is written.
7. `emit` is called on the event loop that called `start()`, never from another thread, and must
   not block.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from callcenter.errors import Invalid
from callcenter.validation import validate_extension, validate_number, validate_text, validate_variables


class AnswerKind(StrEnum):
    HUMAN = "human"
    MACHINE = "machine"
    UNKNOWN = "unknown"  # no AMD ran, or it could not decide


class EndResult(StrEnum):
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"


class SpyMode(StrEnum):
    LISTEN = "listen"  # supervisor hears both sides, nobody hears the supervisor
    WHISPER = "whisper"  # the agent hears the supervisor, the customer does not
    BARGE = "barge"  # everybody hears everybody


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallRinging:
    call_id: str
    at: float


@dataclass(frozen=True, slots=True)
class CallAnswered:
    call_id: str
    at: float
    answer: AnswerKind = AnswerKind.UNKNOWN


@dataclass(frozen=True, slots=True)
class CallConnected:
    """The call is bridged to the agent at `extension` (outbound: after `connect_agent`; manual: the
    far end answered the agent's own call)."""

    call_id: str
    at: float
    extension: str


@dataclass(frozen=True, slots=True)
class CallEnded:
    call_id: str
    at: float
    result: EndResult
    cause: int = 0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class AgentLegFailed:
    """The agent's phone rung for an answered customer did not take the call; `detail` says how
    (e.g. "NOANSWER", "CHANUNAVAIL", "USER_NOT_REGISTERED"). The customer is waiting again."""

    call_id: str
    at: float
    extension: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ManualCallStarted:
    """An agent's phone started a call by hand (not originated by us)."""

    call_id: str
    at: float
    extension: str
    number: str


@dataclass(frozen=True, slots=True)
class SpyStarted:
    spy_id: str
    at: float
    target_extension: str
    mode: SpyMode


@dataclass(frozen=True, slots=True)
class SpyEnded:
    spy_id: str
    at: float


@dataclass(frozen=True, slots=True)
class GatewayLink:
    """The link to the PBX went up (after login and resync) or down."""

    up: bool
    at: float
    detail: str = ""


@dataclass(frozen=True, slots=True)
class UnknownChannel:
    """Resync found a channel on the PBX that no tracked call explains."""

    channel: str
    at: float
    detail: str = ""


GatewayEvent = (
    CallRinging
    | CallAnswered
    | CallConnected
    | AgentLegFailed
    | CallEnded
    | ManualCallStarted
    | SpyStarted
    | SpyEnded
    | GatewayLink
    | UnknownChannel
)
EventSink = Callable[[GatewayEvent], None]


# --- commands ---------------------------------------------------------------------------------

_SOUND = re.compile(r"[A-Za-z0-9_/-]{1,128}")
_CALL_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def validate_call_id(value: str) -> str:
    if not isinstance(value, str) or not _CALL_ID.fullmatch(value):
        raise Invalid(
            f"call id must be 1-64 letters, digits, '.', '_' or '-', got {value!r}", field="call_id"
        )
    return value


def validate_sound(value: str) -> str:
    if not isinstance(value, str) or not _SOUND.fullmatch(value) or ".." in value:
        raise Invalid(f"sound must be a file name without extension, got {value!r}", field="sound")
    return value


@dataclass(frozen=True)
class OriginateRequest:
    """One call to place. Construction validates every field, so a request that exists is safe."""

    call_id: str
    number: str
    caller_id: str = ""
    caller_name: str = ""
    ring_timeout_s: float = 30.0
    amd: bool = False
    variables: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_call_id(self.call_id)
        validate_number(self.number)
        if self.caller_id:
            validate_number(self.caller_id, field="caller_id")
        validate_text(self.caller_name, field="caller_name", max_len=64)
        validate_variables(dict(self.variables))
        if not 1 <= self.ring_timeout_s <= 300:
            raise Invalid("ring timeout must be 1-300 seconds", field="ring_timeout_s")

    @property
    def digits(self) -> str:
        """The number without its leading '+', as dial-string templates take it."""
        return self.number.lstrip("+")


@dataclass(frozen=True, slots=True)
class ActiveCall:
    """A call the PBX reports as up (for resync). `call_id` is ours when the PBX knows it."""

    channel: str
    call_id: str | None
    state: str
    extension: str | None = None


class GatewayError(Exception):
    """A command failed on the PBX side."""


class GatewayUnavailable(GatewayError):
    """The link to the PBX is down; the command was not sent."""


class CommandTimeout(GatewayError):
    """The PBX did not answer a command in time."""


class CallNotFound(GatewayError):
    """The PBX (or the driver) does not know this call."""


@runtime_checkable
class Gateway(Protocol):
    """What every PBX driver implements. See the module docstring for the rules."""

    async def start(self, emit: EventSink) -> None:
        """Connect, log in and subscribe; returns when the link is up (raises GatewayUnavailable if
        the first connection fails). Later drops are handled inside: reconnect, resync, events."""
        ...

    async def close(self) -> None:
        """Log off and stop every background task."""
        ...

    async def originate(self, request: OriginateRequest) -> None:
        """Place a call to a customer; its fate arrives as events under `request.call_id`."""
        ...

    async def hangup(self, call_id: str) -> None:
        """Hang the call up (before answer it ends as `cancelled`)."""
        ...

    async def connect_agent(self, call_id: str, extension: str) -> None:
        """Connect an answered customer to the agent phone at `extension` (`CallConnected` follows)."""
        ...

    async def play_and_hangup(self, call_id: str, sound: str) -> None:
        """Play a recorded message to an answered customer, then hang up (abandoned calls)."""
        ...

    async def spy(self, *, target_extension: str, supervisor_extension: str, mode: SpyMode) -> str:
        """Ring the supervisor's phone and let them listen / whisper / barge on the agent's call.
        Returns the spy leg's id (reported again by `SpyStarted` / `SpyEnded`)."""
        ...

    async def active_calls(self) -> list[ActiveCall]:
        """The calls the PBX has up now (for resync after a dialer restart)."""
        ...

    async def adopt(self, call_id: str) -> bool:
        """Follow a call placed before this driver started (dialer restart). False if the PBX no
        longer has it: the caller then ends it as `lost`."""
        ...


def check_spy_request(target_extension: str, supervisor_extension: str, mode: SpyMode | str) -> SpyMode:
    validate_extension(target_extension, field="target_extension")
    validate_extension(supervisor_extension, field="supervisor_extension")
    try:
        return SpyMode(mode)
    except ValueError:
        raise Invalid(f"spy mode must be listen, whisper or barge, got {mode!r}", field="mode") from None


def render_template(template: str, **values: str) -> str:
    """Fill a dial-string template such as `PJSIP/{number}@trunk`; values must already be validated."""
    try:
        return template.format(**values)
    except (KeyError, IndexError) as exc:
        raise Invalid(
            f"dial template {template!r} uses an unknown placeholder {exc}", field="dial_template"
        ) from None
