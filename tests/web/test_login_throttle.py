"""Login throttling against a live server (uvicorn, as `callcenter serve` runs it): a burst of concurrent
guesses is cut at the limit, and a rotated `X-Forwarded-For` does not escape it."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.web.conftest import LiveServer


def _guess(base: str, username: str, password: str, forwarded_for: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    resp = httpx.post(
        f"{base}/api/auth/token",
        json={"username": username, "password": password},
        headers=headers,
        timeout=30,
    )
    return resp.status_code


def test_a_burst_of_concurrent_guesses_is_cut_at_the_limit(live_server: LiveServer) -> None:
    live_server.user("ann", ["agent"])
    limit = 5  # CALLCENTER_LOGIN_MAX_FAILURES
    passwords = ["wrong-guess"] * 39 + ["password-123"]
    random.Random(7).shuffle(passwords)
    with ThreadPoolExecutor(40) as pool:
        codes = list(pool.map(lambda p: _guess(live_server.url, "ann", p), passwords))
    evaluated = [c for c in codes if c in (200, 401)]
    assert len(evaluated) <= limit, f"{len(evaluated)} of 40 guesses were checked: {sorted(codes)}"
    assert codes.count(429) >= 40 - limit
    # Once the burst is over the right password is refused too, until the lockout ends.
    if 200 not in codes:
        assert _guess(live_server.url, "ann", "password-123") == 429


def test_a_rotated_x_forwarded_for_does_not_escape_the_throttle(live_server: LiveServer) -> None:
    """No proxy is trusted by default: X-Forwarded-For is ignored, whoever sends it."""
    live_server.user("bob", ["agent"])
    codes = [_guess(live_server.url, "bob", "wrong-guess", f"203.0.113.{i}") for i in range(1, 9)]
    assert codes[:5] == [401] * 5
    assert codes[5:] == [429] * 3, codes
