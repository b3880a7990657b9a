"""Sign-in: session cookie, API tokens, same answer for unknown users, throttling."""

from __future__ import annotations

import statistics
import time

from tests.conftest import WebHarness


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
    web.client.post("/logout")
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
