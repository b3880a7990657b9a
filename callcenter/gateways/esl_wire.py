"""FreeSWITCH event socket (ESL) on asyncio: framing, parsing and one authenticated connection.

This is the wire of the FreeSWITCH driver (`esl_calls.py` maps events to domain events; `freeswitch.py`
owns the commands, reconnect, keepalive and resync). It replaces greenswitch 0.0.19: the reasons and the
evidence are in docs/decisions/0003.

Wire format (FreeSWITCH 1.10, mod_event_socket, inbound mode):
- every message is a header block of `Name: value\\n` lines closed by an empty line, then exactly
  `Content-Length` bytes of body when that header is present;
- replies come in the order the commands were sent: `command/reply` (header `Reply-Text`) for
  `auth`, `event`, `bgapi`, `exit`; `api/response` (the result is the body) for `api`;
- events are `text/event-plain`: the body is itself a header block of URL-encoded values, and may carry
  a second `Content-Length` with a body of its own (`BACKGROUND_JOB`: `+OK <uuid>\\n` / `-ERR CAUSE\\n`).

Everything here parses by byte counts, never by guessing line ends inside a body, which is where
greenswitch glued the job result onto the `Content-Length` header value.
"""

from __future__ import annotations

import asyncio
import collections
import re
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from callcenter.errors import Invalid

# A CR, LF or NUL would end the command (or the header) early and start another one.
_WIRE_UNSAFE = re.compile(r"[\r\n\x00]")
_HEADER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


class EslError(Exception):
    """Base of the wire-level failures."""


class EslAuthError(EslError):
    """FreeSWITCH refused the password (`-ERR invalid`) or the address (`text/rude-rejection`)."""


class EslClosed(EslError):
    """The connection is gone; pending commands fail with this."""


@dataclass(frozen=True, slots=True)
class EslReply:
    """The answer to one command: `command/reply` (text in `reply_text`) or `api/response` (`body`)."""

    content_type: str
    reply_text: str = ""
    body: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The meaningful line: the reply text, or the body of an api response, stripped."""
        return (self.body if self.content_type == "api/response" else self.reply_text).strip()

    @property
    def ok(self) -> bool:
        return self.text.startswith("+OK")


class EslEvent:
    """One `text/event-plain` event, parsed lazily: `get` finds the one header asked for in the header
    block (a substring search, in C), so a driver that reads ten of an event's hundred-odd headers
    does not split the other ninety; `raw` splits the whole block (once) for whoever wants every
    header. Values stay URL-encoded until asked for through `get`."""

    __slots__ = ("_head", "_raw", "body")

    def __init__(self, head: str, body: str = "") -> None:
        self._raw: dict[str, str] | None = None
        self._head = "\n" + head  # every header line starts with a newline: one search pattern
        self.body = body

    @property
    def raw(self) -> dict[str, str]:
        """Every header, URL-encoded as sent."""
        if self._raw is None:
            self._raw = _split_headers(self._head[1:])
        return self._raw

    def header(self, key: str) -> str | None:
        """One header's value as sent (URL-encoded), or None."""
        if self._raw is not None:
            return self._raw.get(key)
        head = self._head
        needle = "\n" + key + ":"
        i = head.find(needle)  # values are URL-encoded: no newline inside one, so no false match
        if i < 0:
            return None
        start = i + len(needle)
        if head.startswith(" ", start):
            end = head.find("\n", start)
            return head[start + 1 : end if end >= 0 else len(head)]
        return "" if start == len(head) or head[start] == "\n" else None  # `Name:`: empty

    @property
    def name(self) -> str:
        return self.header("Event-Name") or ""

    def get(self, key: str, default: str | None = None) -> str | None:
        value = self.header(key)
        if value is None:
            return default
        return unquote(value) if "%" in value else value

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"EslEvent({self.name}, {self.header('Unique-ID') or self.header('Job-UUID')})"


