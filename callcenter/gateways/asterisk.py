"""The Asterisk driver: the gateway contract (`base.py`) over AMI, on panoramisk 1.4's message parser.

Layout: `ami_wire.py` frames bytes and matches replies (the wire), `ami_calls.py` turns AMI events into
domain events (the call bookkeeping), `ami_dialplan.py` names what the dialplan and the driver share,
and this module owns the commands and the link (login, keepalive, reconnect, resync). `originate()`
writes one async `Originate` with `ChannelId` = our call id and returns; the other commands redirect
the customer channel or originate into the shipped dialplan (`sip-config/README.md`). Every await on
the PBX has a timeout (`timeout_s`); `emit` is called on the loop, inside `data_received`, and must not
block.

Decisions (docs/decisions/): 0001 our own AMI client on panoramisk's parser, not its `Manager`;
0002 agents connected by `Redirect` into a dialplan context; 0006 few events, dropped before parsing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from panoramisk.message import Message

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
from callcenter.gateways.ami_calls import (
    ASTERISK_UID,
    WANTED_EVENTS,
    Call,
    CallTracker,
    Spy,
    bridge_peer,
    endpoint_of,
)
from callcenter.gateways.ami_dialplan import DEFAULT_DIALPLAN, Dialplan
from callcenter.gateways.ami_wire import ActionFailed, AmiProtocol
from callcenter.gateways.base import (
    CallNotFound,
    CommandTimeout,
    GatewayError,
    GatewayUnavailable,
    check_spy_request,
    render_template,
)
from callcenter.validation import (
    validate_call_id,
    validate_extension,
    validate_number,
    validate_sound,
    validate_variables,
)

log = logging.getLogger(__name__)

_CALLER_NAME_META = re.compile(r'["<>\\]')
# The message of every action Asterisk refuses while it shuts down or restarts, Login and Ping included
# (asterisk-20-pjsip/graceful-restart-while-ringing.jsonl, graceful-restart-login-during-shutdown.jsonl).
_SHUTTING_DOWN = re.compile(r"(?i)shutting down")


class AsteriskGateway:
    """A `Gateway` on Asterisk's AMI; see the module docstring."""

    kind = "asterisk"

    def __init__(
        self,
        *,
        host: str,
        port: int = 5038,
        username: str,
        secret: str,
        dial_template: str = "PJSIP/{number}@trunk",
        agent_template: str = "PJSIP/{extension}",
        clock: Callable[[], float] = time.time,
        timeout_s: float = 5.0,
        keepalive_s: float = 10.0,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        end_grace_s: float = 0.5,
        dialplan: Dialplan = DEFAULT_DIALPLAN,
        # `system` for the Shutdown event (manager.conf must grant `read = ...,system` and filter it in).
        events: str = "call,user,system",
    ) -> None:
        render_template(dial_template, number="0")  # a bad template fails here, not on the first call
        render_template(agent_template, extension="0")
        if "{number}" not in dial_template or "{extension}" not in agent_template:
            raise Invalid("dial templates need {number} / {extension}", field="dial_template")
        if not (timeout_s > 0 and keepalive_s > 0 and 0 < reconnect_initial_s <= reconnect_max_s):
            raise ValueError("timeouts and backoff must be positive, initial backoff <= its cap")
        self.host, self.port = host, port
        self.username, self._secret = username, secret
        self.dial_template, self.agent_template = dial_template, agent_template
        self.clock = clock
        self.timeout_s = timeout_s
        self.keepalive_s = keepalive_s
        self.reconnect_initial_s, self.reconnect_max_s = reconnect_initial_s, reconnect_max_s
        self.end_grace_s = end_grace_s
        self.dialplan = dialplan
        self.events = events
        self._emit: EventSink | None = None
        self._proto: AmiProtocol | None = None
        self._up = False
        self._draining = False  # GatewayDraining sent on this link
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._originating: dict[str, str] = {}  # Originate ActionID -> call / spy id, until its reply
        self._tracker = CallTracker(
            emit=self._send,
            clock=clock,
            dialplan=dialplan,
            end_grace_s=end_grace_s,
            hangup=self._hangup_now,
        )
        self._calls = self._tracker.calls
        self._spies = self._tracker.spies
        self.originates_sent = 0
        self.reconnects = 0

    @classmethod
    def from_settings(cls, settings: Any, *, clock: Callable[[], float] = time.time) -> AsteriskGateway:
        """The driver for `callcenter.config.Settings` (ami_* and gateway_* settings)."""
        return cls(
            host=settings.ami_host,
            port=settings.ami_port,
            username=settings.ami_username,
            secret=settings.ami_secret.get_secret_value(),
            dial_template=settings.ami_dial_template,
            agent_template=settings.ami_agent_template,
            clock=clock,
            timeout_s=settings.gateway_timeout_s,
            keepalive_s=settings.gateway_keepalive_s,
        )

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self, emit: EventSink) -> None:
        self._emit = emit
        self._closing = False
        self._proto = await self._connect()
        self._up = True
        self._send(GatewayLink(True, self.clock(), f"AMI {self.host}:{self.port} as {self.username}"))
        self._supervisor = asyncio.create_task(self._supervise(), name="ami-supervisor")
        self._supervisor.add_done_callback(_log_task_failure)

    async def close(self) -> None:
        self._closing = True
        self._up = False
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.wait({self._supervisor}, timeout=self.timeout_s)  # never raises
            self._supervisor = None
        proto, self._proto = self._proto, None
        if proto is not None and proto.is_open:
            with contextlib.suppress(GatewayError):
                await proto.request("Logoff", timeout=min(1.0, self.timeout_s))
            proto.abort("closed by the controller")
        self._tracker.stop_timers()

    async def ping(self) -> float:
        """One Ping round trip, in seconds (a health check; also proves every earlier reply was read)."""
        started = time.monotonic()
        await self._link().request("Ping", timeout=self.timeout_s)
        return time.monotonic() - started

    # --- commands --------------------------------------------------------------------------------

    async def originate(self, request: OriginateRequest) -> None:
        proto = self._link()
        call_id = request.call_id
        if call_id in self._calls or self._tracker.ended_lately(call_id):
            raise Invalid(f"call id {call_id} is already in use", field="call_id")
        headers = self._originate_headers(request)
        call = Call(call_id, amd=request.amd)
        self._calls[call_id] = call  # before the write: its first events can come in the same read
        try:
            action_id = proto.send("Originate", headers)
        except BaseException:
            del self._calls[call_id]
            raise
        self._originating[action_id] = call_id
        self.originates_sent += 1

    def _originate_headers(self, request: OriginateRequest) -> list[tuple[str, str]]:
        dp = self.dialplan
        variables = dict(request.variables)
        if variables.get(dp.call_id_var, request.call_id) != request.call_id:
            raise Invalid(f"variable {dp.call_id_var} is reserved for the call id", field="variables")
        variables[dp.call_id_var] = request.call_id
        validate_variables(variables)
        headers = [
            ("Channel", render_template(self.dial_template, number=validate_number(request.digits))),
            ("Context", dp.amd_context if request.amd else dp.answered_context),
            ("Exten", dp.answered_exten),
            ("Priority", "1"),
            ("Timeout", str(int(request.ring_timeout_s * 1000))),
        ]
        if request.caller_id or request.caller_name:
            if _CALLER_NAME_META.search(request.caller_name):
                raise Invalid("caller name must not contain quotes, < > or \\", field="caller_name")
            number = validate_number(request.caller_id, field="caller_id") if request.caller_id else ""
            headers.append(("CallerID", f'"{request.caller_name}" <{number}>'))
        headers.append(("Async", "true"))  # explicit, always: docs/decisions/0001
        headers += [("Variable", f"{name}={value}") for name, value in variables.items()]
        headers.append(("ChannelId", validate_call_id(request.call_id)))
        return headers

    async def hangup(self, call_id: str) -> None:
        call = self._require(call_id)
        proto = self._link()
        call.hangup_requested = True
        channel = call.channel or call.call_id  # Asterisk finds a channel by name or by Uniqueid
        try:
            await proto.request("Hangup", [("Channel", channel), ("Cause", "16")], timeout=self.timeout_s)
        except ActionFailed as exc:
            if call_id not in self._calls:
                return  # it ended while we asked
            if not call.channel:
                return  # not created yet: `Newchannel` hangs it up as soon as it exists
            raise GatewayError(str(exc)) from None

    async def connect_agent(self, call_id: str, extension: str) -> None:
        validate_extension(extension)
        call = self._require(call_id)
        if call.manual or not call.answered or call.connected or not call.channel:
            raise CallNotFound(f"call {call_id} is not an answered call waiting for an agent")
        proto = self._link()
        previous, call.connecting = call.connecting, extension  # before the write: BridgeEnter is fast
        headers = [
            ("Channel", call.channel),
            ("Context", self.dialplan.agent_connect_context),
            ("Exten", extension),
            ("Priority", "1"),
        ]
        try:
            await proto.request("Redirect", headers, timeout=self.timeout_s)
        except ActionFailed as exc:
            call.connecting = previous
            raise GatewayError(str(exc)) from None

    async def play_and_hangup(self, call_id: str, sound: str) -> None:
        validate_sound(sound)
        call = self._require(call_id)
        if call.manual or not call.answered or not call.channel:
            raise CallNotFound(f"call {call_id} has not been answered")
        proto = self._link()
        dp = self.dialplan
        try:
            await proto.request(
                "Setvar",
                [("Channel", call.channel), ("Variable", dp.sound_var), ("Value", sound)],
                timeout=self.timeout_s,
            )
            await proto.request(
                "Redirect",
                [
                    ("Channel", call.channel),
                    ("Context", dp.abandon_context),
                    ("Exten", dp.abandon_exten),
                    ("Priority", "1"),
                ],
                timeout=self.timeout_s,
            )
        except ActionFailed as exc:
            raise GatewayError(str(exc)) from None
        call.sound = sound

    async def spy(self, *, target_extension: str, supervisor_extension: str, mode: SpyMode) -> str:
        mode = check_spy_request(target_extension, supervisor_extension, mode)
        target = next(
            (
                c
                for c in self._calls.values()
                if c.connected and c.extension == target_extension and (c.agent_channel or c.manual)
            ),
            None,
        )
        if target is None:
            raise CallNotFound(f"agent {target_extension} has no connected call to listen to")
        proto = self._link()
        dp = self.dialplan
        spy_id = validate_call_id(f"spy-{uuid.uuid4().hex}")
        spied = target.channel if target.manual else target.agent_channel
        variables = validate_variables({dp.spy_channel_var: spied, dp.call_id_var: spy_id})
        headers = [
            ("Channel", render_template(self.agent_template, extension=supervisor_extension)),
            ("Context", dp.spy_context),
            ("Exten", dp.spy_exten(mode)),
            ("Priority", "1"),
            ("Timeout", "30000"),
            ("CallerID", f'"{mode.value} {target_extension}" <{supervisor_extension}>'),
            ("Async", "true"),
            *[("Variable", f"{k}={v}") for k, v in variables.items()],
            ("ChannelId", spy_id),
        ]
        self._spies[spy_id] = Spy(spy_id, target_extension, mode)
        try:
            action_id = proto.send("Originate", headers)
        except BaseException:
            del self._spies[spy_id]
            raise
        self._originating[action_id] = spy_id
        return spy_id

    async def active_calls(self) -> list[ActiveCall]:
        channels = await self._channels(self._link())
        result = []
        for snap in channels:
            uid = snap.get("Uniqueid", "")
            call = self._calls.get(uid)
            ours = call is not None or (bool(uid) and not ASTERISK_UID.fullmatch(uid))
            extension = call.extension if call is not None else None
            if extension is None and snap.get("Context") == self.dialplan.agents_context:
                extension = endpoint_of(snap.get("Channel", ""))
            result.append(
                ActiveCall(
                    channel=snap.get("Channel", ""),
                    call_id=uid if ours else None,
                    state=snap.get("ChannelStateDesc", "").lower(),
                    extension=extension,
                    # ChannelState 6 (Up): answered, maybe while no controller was there to see it
                    # (reconnect-coreshowchannels-answered.jsonl: Up, in Wait, no bridge).
                    answered=snap.get("ChannelState") == "6",
                )
            )
        return result

    async def adopt(self, call_id: str) -> bool:
        validate_call_id(call_id)
        channels = await self._channels(self._link())
        snap = next((m for m in channels if m.get("Uniqueid") == call_id), None)
        if snap is None:
            return False
        if call_id in self._calls:
            return True
        # Transitions are reported from the current state on: the caller knows the past.
        call = Call(call_id, channel=snap.get("Channel", ""))
        state = snap.get("ChannelState")
        call.ringing = state == "5"
        call.answered = call.announced = state == "6"
        peer = bridge_peer(snap, channels)
        if peer is not None:
            call.connected = True
            call.agent_channel = peer.get("Channel", "")
            call.extension = call.connecting = endpoint_of(call.agent_channel)
        self._calls[call_id] = call
        return True

    # --- link ------------------------------------------------------------------------------------

    def _link(self) -> AmiProtocol:
        proto = self._proto
        if not self._up or proto is None or not proto.is_open:
            raise GatewayUnavailable("the AMI link is down")
        return proto

    async def _connect(self) -> AmiProtocol:
        """Open, read the banner, log in: all under `timeout_s`. Raises GatewayUnavailable."""
        loop = asyncio.get_running_loop()
        where = f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.timeout_s):
                _, proto = await loop.create_connection(
                    lambda: AmiProtocol(
                        on_message=self._on_message, wanted_events=WANTED_EVENTS, on_error=self._on_error
                    ),
                    self.host,
                    self.port,
                )
        except (OSError, TimeoutError) as exc:
            raise GatewayUnavailable(f"cannot reach AMI at {where}: {exc or 'timeout'}") from None
        try:
            async with asyncio.timeout(self.timeout_s):
                banner = await asyncio.shield(proto.banner)
            if not banner.startswith("Asterisk Call Manager/"):
                raise GatewayUnavailable(f"{where} is not an AMI server (banner {banner[:60]!r})")
            await proto.request(
                "Login",
                [("Username", self.username), ("Secret", self._secret), ("Events", self.events)],
                timeout=self.timeout_s,
            )
        except ActionFailed as exc:
            # A wrong secret, or Asterisk shutting down (it refuses every Login then): either way this
            # attempt failed, and the reconnect loop tries again with backoff.
            proto.abort("login refused")
            raise GatewayUnavailable(f"AMI login as {self.username!r} refused: {exc.reason}") from None
        except (TimeoutError, CommandTimeout):
            proto.abort("no banner or login reply")
            raise GatewayUnavailable(f"AMI at {where} did not answer the login in time") from None
        except GatewayUnavailable:
            proto.abort("login failed")
            raise
        return proto

    async def _supervise(self) -> None:
        """Watch the link; when it dies, report it, reconnect with backoff and resync. Forever."""
        while not self._closing:
            proto = self._proto
            assert proto is not None
            reason = await self._watch(proto)
            if self._closing:
                return
            self._up = False
            self._originating.clear()
            log.warning("AMI link to %s:%s down: %s", self.host, self.port, reason)
            self._send(GatewayLink(False, self.clock(), reason))
            await self._reconnect()

    async def _watch(self, proto: AmiProtocol) -> str:
        """Returns why the link is gone. Pings every keepalive/2 and gives each Ping keepalive/2 to
        come back, so a dead or silent link is noticed within `keepalive_s`."""
        loop = asyncio.get_running_loop()
        half = self.keepalive_s / 2
        next_ping = loop.time() + half
        while True:
            wait = next_ping - loop.time()
            if wait > 0:
                done, _ = await asyncio.wait({proto.lost}, timeout=wait)
                if done:
                    return proto.lost.result()
            next_ping = loop.time() + half
            try:
                await proto.request("Ping", timeout=half)
                if self._closing:
                    return "closing"
            except ActionFailed:
                continue  # answered, if only to refuse ("Asterisk is shutting down"): the link is alive
            except CommandTimeout:
                reason = f"no reply to Ping within {half:g}s: the link is dead or silent"
                proto.abort(reason)
                return reason
            except GatewayError as exc:
                return proto.lost.result() if proto.lost.done() else str(exc)

    async def _reconnect(self) -> None:
        attempt = 0
        while not self._closing:
            delay = min(self.reconnect_max_s, self.reconnect_initial_s * 2 ** min(attempt, 30))
            await asyncio.sleep(delay)
            attempt += 1
            try:
                proto = await self._connect()
            except GatewayUnavailable as exc:
                log.warning("AMI reconnect attempt %d failed: %s", attempt, exc)
                continue
            self._proto = proto
            try:
                channels = await self._channels(proto)
            except GatewayError as exc:
                log.warning("AMI resync after reconnect failed: %s", exc)
                proto.abort("resync failed")
                continue
            self._tracker.resync(channels)
            self.reconnects += 1
            self._up = True
            self._draining = False
            log.info(
                "AMI link to %s:%s up again after %d attempt(s), resynced", self.host, self.port, attempt
            )
            self._send(GatewayLink(True, self.clock(), f"reconnected after {attempt} attempt(s), resynced"))
            return

    async def _channels(self, proto: AmiProtocol) -> list[Message]:
        items = await proto.request("CoreShowChannels", timeout=self.timeout_s, listing=True)
        assert isinstance(items, list)
        return items

    # --- messages --------------------------------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        if "Event" in msg:
            if msg.get("Event") == "Shutdown":  # `Shutdown: Cleanly`, `Restart: True|False`
                what = "restarting" if msg.get("Restart", "").lower() == "true" else "shutting down"
                self._drain(f"Asterisk is {what} (Shutdown: {msg.get('Shutdown', '')})")
                return
            self._tracker.on_event(msg)
            return
        # A reply nobody awaits: only an Originate's matters (queued, or refused outright).
        target = self._originating.pop(msg.get("ActionID", ""), None)
        if target is not None and msg.get("Response") == "Error":
            self._tracker.refused(target, f"Originate refused by Asterisk: {msg.get('Message', '')}")

    def _on_error(self, action: str, message: str) -> None:
        """Every `Response: Error` on the link. During a graceful shutdown or restart Asterisk keeps the
        socket open a while and refuses every action "Asterisk is shutting down"; the project's AMI
        user sees no Shutdown event unless manager.conf grants it the system class."""
        if _SHUTTING_DOWN.search(message):
            self._drain(f"{action or 'an action'} refused: {message}")

    def _drain(self, detail: str) -> None:
        if self._draining or not self._up:
            return  # once per link; a refused Login while reconnecting is not news for the engine
        self._draining = True
        log.warning("AMI %s:%s draining: %s", self.host, self.port, detail)
        self._send(GatewayDraining(self.clock(), detail))

    def _hangup_now(self, channel: str) -> None:
        proto = self._proto
        if proto is not None and proto.is_open:
            proto.send("Hangup", [("Channel", channel), ("Cause", "16")])

    def _require(self, call_id: str) -> Call:
        call = self._calls.get(call_id)
        if call is None:
            raise CallNotFound(f"no call {call_id} on this Asterisk")
        return call

    def _send(self, event: GatewayEvent) -> None:
        if self._emit is None:
            return
        try:
            self._emit(event)
        except Exception:  # a consumer's bug must not kill the AMI connection we are reading from
            log.exception("event consumer failed on %r", event)


def _log_task_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("AMI supervisor died", exc_info=task.exception())
