"""Cross-site request forgery: a page of another origin on the same site (127.0.0.1, another port) that
the signed-in user opens in Chromium cannot pause a task or create one with its own number list, while
the app's own pages keep working; at the HTTP level, a cookie-authenticated change needs this origin
and the session's CSRF token, a bearer-token call needs neither."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlmodel import Session, col, select

from callcenter.models import Campaign
from callcenter.redis_server import free_port
from tests.conftest import WebHarness
from tests.web import sim
from tests.web.conftest import LiveServer, Pages

EVIL_PAGE = """<!doctype html><html><body><script>
const app = "{app}";
async function attack() {{
  const opts = {{method: "POST", credentials: "include", mode: "no-cors"}};
  try {{ await fetch(app + "/api/tasks/{task}/pause", opts); }} catch (e) {{}}
  const fd = new FormData();
  fd.append("name", "Evil list");
  fd.append("skill_group_id", "{group}");
  fd.append("file", new Blob(["phone\\n13800000009\\n13800000010\\n"], {{type: "text/csv"}}), "list.csv");
  try {{ await fetch(app + "/api/tasks", {{...opts, body: fd}}); }} catch (e) {{}}
  document.body.dataset.done = "1";
}}
attack();
</script></body></html>"""


class _EvilSite:
    """Another origin on the same site: serves one page, whatever the path."""

    def __init__(self, html: str) -> None:
        body = html.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def evil_site(live_server: LiveServer) -> Iterator[Any]:
    sites: list[_EvilSite] = []

    def serve(html: str) -> _EvilSite:
        site = _EvilSite(html)
        sites.append(site)
        return site

    yield serve
    for site in sites:
        site.close()


@pytest.mark.browser
def test_a_page_of_another_origin_cannot_act_with_the_users_cookie(
    pages: Pages, live_server: LiveServer, evil_site: Callable[[str], _EvilSite]
) -> None:
    live_server.user("root", ["admin"])
    task = sim.campaign(live_server.engine, name="Renewals")  # running
    group = live_server.skill_group("Sales")
    page = pages.open("root", "/tasks")  # signed in: the browser holds the session cookie
    pages.allow("Failed to load resource")
    site = evil_site(EVIL_PAGE.format(app=live_server.url, task=task, group=group))
    page.goto(site.url)
    expect(page.locator("body")).to_have_attribute("data-done", "1")
    with Session(live_server.engine) as s:
        running = s.get(Campaign, task)
        created = s.exec(select(Campaign).where(col(Campaign.name) == "Evil list")).all()
    done = []
    if running is None or running.state != "running":
        done.append("a task was paused")
    if created:
        done.append(f"a task was created with the attacker's list: {[c.list_filename for c in created]}")
    assert not done, f"from another origin: {done}"
    # The app's own page, in the same browser, still pauses it (its script sends the token).
    page.goto("/tasks")
    expect(page.locator("body")).to_have_attribute("data-ready", "1")
    row = page.locator(f'#tasks-table tr[data-task-id="{task}"]')
    row.locator('button[data-action="pause"]').click()
    expect(row).to_have_attribute("data-state", "paused")


def test_a_cookie_authenticated_change_needs_this_origin_and_the_token(web: WebHarness) -> None:
    web.user("sue", ["supervisor"])
    task = sim.campaign(web.engine, name="Renewals")
    web.login("sue")
    token = web.client.headers.pop("X-CSRF-Token")
    pause = f"/api/tasks/{task}/pause"

    def post(**headers: str) -> int:
        return int(web.client.post(pause, headers=headers).status_code)

    assert post() == 403  # no token
    assert post(**{"X-CSRF-Token": "not-the-token"}) == 403
    assert post(**{"X-CSRF-Token": token, "Origin": "http://127.0.0.1:9999"}) == 403
    assert post(**{"X-CSRF-Token": token, "Origin": "null"}) == 403
    assert post(**{"X-CSRF-Token": token, "Referer": "http://evil.example/page"}) == 403
    assert post(**{"X-CSRF-Token": token, "Origin": "http://testserver"}) == 200
    # A form (the sign-out and language buttons) carries the token as a field.
    resp = web.client.post(
        "/lang/zh",
        data={"csrf_token": token},
        headers={"Referer": "http://testserver/tasks"},
        follow_redirects=False,
    )
    assert resp.status_code == 303
    assert web.client.post("/logout", data={"csrf_token": "wrong"}).status_code == 403
    signed_out = web.client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert signed_out.status_code == 303


def test_a_bearer_call_needs_no_csrf_token_and_sign_in_needs_none(web: WebHarness) -> None:
    web.user("sue", ["supervisor"])
    task = sim.campaign(web.engine, name="Renewals")
    resp = web.client.post(f"/api/tasks/{task}/pause", headers=web.headers("sue"))
    assert resp.status_code == 200
    # Signing in starts a new session: no token yet, but another origin may not do it.
    evil = web.client.post(
        "/login",
        data={"username": "sue", "password": "password-123"},
        headers={"Origin": "http://127.0.0.1:9999"},
        follow_redirects=False,
    )
    assert evil.status_code == 403
    web.login("sue")
