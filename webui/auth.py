"""Sign-in helpers of the web's own session routes: failed-login throttling and timing. Who is asking
and what each route needs live in `callcenter.http` (shared by webui, crm and chat)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import HTTPException, Request

from callcenter.http import get_ctx


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
