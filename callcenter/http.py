"""What the HTTP routes of every feature package (webui, crm, chat) depend on: the app context
(settings, engine, Redis), a database session per request, and who is asking.

Every route declares what it needs with one of two dependencies:
- `require(Permission.X, ...)` - signed-in principal holding any of the listed permissions
  (none listed = any signed-in user);
- `public()` - no sign-in needed (login page, static files, health).
`tests/test_auth_matrix.py` walks every route and checks the declaration against each role.

Credentials: the session cookie (pages) or an `Authorization: Bearer` token (API); both carry the
user's token version, so bumping it revokes them all. A session cookie also names a server-side
session (`cc:web-session:<id>` in Redis, made at sign-in): signing out deletes it, so a copy of the
cookie is dead from then on, and only that session ends. The context is built once by the app's
lifespan (or handed in by tests) and kept on `app.state.ctx`.

Sessions and sockets ended by an account change are announced on `SESSIONS_TOPIC` (every web process
closes the sockets it holds for them: `webui.ws`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import Depends, HTTPException, Request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.requests import HTTPConnection

from callcenter.accounts import Principal, load_principal
from callcenter.bus import PREFIX, Bus
from callcenter.config import Settings
from callcenter.models import Permission

TOKEN_SALT = "callcenter-api-token"
SESSION_PREFIX = "cc:web-session:"
# Web processes only (their `cc:*` subscription); the dialer never reads it.
SESSIONS_TOPIC = f"{PREFIX}sessions"


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    redis: Any  # redis.Redis (sync): throttling, publishing from sync routes
    aredis: Any = None  # redis.asyncio.Redis: WebSocket fan-out, waiting on the dialer
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def bus(self) -> Bus:
        return Bus(self.redis)

    def async_redis(self) -> Any:
        """The async Redis client (made on first use when the caller handed in none)."""
        if self.aredis is None:
            import redis.asyncio as aredis

            self.aredis = aredis.Redis.from_url(self.settings.redis_url, decode_responses=True)
        return self.aredis


def get_ctx(request: HTTPConnection) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def get_session(request: Request) -> Iterator[Session]:
    """A database session per request: committed when the handler returns, rolled back on error."""
    with Session(get_ctx(request).engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


# --- who is asking ---------------------------------------------------------------------------------


class LoginRequired(Exception):
    """Raised for a page (not an API call) when nobody is signed in: the handler redirects to /login."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


def _serializer(request: HTTPConnection) -> URLSafeTimedSerializer:
    secret = get_ctx(request).settings.secret_key.get_secret_value()
    return URLSafeTimedSerializer(secret, salt=TOKEN_SALT)


def issue_token(request: HTTPConnection, principal: Principal) -> str:
    return _serializer(request).dumps({"uid": principal.user_id, "tv": principal.token_version})


def _principal_from_claims(request: HTTPConnection, uid: Any, tv: Any) -> Principal | None:
    if not isinstance(uid, int):
        return None
    with Session(get_ctx(request).engine) as session:
        principal = load_principal(session, uid)
    if principal is None or principal.token_version != tv:
        return None
    return principal


def principal_from_token(request: HTTPConnection, token: str) -> Principal | None:
    """The principal an API token stands for, or None when it is forged, expired or revoked."""
    max_age = get_ctx(request).settings.session_max_age_s
    try:
        claims = _serializer(request).loads(token.strip(), max_age=max_age)
    except (BadSignature, SignatureExpired):
        return None
    if not isinstance(claims, dict):
        return None
    return _principal_from_claims(request, claims.get("uid"), claims.get("tv"))


# --- browser sessions ------------------------------------------------------------------------------

RevokeReason = Literal["signed_out", "password", "deactivated", "roles"]


def start_session(request: HTTPConnection, principal: Principal) -> None:
    """Sign a browser in: a new session (fresh id and CSRF token, nothing kept from before, so a
    session id planted before sign-in is worthless), recorded in Redis for as long as the cookie
    lives."""
    ctx = get_ctx(request)
    sid = secrets.token_urlsafe(32)
    ctx.redis.set(SESSION_PREFIX + sid, str(principal.user_id), ex=ctx.settings.session_max_age_s)
    request.session.clear()
    request.session.update(
        {
            "uid": principal.user_id,
            "tv": principal.token_version,
            "sid": sid,
            "csrf": secrets.token_urlsafe(32),
        }
    )


