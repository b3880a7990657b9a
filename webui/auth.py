"""Sign-in helpers of the web's own session routes: failed-login throttling, the client's address and
timing. Who is asking and what each route needs live in `callcenter.http` (shared by webui, crm and
chat)."""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Sequence
from typing import Any

from fastapi import HTTPException, Request

from callcenter.http import get_ctx

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# One Redis step per attempt, before the password is looked at: refuse while either count (the user
# from this address, the user from anywhere) is locked, else count the attempt on both and, once a
# count reaches its limit, lock it for base * 2^(count - limit) seconds, at most `cap`. Attempts
# refused during a lockout are not counted, so a lockout always ends (an attacker cannot push it
# further out by hammering); the next failure after it ends locks again, for twice as long.
# KEYS: per user+address, per user. ARGV: now, limit per address, limit per user, base, cap.
_ATTEMPT = """
local now = tonumber(ARGV[1])
local wait = 0
for i = 1, #KEYS do
  local locked = tonumber(redis.call('HGET', KEYS[i], 'until') or '0')
  if locked > now and locked - now > wait then wait = locked - now end
end
if wait > 0 then return tostring(wait) end
local base, cap = tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 1, #KEYS do
  local limit = tonumber(ARGV[i + 1])
  local n = redis.call('HINCRBY', KEYS[i], 'n', 1)
  local ttl = base
  if n >= limit then
    local lock = math.min(base * 2 ^ (n - limit), cap)
    redis.call('HSET', KEYS[i], 'until', tostring(now + lock))
    ttl = lock + base
  end
  redis.call('EXPIRE', KEYS[i], math.ceil(ttl))
end
return '0'
"""


class LoginThrottle:
    """Counts login attempts per (username, client address) and per username in Redis. `attempt` is
    called before the password is checked and counts it; `succeeded` forgets both counts."""

    def __init__(
        self,
        redis: Any,
        *,
        max_failures: int,
        user_max_failures: int,
        lockout_s: int,
        lockout_max_s: int,
    ) -> None:
        self.redis = redis
        self.max_failures = max_failures
        self.user_max_failures = user_max_failures
        self.lockout_s = lockout_s
        self.lockout_max_s = max(lockout_max_s, lockout_s)

    @staticmethod
    def _keys(username: str, address: str) -> list[str]:
        # Hashed: a username is whatever the client typed, of any length.
        user = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
        return [f"cc:login:pair:{user}:{address}", f"cc:login:user:{user}"]

    def attempt(self, username: str, address: str, *, now: float | None = None) -> int:
        """Count this attempt; the seconds to wait (the attempt refused, not counted) or 0 (go on)."""
        wait = self.redis.eval(
            _ATTEMPT,
            2,
            *self._keys(username, address),
            repr(time.time() if now is None else now),
            self.max_failures,
            self.user_max_failures,
            self.lockout_s,
            self.lockout_max_s,
        )
        seconds = float(wait)
        return max(1, int(seconds + 0.999)) if seconds > 0 else 0

    def succeeded(self, username: str, address: str) -> None:
        self.redis.delete(*self._keys(username, address))


def client_address(request: Request, trusted: Sequence[Network] = ()) -> str:
    """The client's address: the peer's, or - when the peer is a trusted proxy - the right-most
    `X-Forwarded-For` entry that is not itself a trusted proxy. Entries left of it were written by
    the client and prove nothing."""
    peer = request.client.host if request.client else "unknown"
    if not trusted or not _in(peer, trusted):
        return peer
    header = request.headers.get("x-forwarded-for", "")
    for item in reversed([part.strip() for part in header.split(",") if part.strip()]):
        try:
            ipaddress.ip_address(item)
        except ValueError:
            return peer  # a malformed hop: believe nothing beyond the proxy
        if not _in(item, trusted):
            return item
    return peer


def _in(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def request_address(request: Request) -> str:
    return client_address(request, get_ctx(request).settings.trusted_proxy_networks)


def throttle_for(request: Request) -> LoginThrottle:
    ctx = get_ctx(request)
    s = ctx.settings
    return LoginThrottle(
        ctx.redis,
        max_failures=s.login_max_failures,
        user_max_failures=s.login_user_max_failures,
        lockout_s=s.login_lockout_s,
        lockout_max_s=s.login_lockout_max_s,
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
