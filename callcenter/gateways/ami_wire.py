"""AMI on the wire: frames bytes into messages, matches replies to actions by ActionID, drops unwanted
events before parsing them. No call policy here (that is `asterisk.py`).

Messages that survive the filter are parsed by panoramisk's `Message.from_line`, so the rest of the
driver reads the same case-insensitive `Message` objects a panoramisk user would. Why the framing and
the reply matching are ours: docs/decisions/0001; why events are dropped unparsed: 0006.

Every string written goes through `encode_action`, which refuses CR, LF and other control characters
in any header name or value: a last fence behind `callcenter.validation`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from panoramisk.message import Message
from panoramisk.utils import EOL

from callcenter.errors import Invalid
from callcenter.gateways.base import CommandTimeout, GatewayError, GatewayUnavailable

log = logging.getLogger(__name__)

_EOL = EOL.encode()
_END = _EOL + _EOL
_EVENT = b"Event: "
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")

Headers = Iterable[tuple[str, str]]


def encode_action(action: str, action_id: str, headers: Headers = ()) -> bytes:
    """One AMI action as bytes. Raises `Invalid` (and writes nothing) if any name or value could end
    the message or start another one."""
    lines = [f"Action: {action}", f"ActionID: {action_id}"]
    for key, value in (("Action", action), ("ActionID", action_id), *headers):
        if not _KEY.fullmatch(key):
            raise Invalid(f"AMI header name {key!r} is not allowed", field=key)
        if not isinstance(value, str) or _UNSAFE.search(value):
            raise Invalid(f"AMI header {key} contains a control character", field=key)
        if key not in ("Action", "ActionID"):
            lines.append(f"{key}: {value}")
    return (EOL.join(lines) + EOL + EOL).encode("utf-8")


class ActionFailed(GatewayError):
    """Asterisk answered an action with `Response: Error`."""

    def __init__(self, action: str, message: str) -> None:
        super().__init__(f"{action} refused by Asterisk: {message or 'no reason given'}")
        self.action = action
        self.reason = message


@dataclass
class _Pending:
    action: str
    future: asyncio.Future[Message | list[Message]]
    listing: bool = False  # a list action: collect events until `...Complete`
    items: list[Message] = field(default_factory=list)


class AmiProtocol(asyncio.Protocol):
    """One AMI connection. `on_message` gets every event that passed `wanted_events` and every
    response that no pending action claimed (e.g. the immediate reply to a fire-and-forget
    Originate); it runs on the event loop, inside `data_received`."""

    def __init__(
        self,
        *,
        on_message: Callable[[Message], None],
        wanted_events: frozenset[str],
        id_prefix: str = "cc",
        on_error: Callable[[str, str], None] | None = None,
    ) -> None:
        self._on_message = on_message
        self._on_error = on_error  # (action, message) of every `Response: Error`, claimed or not
        self._wanted = frozenset(name.encode() for name in wanted_events)
        self._ids = itertools.count(1)
        self._prefix = id_prefix
        self._buf = b""
        self._pending: dict[str, _Pending] = {}
        self.transport: asyncio.Transport | None = None
        self.banner: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.last_rx = time.monotonic()
        self.dropped = 0  # events dropped by the name filter (for tests and benchmarks)

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        buf = self._buf + data if self._buf else data
        if not self.banner.done():
            nl = buf.find(_EOL)
            if nl < 0:
                self._buf = buf
                return
            self.banner.set_result(buf[:nl].decode("utf-8", "replace"))
            buf = buf[nl + 2 :]
        parts = buf.split(_END)
        self._buf = parts.pop()
        wanted = self._wanted
        for part in parts:
            if part.startswith(_EVENT):
                # Drop noise on the event name alone, before decoding or parsing anything.
                nl = part.find(_EOL, 7)
                if (part[7:nl] if nl > 0 else part[7:]) not in wanted:
                    self.dropped += 1
                    continue
            message = Message.from_line(part.decode("utf-8", "replace").strip())
            if message is not None:
                self._dispatch(message)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"connection lost: {exc}" if exc else "connection closed by Asterisk"
        self._fail_all(reason)
        if not self.banner.done():
            self.banner.set_exception(GatewayUnavailable(reason))
        if not self.lost.done():
            self.lost.set_result(reason)

    # --- sending -------------------------------------------------------------------------------

    def next_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing() and not self.lost.done()

    def send(self, action: str, headers: Headers = (), *, action_id: str | None = None) -> str:
        """Write an action without waiting for its reply; returns its ActionID. The reply reaches
        `on_message`. Raises `Invalid` (nothing written) or `GatewayUnavailable`."""
        action_id = action_id or self.next_id()
        payload = encode_action(action, action_id, headers)
        if not self.is_open:
            raise GatewayUnavailable(f"AMI link is down, {action} not sent")
        assert self.transport is not None
        self.transport.write(payload)
        return action_id

    async def request(
        self, action: str, headers: Headers = (), *, timeout: float, listing: bool = False
    ) -> Message | list[Message]:
        """Write an action and wait (at most `timeout` s) for its reply, or for its whole event list
        when `listing`. Raises `CommandTimeout`, `GatewayUnavailable` or `ActionFailed`."""
        action_id = self.next_id()
        payload = encode_action(action, action_id, headers)
        if not self.is_open:
            raise GatewayUnavailable(f"AMI link is down, {action} not sent")
        future: asyncio.Future[Message | list[Message]] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = _Pending(action, future, listing)
        assert self.transport is not None
        self.transport.write(payload)
        try:
            async with asyncio.timeout(timeout):  # unlike wait_for, never swallows a cancellation
                return await future
        except TimeoutError:
            raise CommandTimeout(f"Asterisk did not answer {action} within {timeout:g}s") from None
        finally:
            self._pending.pop(action_id, None)

    def abort(self, reason: str) -> None:
        """Drop the connection now (a dead or silent link): pending actions fail at once."""
        self._fail_all(reason)
        if not self.lost.done():
            self.lost.set_result(reason)
        if self.transport is not None:
            self.transport.abort()

    # --- internals -----------------------------------------------------------------------------

    def _dispatch(self, message: Message) -> None:
        action_id = message.get("ActionID")
        pending = self._pending.get(action_id) if action_id else None
        if self._on_error is not None and message.get("Response") == "Error":
            self._on_error(pending.action if pending else "", message.get("Message", ""))
        if pending is None:
            self._on_message(message)
            return
        future = pending.future
        if future.done():
            return
        if "Response" in message:
            if message["Response"] == "Error":
                future.set_exception(ActionFailed(pending.action, message.get("Message", "")))
            elif pending.listing and message.get("EventList", "").lower() == "start":
                return  # the list follows
            elif pending.listing:
                future.set_result([])
            else:
                future.set_result(message)
        elif pending.listing:
            if message.get("EventList", "").lower() == "complete" or message["Event"].endswith("Complete"):
                future.set_result(pending.items)
            else:
                pending.items.append(message)
        else:
            self._on_message(message)

    def _fail_all(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for item in pending.values():
            if not item.future.done():
                item.future.set_exception(GatewayUnavailable(f"{item.action}: {reason}"))