def end_session(request: HTTPConnection) -> None:
    """Sign this browser session out: gone on the server (a copy of the cookie no longer works), its
    sockets closed; the user's other sessions are not touched."""
    sid = request.session.get("sid")
    if isinstance(sid, str) and sid:
        redis = get_ctx(request).redis
        redis.delete(SESSION_PREFIX + sid)
        publish_revocation(redis, sid=sid, reason="signed_out")
    request.session.clear()


def csrf_token(request: HTTPConnection) -> str:
    """The signed-in session's CSRF token ('' when nobody is signed in with a cookie): pages carry it
    in a `csrf-token` meta tag and their forms' `csrf_token` field; scripts send it as `X-CSRF-Token`."""
    if "session" not in request.scope:
        return ""
    token = request.session.get("csrf")
    return token if isinstance(token, str) else ""


def csrf_token_matches(expected: str, sent: str | None) -> bool:
    return bool(expected) and isinstance(sent, str) and secrets.compare_digest(expected, sent)


def _session_alive(request: HTTPConnection, sid: Any, uid: Any) -> bool:
    if not isinstance(sid, str) or not sid:
        return False
    return get_ctx(request).redis.get(SESSION_PREFIX + sid) == str(uid)


def publish_revocation(
    redis: Any, *, reason: RevokeReason, user_id: int | None = None, sid: str | None = None
) -> None:
    """Tell every web process to close the sockets of a user (all of them) or of one session."""
    message = {"type": "revoke", "reason": reason, "user_id": user_id, "sid": sid}
    redis.publish(SESSIONS_TOPIC, json.dumps(message))


def current_principal(request: HTTPConnection) -> Principal | None:
    """The signed-in principal from a bearer token or the session cookie, cached on the request
    (or WebSocket)."""
    if hasattr(request.state, "principal"):
        cached: Principal | None = request.state.principal
        return cached
    principal: Principal | None = None
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        principal = principal_from_token(request, header[7:])
    elif "session" in request.scope:
        sess = request.session
        if _session_alive(request, sess.get("sid"), sess.get("uid")):
            principal = _principal_from_claims(request, sess.get("uid"), sess.get("tv"))
    request.state.principal = principal
    return principal


def _is_api(request: HTTPConnection) -> bool:
    return request.url.path.startswith("/api/") or request.scope.get("type") == "websocket"


class Requirement:
    """A route's declared need; kept as an object so tests can read it off the route."""

    def __init__(self, permissions: tuple[Permission, ...]) -> None:
        self.permissions = permissions

    def __call__(self, request: Request) -> Principal:
        principal = current_principal(request)
        if principal is None:
            if _is_api(request):
                raise HTTPException(401, "not signed in", headers={"WWW-Authenticate": "Bearer"})
            raise LoginRequired(str(request.url.path))
        if self.permissions and not any(principal.can(p) for p in self.permissions):
            names = " or ".join(p.value for p in self.permissions)
            raise HTTPException(403, f"this needs the {names} permission")
        return principal

    def __repr__(self) -> str:
        return f"require({', '.join(p.value for p in self.permissions)})"


class PublicMarker:
    def __call__(self) -> None:
        return None

    def __repr__(self) -> str:
        return "public()"


_PUBLIC = PublicMarker()


def declared_need(route: Any) -> Requirement | PublicMarker | None:
    """What a route declared (`require(...)` or `public()`), found among its dependencies."""
    dependant = getattr(route, "dependant", None)
    stack = list(dependant.dependencies) if dependant is not None else []
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, Requirement | PublicMarker):
            return dep.call
        stack.extend(dep.dependencies)
    return None


def app_routes(app: Any) -> list[Any]:
    """Every route of an app, through included routers (FastAPI >= 0.16x keeps them as lazy entries
    reached through `effective_candidates()`)."""
    out, stack = [], list(app.routes)
    while stack:
        route = stack.pop(0)
        if hasattr(route, "effective_candidates"):
            stack[:0] = route.effective_candidates()
        elif getattr(route, "dependant", None) is not None and getattr(route, "path", None):
            out.append(route)
    return out


def require(*permissions: Permission) -> Any:
    return Depends(Requirement(permissions))


def public() -> Any:
    return Depends(_PUBLIC)
