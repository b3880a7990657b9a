"""Sign-in: session cookie, API tokens, same answer for unknown users, throttling."""

from __future__ import annotations

import statistics
import time

from sqlalchemy.engine import Engine

from tests.conftest import WebFactory, WebHarness


def test_login_page_sets_session_and_home_shows_user(web: WebHarness) -> None:
    web.user("alice", ["admin"])
    page = web.client.get("/login")
    assert page.status_code == 200 and 'name="password"' in page.text
    resp = web.client.post(
        "/login", data={"username": "alice", "password": "password-123", "next": "/"}, follow_redirects=False
    )
    assert resp.status_code == 303
    assert "cc_session" in resp.cookies or "cc_session" in web.client.cookies
    home = web.client.get("/")
    assert home.status_code == 200 and "alice" in home.text
    me = web.client.get("/api/me")
    assert me.status_code == 200 and me.json()["roles"] == ["admin"]
    # Signing out as the page's button does: a form with the session's CSRF token.
    assert web.client.post("/logout", data={"csrf_token": web.csrf_token()}).status_code == 200
    assert web.client.get("/api/me").status_code == 401


def test_wrong_password_and_unknown_user_get_the_same_401(web: WebHarness) -> None:
    web.user("bob", ["agent"])
    wrong = web.client.post("/api/auth/token", json={"username": "bob", "password": "nope-nope"})
    unknown = web.client.post("/api/auth/token", json={"username": "ghost", "password": "nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


def test_wrong_password_and_unknown_user_take_the_same_time(web: WebHarness) -> None:
    web.user("carol", ["agent"])

    def timed(username: str) -> float:
        web.redis.flushall()  # keep the throttle out of the measurement
        t0 = time.perf_counter()
        resp = web.client.post("/api/auth/token", json={"username": username, "password": "wrong-pass"})
        assert resp.status_code == 401
        return time.perf_counter() - t0

    known = statistics.median(timed("carol") for _ in range(5))
    unknown = statistics.median(timed("nobody-here") for _ in range(5))
    assert abs(known - unknown) < 0.5 * max(known, unknown), (known, unknown)


def test_login_is_throttled_after_repeated_failures(web: WebHarness) -> None:
    web.user("dave", ["agent"])
    limit = web.settings.login_max_failures
    for _ in range(limit):
        assert (
            web.client.post("/api/auth/token", json={"username": "dave", "password": "bad-pass"}).status_code
            == 401
        )
    blocked = web.client.post("/api/auth/token", json={"username": "dave", "password": "password-123"})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    page = web.client.post("/login", data={"username": "dave", "password": "password-123"})
    assert page.status_code == 429


def test_token_is_revoked_by_password_change(web: WebHarness) -> None:
    uid = web.user("erin", ["agent"])
    web.user("root", ["admin"])
    headers = web.headers("erin")
    assert web.client.get("/api/me", headers=headers).status_code == 200
    resp = web.client.patch(
        f"/api/admin/users/{uid}", json={"password": "new-password-1"}, headers=web.headers("root")
    )
    assert resp.status_code == 200
    assert web.client.get("/api/me", headers=headers).status_code == 401


def test_open_redirect_after_login_is_refused(web: WebHarness) -> None:
    web.user("fay", ["agent"])
    resp = web.client.post(
        "/login",
        data={"username": "fay", "password": "password-123", "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert resp.headers["location"] == "/"


def test_a_user_is_throttled_from_every_address_together(
    web_factory: WebFactory, sqlite_engine: Engine
) -> None:
    # The test client connects from 127.0.0.1, trusted here as a proxy.
    web = web_factory(
        sqlite_engine, peer=("127.0.0.1", 40000), trusted_proxies="127.0.0.1", login_user_max_failures=8
    )
    web.user("gus", ["agent"])

    def guess(address: str, password: str = "bad-pass") -> int:
        resp = web.client.post(
            "/api/auth/token",
            json={"username": "gus", "password": password},
            headers={"X-Forwarded-For": f"198.51.100.7, {address}"},
        )
        return resp.status_code

    # Through a trusted proxy each address has its own count of 5 ...
    assert [guess(f"203.0.113.{i}") for i in range(1, 5)] == [401] * 4
    assert [guess(f"203.0.113.{i}") for i in range(5, 9)] == [401] * 4
    # ... but the user's own count (8) is over from any address, even with the right password.
    assert guess("203.0.113.99", "password-123") == 429
    # Another user is not affected.
    web.user("hal", ["agent"])
    other = web.client.post("/api/auth/token", json={"username": "hal", "password": "password-123"})
    assert other.status_code == 200


def test_the_lockout_grows_and_is_capped(web: WebHarness) -> None:
    """Exponential backoff, not a hard lock: each failure after a lockout ends doubles the next one, up
    to the cap; once a lockout ends the right password works."""
    web.user("ida", ["agent"])
    base = web.settings.login_lockout_s
    cap = web.settings.login_lockout_max_s

    def attempt(password: str = "bad-pass") -> tuple[int, int]:
        resp = web.client.post("/api/auth/token", json={"username": "ida", "password": password})
        return resp.status_code, int(resp.headers.get("retry-after", 0))

    def end_lockouts() -> None:
        for key in web.redis.scan_iter("cc:login:*"):
            if web.redis.hget(key, "until") is not None:
                web.redis.hset(key, "until", "0")

    for _ in range(web.settings.login_max_failures):
        assert attempt()[0] == 401
    status, wait = attempt()
    assert status == 429 and base - 2 <= wait <= base
    waits = []
    for _ in range(8):
        end_lockouts()
        assert attempt()[0] == 401
        status, wait = attempt()
        assert status == 429
        waits.append(wait)
    assert waits[0] >= 2 * base - 2 and waits[1] >= 4 * base - 2
    assert max(waits) <= cap and waits[-1] >= cap - 2
    end_lockouts()
    assert attempt("password-123")[0] == 200
    assert attempt("bad-pass")[0] == 401  # a success clears the count


def test_x_forwarded_for_is_used_only_from_a_trusted_proxy() -> None:
    from callcenter.config import Mode
    from webui.auth import client_address

    def address(peer: str, xff: str | None, trusted: str) -> str:
        from starlette.requests import Request

        from callcenter.config import Settings

        settings = Settings(mode=Mode.DEV, trusted_proxies=trusted)
        headers = [(b"x-forwarded-for", xff.encode())] if xff else []
        request = Request({"type": "http", "client": (peer, 5000), "headers": headers})
        return client_address(request, settings.trusted_proxy_networks)

    assert address("203.0.113.5", "1.2.3.4", "") == "203.0.113.5"
    assert address("10.0.0.2", "1.2.3.4", "") == "10.0.0.2"
    assert address("10.0.0.2", "1.2.3.4", "10.0.0.0/8") == "1.2.3.4"
    # The client may send its own X-Forwarded-For: only what the trusted proxies appended counts.
    assert address("10.0.0.2", "6.6.6.6, 1.2.3.4", "10.0.0.0/8") == "1.2.3.4"
    assert address("10.0.0.2", "6.6.6.6, 1.2.3.4, 10.0.0.9", "10.0.0.0/8") == "1.2.3.4"
    assert address("10.0.0.2", "not-an-ip", "10.0.0.0/8") == "10.0.0.2"
    assert address("203.0.113.5", "1.2.3.4", "10.0.0.0/8") == "203.0.113.5"
