"""What every request goes through before a route sees it (ASGI middleware, installed by `webui.app`
around the routes of every package: webui, crm, chat).

`RequestGuard`, for every request: a body is bounded - a multipart upload by the upload limit
(CALLCENTER_UPLOAD_MAX_MB, plus room for the form's other fields), anything else by `BODY_MAX_BYTES` -
refused (413) by its `Content-Length` before any of it is read, or as soon as a streamed body passes
the limit, not once it is all in.

A NUL in the path or the query is a 400 (databases refuse it in text; nothing legitimate sends it).

And for each request that changes something (POST, PUT, PATCH, DELETE):
- a route that needs a signed-in user gets one before its body is read: no credentials, 401, and no
  permission, 403, without reading a byte of an upload;
- a browser's `Origin` (or, without it, `Referer`) must be this host: a page of another origin - even
  on the same site, where SameSite cookies are sent - is refused (403);
- a request carrying the session cookie of a signed-in session must carry that session's CSRF token
  (the `X-CSRF-Token` header; a plain HTML form may send it as its `csrf_token` field instead).
  Bearer-token calls are exempt: no browser attaches a bearer token on its own. Signing in
  (`/login`, `/api/auth/token`) starts a new session, so it needs no token, only the origin check.

`SecurityHeaders` adds to every response a Content-Security-Policy without inline script (pages keep
their scripts in static/js and their data in `<script type="application/json">` blocks), no framing
(`frame-ancestors 'none'`, X-Frame-Options), `X-Content-Type-Options: nosniff` and a same-origin
Referrer-Policy. The API's description pages (/docs, /redoc: FastAPI's, with an inline script and a
CDN) get a policy of their own; they are behind sign-in.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qs, unquote_to_bytes, urlsplit

from fastapi import HTTPException
from sqlalchemy import exc as sa_exc
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callcenter.config import Settings
from callcenter.http import (
    PublicMarker,
    Requirement,
    app_routes,
    csrf_token,
    csrf_token_matches,
    current_principal,
    declared_need,
)

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
SIGN_IN_PATHS = frozenset({"/login", "/api/auth/token"})
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
FORM_TYPE = "application/x-www-form-urlencoded"
FORM_MAX_BYTES = 64 * 1024  # the sign-in, sign-out and language forms are a few hundred bytes
BODY_MAX_BYTES = 2 * 1024 * 1024  # a JSON body: 10,000 do-not-call numbers are ~300 KB
MULTIPART_EXTRA_BYTES = 1024 * 1024  # an upload's other form fields and part headers


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request is larger than {limit // (1024 * 1024)} MB")


class RequestGuard:
    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.upload_max_bytes = settings.upload_max_bytes
        self._needs: list[tuple[re.Pattern[str], frozenset[str], Requirement | PublicMarker | None]] | None
        self._needs = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _has_nul(scope):
            await _refuse(scope, receive, send, 400, "a NUL character in the address")
            return
        conn = HTTPConnection(scope)
        limit = self._body_limit(conn)
        announced = conn.headers.get("content-length", "")
        if announced.isdigit() and int(announced) > limit:
            await _refuse(scope, receive, send, 413, BodyTooLarge(limit).detail)
            return
        bounded = _bounded(receive, limit)
        if scope["method"] in SAFE_METHODS:
            await self.app(scope, bounded, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._unsafe(conn, scope, bounded, tracked)
        except BodyTooLarge as exc:  # past the app's error handler (read here, or by a raw route)
            if started:
                raise
            await _refuse(scope, receive, send, 413, str(exc.detail))

    def _body_limit(self, conn: HTTPConnection) -> int:
        if _media_type(conn) == "multipart/form-data":
            return self.upload_max_bytes + MULTIPART_EXTRA_BYTES
        return BODY_MAX_BYTES

    def _need(self, scope: Scope) -> Requirement | PublicMarker | None:
        """What the route this request goes to declared (None: no route, or none declared)."""
        if self._needs is None:
            self._needs = [
                (compile_path(r.path)[0], frozenset(getattr(r, "methods", None) or ()), declared_need(r))
                for r in app_routes(scope["app"])
            ]
        for regex, methods, need in self._needs:
            if scope["method"] in methods and regex.match(scope["path"]):
                return need
        return None

    async def _unsafe(self, conn: HTTPConnection, scope: Scope, receive: Receive, send: Send) -> None:
        need = self._need(scope)
        if isinstance(need, Requirement):
            # Who is asking, before the route reads the body (FastAPI reads it before dependencies).
            # The answer is cached on the request, so the route's own `require` does not ask again.
            try:
                principal = await run_in_threadpool(current_principal, conn)
            except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
                log.warning("database unavailable for %s %s: %s", scope["method"], scope["path"], exc)
                detail = "the database is unavailable; try again in a moment"
                await _refuse(scope, receive, send, 503, detail, {"Retry-After": "5"})
                return
            if principal is None:
                await _refuse(scope, receive, send, 401, "not signed in", {"WWW-Authenticate": "Bearer"})
                return
            if need.permissions and not any(principal.can(p) for p in need.permissions):
                names = " or ".join(p.value for p in need.permissions)
                await _refuse(scope, receive, send, 403, f"this needs the {names} permission")
                return
        if conn.headers.get("authorization", "").lower().startswith("bearer "):
            await self.app(scope, receive, send)
            return
        if not _same_origin(conn):
            await _refuse(scope, receive, send, 403, "cross-origin request refused")
            return
        expected = csrf_token(conn)
        if not expected or scope["path"] in SIGN_IN_PATHS:
            await self.app(scope, receive, send)
            return
        sent = conn.headers.get(CSRF_HEADER)
        if sent is None and _media_type(conn) == FORM_TYPE:
            body = await _read_body(receive, FORM_MAX_BYTES)
            if body is None:
                await _refuse(scope, receive, send, 413, "form too large")
                return
            fields = parse_qs(body.decode("latin-1"), max_num_fields=100)
            sent = next(iter(fields.get(CSRF_FIELD, [])), None)
            receive = _replay(body, receive)
        if not csrf_token_matches(expected, sent):
            await _refuse(scope, receive, send, 403, "missing or wrong CSRF token; reload the page")
            return
        await self.app(scope, receive, send)


def _has_nul(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    path: str = scope.get("path", "")
    return "\x00" in path or b"\x00" in query or b"\x00" in unquote_to_bytes(query)


def _same_origin(conn: HTTPConnection) -> bool:
    """False when a browser says the request comes from a page of another origin. A request with
    neither header (not a browser) passes: the CSRF token still guards the session cookie."""
    source = conn.headers.get("origin") or conn.headers.get("referer")
    if source is None:
        return True
    host = conn.headers.get("host", "")
    return bool(host) and urlsplit(source).netloc.lower() == host.lower()


def _media_type(conn: HTTPConnection) -> str:
    return conn.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None once it passes `limit` (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _bounded(receive: Receive, limit: int) -> Receive:
    """A `receive` that raises `BodyTooLarge` (a 413 from the app's HTTP error handler) once the body
    passes `limit`: the route reading it stops there, and the rest is never read."""
    size = 0

    async def bounded() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise BodyTooLarge(limit)
        return message

    return bounded


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then what the client sends next
    (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    detail: str,
    headers: dict[str, str] | None = None,
) -> None:
    log.info("%s %s refused: %s", scope["method"], scope["path"], detail)
    await JSONResponse({"detail": detail}, status_code=status, headers=headers)(scope, receive, send)


# --- response headers ------------------------------------------------------------------------------

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
# FastAPI's /docs and /redoc: its inline start-up script and the Swagger / ReDoc bundles from a CDN.
DOCS_CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net",
        "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com",
        "font-src 'self' https://fonts.gstatic.com",
        "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
DOCS_PATHS = frozenset({"/docs", "/redoc"})


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope["path"] in DOCS_PATHS else CSP

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", csp)
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "same-origin")
            await send(message)

        await self.app(scope, receive, with_headers)
