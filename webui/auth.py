"""Authentication (session cookie for pages, bearer token for the API) and per-route permissions.

Every route declares what it needs with one of two dependencies:
- `require(Permission.X, ...)` - signed-in principal holding any of the listed permissions
  (none listed = any signed-in user);
- `public()` - no sign-in needed (login page, static files, health).
`tests/test_auth_matrix.py` walks every route and checks the declaration against each role.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import Depends, HTTPException, Request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlmodel import Session
from starlette.requests import HTTPConnection

from callcenter.accounts import Principal, load_principal
from callcenter.models import Permission
from webui.context import get_ctx

TOKEN_SALT = "callcenter-api-token"


class LoginRequired(Exception):
    """Raised for a page (not an API call) when nobody is signed in: the handler redirects to /login."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


def _serializer(request: HTTPConnection) -> URLSafeTimedSerializer:
    secret = get_ctx(request).settings.secret_key.get_secret_value()
    return URLSafeTimedSerializer(secret, salt=TOKEN_SALT)


def issue_token(request: Request, principal: Principal) -> str:
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


def current_principal(request: HTTPConnection) -> Principal | None:
    """The signed-in principal from a bearer token or the session cookie, cached on the request
    (or WebSocket)."""
    if hasattr(request.state, "principal"):
        return request.state.principal  # type: ignore[no-any-return]
    principal: Principal | None = None
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        principal = principal_from_token(request, header[7:])
    elif "session" in request.scope:
        sess = request.session
        principal = _principal_from_claims(request, sess.get("uid"), sess.get("tv"))
    request.state.principal = principal
    return principal


def _is_api(request: Request) -> bool:
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


def require(*permissions: Permission) -> Any:
    return Depends(Requirement(permissions))


def public() -> Any:
    return Depends(_PUBLIC)


class LoginThrottle:
    """Counts failed logins per (username, client address) in Redis; refuses after too many."""

    def __init__(self, redis: Any, *, max_failures: int, window_s: int) -> None:
        self.redis = redis
        self.max_failures = max_failures
        self.window_s = window_s

    def _key(self, username: str, address: str) -> str:
        return f"cc:login-fail:{username.strip().lower()}:{address}"

    def retry_after(self, username: str, address: str) -> int:
        """Seconds until another attempt is allowed; 0 when allowed now."""
        key = self._key(username, address)
        count = int(self.redis.get(key) or 0)
        if count < self.max_failures:
            return 0
        return max(1, int(self.redis.ttl(key)))

    def failed(self, username: str, address: str) -> None:
        key = self._key(username, address)
        pipe = self.redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, self.window_s)
        pipe.execute()

    def succeeded(self, username: str, address: str) -> None:
        self.redis.delete(self._key(username, address))


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def throttle_for(request: Request) -> LoginThrottle:
    ctx = get_ctx(request)
    return LoginThrottle(
        ctx.redis, max_failures=ctx.settings.login_max_failures, window_s=ctx.settings.login_lockout_s
    )


def too_many_attempts(retry_after: int) -> HTTPException:
    return HTTPException(
        429, "too many failed logins; try again later", headers={"Retry-After": str(retry_after)}
    )


def min_duration(started: float, seconds: float) -> None:
    """Pad a failed login to a fixed floor so its timing says nothing about why it failed."""
    left = seconds - (time.perf_counter() - started)
    if left > 0:
        time.sleep(left)