def _split_headers(block: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split("\n"):
        name, sep, value = line.partition(": ")
        if sep:
            headers[name] = value
        elif line.endswith(":"):  # `Name:` with an empty value
            headers[line[:-1]] = ""
    return headers


def parse_event(data: bytes) -> EslEvent:
    """The body of a `text/event-plain` message (header block, optional inner body) as an event whose
    headers are read on demand (see `EslEvent`)."""
    end = data.find(b"\n\n")
    head = (data if end < 0 else data[:end]).decode("utf-8", "replace")
    event = EslEvent(head)
    if end >= 0:
        length = event.header("Content-Length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                n = -1
            if n > 0:
                event.body = data[end + 2 : end + 2 + n].decode("utf-8", "replace")
    return event


class EslFramer:
    """Cuts a byte stream into (outer headers, body bytes) messages; feed it whatever arrives."""

    __slots__ = ("_buf", "_headers", "_need")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._headers: dict[str, str] | None = None  # header block read, waiting for the body
        self._need = 0

    def feed(self, data: bytes) -> list[tuple[dict[str, str], bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[dict[str, str], bytes]] = []
        pos = 0
        while True:
            if self._headers is None:
                end = buf.find(b"\n\n", pos)
                if end < 0:
                    break
                headers = _split_headers(buf[pos:end].decode("utf-8", "replace"))
                pos = end + 2
                length = headers.get("Content-Length")
                if length is None:
                    out.append((headers, b""))
                    continue
                try:
                    self._need = int(length)
                except ValueError as exc:
                    raise EslError(f"bad Content-Length {length!r}") from exc
                if self._need < 0:
                    raise EslError(f"bad Content-Length {length!r}")
                self._headers = headers
            if len(buf) - pos < self._need:
                break
            out.append((self._headers, bytes(buf[pos : pos + self._need])))
            pos += self._need
            self._headers = None
        if pos:
            del buf[:pos]
        return out

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)


def check_wire(text: str, *, field: str = "command") -> str:
    """Refuse anything that would end an ESL command or header early; nothing is sent then."""
    if not isinstance(text, str) or _WIRE_UNSAFE.search(text):
        raise Invalid(f"{field} must not contain CR, LF or NUL", field=field)
    return text


def encode_command(line: str, headers: Mapping[str, str] | None = None) -> bytes:
    """`line\\n[Name: value\\n...]\\n` after checking every part; raises `Invalid` before any byte exists."""
    check_wire(line)
    parts = [line, "\n"]
    for name, value in (headers or {}).items():
        if not _HEADER_NAME.fullmatch(name):
            raise Invalid(f"bad ESL header name {name!r}", field="header")
        check_wire(value, field=name)
        parts += [name, ": ", value, "\n"]
    parts.append("\n")
    return "".join(parts).encode("utf-8")


EventHandler = Callable[[EslEvent], None]
LostHandler = Callable[[BaseException | None], None]
EventFilter = Callable[[bytes], bool]


def peek_header(body: bytes, name: bytes) -> bytes | None:
    """The raw value of header `name` (b"Event-Name") of an unparsed event body, or None: a cheap
    look before deciding to parse. Only the first header of the block is matched."""
    if body.startswith(name + b": "):
        start = len(name) + 2
    else:
        i = body.find(b"\n" + name + b": ")
        if i < 0:
            return None
        start = i + len(name) + 3
    end = body.find(b"\n", start)
    return body[start : end if end >= 0 else len(body)]


class EslProtocol(asyncio.Protocol):
    """One inbound ESL connection. Replies are matched to commands first-in first-out, which is how
    mod_event_socket answers; a command that times out therefore leaves the order unknown, and the
    owner must drop the connection (`abort`) rather than keep using it."""

    def __init__(
        self,
        on_event: EventHandler,
        on_lost: LostHandler | None = None,
        *,
        monotonic: Callable[[], float],
        want: EventFilter | None = None,
    ) -> None:
        self._on_event = on_event
        self._on_lost = on_lost
        self._want = want  # looks at the raw body first: events nobody wants are never parsed
        self.skipped = 0
        self._monotonic = monotonic
        self._framer = EslFramer()
        self._pending: collections.deque[asyncio.Future[EslReply]] = collections.deque()
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.auth_requested: asyncio.Future[None] = self._loop.create_future()
        self.closed: asyncio.Future[BaseException | None] = self._loop.create_future()
        self.last_rx = monotonic()
        self.disconnect_notice = ""

    # --- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - platform specific
                pass

    def data_received(self, data: bytes) -> None:
        self.last_rx = self._monotonic()
        try:
            messages = self._framer.feed(data)
        except EslError as exc:
            self.abort(exc)
            return
        for headers, body in messages:
            self._dispatch(headers, body)

    def connection_lost(self, exc: Exception | None) -> None:
        error = EslClosed(str(exc) if exc else self.disconnect_notice or "connection closed")
        while self._pending:
            fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(error)
        if not self.auth_requested.done():
            self.auth_requested.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(exc)
        if self._on_lost is not None:
            self._on_lost(exc)

    # --- messages --------------------------------------------------------------------------------

    def _dispatch(self, headers: dict[str, str], body: bytes) -> None:
        kind = headers.get("Content-Type", "")
        if kind == "text/event-plain":
            if self._want is None or self._want(body):
                self._on_event(parse_event(body))
            else:
                self.skipped += 1
        elif kind in ("command/reply", "api/response"):
            if not self._pending:
                # A reply nobody asked for: the FIFO is out of step, nothing after it can be trusted.
                self.abort(EslError(f"unexpected {kind}"))
                return
            fut = self._pending.popleft()
            if not fut.done():
                fut.set_result(
                    EslReply(kind, headers.get("Reply-Text", ""), body.decode("utf-8", "replace"), headers)
                )
        elif kind == "auth/request":
            if not self.auth_requested.done():
                self.auth_requested.set_result(None)
        elif kind == "text/disconnect-notice":
            self.disconnect_notice = body.decode("utf-8", "replace").strip() or "disconnect notice"
        elif kind == "text/rude-rejection":
            error = EslAuthError(body.decode("utf-8", "replace").strip() or "rude rejection")
            if not self.auth_requested.done():
                self.auth_requested.set_exception(error)
            self.abort(error)
        # log/data and anything newer are ignored on purpose.

    # --- commands --------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing() and not self.closed.done()

    def send(self, line: str, headers: Mapping[str, str] | None = None) -> asyncio.Future[EslReply]:
        """Write one command and return the future of its reply (no timeout here: the caller's)."""
        data = encode_command(line, headers)  # raises Invalid before anything is written
        if not self.is_open:
            raise EslClosed("connection is not open")
        fut: asyncio.Future[EslReply] = self._loop.create_future()
        self._pending.append(fut)
        assert self.transport is not None
        self.transport.write(data)
        return fut

    @property
    def pending(self) -> int:
        return len(self._pending)

    def abort(self, reason: BaseException | None = None) -> None:
        """Drop the connection at once (a dead or out-of-step link); `connection_lost` follows."""
        if reason is not None and not self.disconnect_notice:
            self.disconnect_notice = str(reason)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()


async def open_connection(
    host: str,
    port: int,
    password: str,
    *,
    timeout: float,
    on_event: EventHandler,
    on_lost: LostHandler | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    want: EventFilter | None = None,
) -> EslProtocol:
    """Connect, wait for `auth/request`, authenticate. Raises `OSError`/`TimeoutError` (no link),
    `EslAuthError` (refused) or `EslClosed`; the connection is closed on every failure."""
    check_wire(password, field="password")
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(
        loop.create_connection(
            lambda: EslProtocol(on_event, on_lost, monotonic=monotonic, want=want), host, port
        ),
        timeout,
    )
    try:
        await asyncio.wait_for(proto.auth_requested, timeout)
        reply = await asyncio.wait_for(proto.send(f"auth {password}"), timeout)
        if reply.reply_text.strip() != "+OK accepted":
            raise EslAuthError(reply.reply_text.strip() or "auth refused")
    except BaseException:
        proto.abort()
        raise
    return proto
