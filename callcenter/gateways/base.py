"""The gateway contract: what every PBX driver (simulated, Asterisk/AMI, FreeSWITCH/ESL) implements.

A driver is a thin translator. Commands go in as method calls with validated values; what happens to
calls comes out as the small set of domain events below, delivered to the `emit` callback given to
`start()`. Nothing outside `callcenter/gateways/` ever sees an AMI header or an ESL event name.

Rules every driver follows (the contract suite in `tests/gateways/` checks them against each one):

1. Ids. `OriginateRequest.call_id` is ours (a UUID string); the driver makes the PBX use it as the
   customer channel's id (Asterisk `ChannelId`, FreeSWITCH `origination_uuid`) and reports every event
   of that call under it. Calls an agent dials by hand get an id from the driver (the PBX's id of the
   agent's channel) announced by `ManualCallStarted`.
2. Events of one originated call, in order (the customer's channel decides, whatever order the PBX
   reports the originate's own result in):
   `CallRinging`? -> `CallAnswered`? -> `CallConnected`? -> `CallEnded` (exactly once, always last).
   `CallAnswered` comes once: at answer, or, when the request asked for answering machine detection,
   when the verdict is known (`answer` says human / machine / unknown; without AMD it is unknown).
   `CallConnected` comes when the customer is bridged to the agent asked for by `connect_agent`;
   `AgentLegFailed` when that agent's phone did not take the call (no answer within the PBX's agent
   ring time, busy, unreachable): the customer is still up, waiting, and may be connected to another
   agent. Its `detail` is the PBX's own status word, verbatim (Asterisk's DialStatus: NOANSWER, BUSY,
   CHANUNAVAIL, CONGESTION ...; FreeSWITCH's originate disposition: NO_ANSWER, USER_BUSY,
   USER_NOT_REGISTERED ...), so the engine can tell an agent who did not answer from a PBX-side reason.
   Either may come more than once if `connect_agent` is called again.
3. A call the PBX still has is never reported ended: `CallEnded` comes when its channel is gone (or
   when the PBX never created one). An originate's own report (FreeSWITCH's `BACKGROUND_JOB -ERR`,
   Asterisk's failure `OriginateResponse`) is not the end while a channel exists: after the answer
   it ends nothing, and `connect_agent` sent at `CallAnswered`, before that report, still connects.
   `CallEnded.result` classifies the end the same way on every PBX:
   - `answered`: the customer had answered (whatever happened next, e.g. an abandon message);
   - `busy` (Q.850 17), `no_answer` (19; also when the ring timeout expires),
   - `congestion` (34, 42; chan_pjsip's SIP 503): the network had no room, kept apart from `failed`,
   - `failed`: unreachable, unallocated, unknown peer (41, 3, 1, 102 ...),
   - `cancelled`: we hung it up before answer (`hangup()` while ringing),
   - `lost`: the driver lost track of it (link drop, then the PBX no longer knows the call),
   - `refused`: the PBX refused or dropped the call before the customer's line was tried: it never
     created a channel (FreeSWITCH over `sessions-per-second`, or shutting down: `-ERR` with not one
     channel event), refused the request (Asterisk `Response: Error`, e.g. "Asterisk is shutting
     down"), or cut the ringing call itself (a shutdown or restart: FreeSWITCH SYSTEM_SHUTDOWN,
     Asterisk Hangup Cause 0). A PBX refusal is a gateway fault, never a customer's outcome: the
     engine gives the lead back unattempted and backs the gateway off.
   `cause` is the Q.850 cause the PBX reported (0 when it reported none; a customer's hang-up that
   chan_pjsip reports without a cause counts as 16) and `detail` a short human-readable note with the
   PBX's own words (e.g. "Hangup Cause 17 (User busy), TechCause 486", "USER_BUSY, sip 486").
4. Errors. `originate()` returns once the request is on the wire; every outcome after that (including
   the PBX refusing it) arrives as events. It raises only `Invalid` (a value failed validation: nothing
   was sent) or `GatewayUnavailable` (the link is down: nothing was sent). Other commands raise
   `GatewayUnavailable`, `CommandTimeout`, `CallNotFound` or `GatewayError`.
   A driver never re-sends an originate: if the link drops after one was sent, the call is followed
   after reconnect by a resync against the PBX's channel list and ends as `lost` if it is gone.
5. Every await on the PBX has a timeout. The driver keeps its link alive (keepalive that detects a
   dead or silent link), reconnects with capped exponential backoff (a login refused because the PBX
   is shutting down is retried the same way), reports `GatewayLink` up/down, resyncs after reconnect
   and reports channels it does not know as `UnknownChannel` (not on the first connection: the engine
   lists those with `active_calls()` and adopts its own).
   `active_calls()` says which calls are answered (`ActiveCall.answered`: the customer's channel is
   up); `adopt()` of one leaves it ready for `connect_agent` and reports its later end as any other.
8. Draining. When the PBX announces a shutdown or restart (Asterisk's `Shutdown` event or any action
   refused "shutting down"; FreeSWITCH's SHUTDOWN / SHUTDOWN_REQUESTED, or `api status` "not ready"),
   the driver emits `GatewayDraining` once per link. The link may stay open a while (FreeSWITCH about
   31 s), refusing every call; the engine places nothing through it until the link has gone down and
   come back up. The driver itself still sends what it is asked: the PBX refuses, and the call ends
   `refused`.
6. Nothing unvalidated reaches the wire: numbers, extensions, variables, caller IDs and sound names
   go through `callcenter.validation` before any byte is written.
7. `emit` is called on the event loop that called `start()`, never from another thread, and must
   not block.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from callcenter.engine.commands import OriginateRequest
from callcenter.engine.events import ActiveCall, EventSink, SpyMode
from callcenter.errors import Invalid
from callcenter.validation import validate_extension


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
