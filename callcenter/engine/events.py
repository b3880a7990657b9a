"""The engine's vocabulary for what happens to calls on a PBX: the domain events every gateway driver
emits and the engine consumes. Nothing here knows AMI or ESL; drivers translate into these."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class AnswerKind(StrEnum):
    HUMAN = "human"
    MACHINE = "machine"
    UNKNOWN = "unknown"  # no AMD ran, or it could not decide


class EndResult(StrEnum):
    """How a call ended, the same on every PBX (gateways/base.py rule 3)."""

    ANSWERED = "answered"  # the customer had answered, whatever happened next
    BUSY = "busy"  # Q.850 17, SIP 486
    NO_ANSWER = "no_answer"  # Q.850 18/19, the ring timeout
    CONGESTION = "congestion"  # Q.850 34 (42), SIP 503: the network or the carrier had no room
    FAILED = "failed"  # unreachable, unallocated, rejected, unknown peer ... (1, 3, 21, 27 ...)
    CANCELLED = "cancelled"  # we hung it up before answer
    LOST = "lost"  # the driver lost track of it (link drop, then the PBX no longer had it)
    # The PBX itself refused or dropped the call before the customer's line was tried: shutting down,
    # over its session rate, channel driver not loaded, no route, no capacity. A gateway fault, never
    # a customer's outcome: the lead goes back unattempted and the gateway backs off.
    REFUSED = "refused"


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
    """An agent's phone started a call by hand (not originated by us). `gateway` is filled by the
    dialer's runner with the key of the gateway that reported it."""

    call_id: str
    at: float
    extension: str
    number: str
    gateway: str = "default"


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
class GatewayDraining:
    """The PBX announced it is shutting down or restarting (Asterisk `Shutdown`, FreeSWITCH `SHUTDOWN`,
    or every command answered "shutting down"): the link may stay open a while, but no new call will
    be accepted. The engine places nothing through it until the link has gone down and come back up."""

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
    | GatewayDraining
    | UnknownChannel
)
EventSink = Callable[[GatewayEvent], None]


@dataclass(frozen=True, slots=True)
class ActiveCall:
    """A call the PBX has now (for resync after a restart). `call_id` is ours when the PBX knows it;
    `answered` says the customer's channel is up (answered, maybe while the dialer was away);
    `extension` names the agent it is bridged to, when it is."""

    channel: str
    call_id: str | None
    state: str
    extension: str | None = None
    answered: bool = False
