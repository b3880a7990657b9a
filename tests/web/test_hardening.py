"""The smaller holes: security headers and a CSP without inline script, the Secure cookie in
production, the API's description behind sign-in, 4xx (not 500) for ids past 2^63 and NUL in a
query, authentication before an upload's body is read, a task name that cannot end the page's JSON
block, `callcenter demo` refusing production mode and a short secret refused."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect
from sqlalchemy.engine import Engine

from callcenter.config import SettingsError, load_settings
from tests.conftest import WebFactory, WebHarness
from tests.web import sim
from tests.web.conftest import LiveServer, Pages

PRODUCTION_SECRET = "a-production-secret-of-more-than-32-bytes-0123456789"
PAGES = {
    "root": [
        "/tasks",
        "/tasks/deleted",
        "/tasks/new",
        "/dnc",
        "/monitor",
        "/admin/users",
        "/admin/agents",
        "/admin/gateways",
    ],
    "ann": ["/workstation"],
    "nobody": ["/"],
}


def test_every_response_carries_the_security_headers(web: WebHarness) -> None:
    resp = web.client.get("/login")
    csp = resp.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    assert directives["script-src"] == "'self'", csp
    assert "'unsafe-inline'" not in directives.get("style-src", "")
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["referrer-policy"] == "same-origin"
    assert web.client.get("/api/me").headers["x-content-type-options"] == "nosniff"


def test_no_page_has_an_inline_script(web: WebHarness) -> None:
    web.user("root", ["admin"])
    web.user("ann", ["agent"], extension="1001")
    web.user("nobody", [])
    sim.campaign(web.engine, name="Renewals")
    for user, paths in PAGES.items():
        web.client.cookies.clear()
        web.login(user)
        for path in [*paths, "/login"]:
            page = web.client.get(path)
            assert page.status_code == 200, (user, path)
            for tag in re.findall(r"<script\b[^>]*>", page.text):
                assert 'src="' in tag or 'type="application/json"' in tag, (path, tag)


def test_the_session_cookie_is_secure_in_production_only(
    web_factory: WebFactory, sqlite_engine: Engine
) -> None:
    for mode, secure in (("production", True), ("dev", False)):
        web = web_factory(sqlite_engine, mode=mode, secret_key=PRODUCTION_SECRET)
        web.user(f"u_{mode}", ["agent"])
        resp = web.client.post(
            "/login", data={"username": f"u_{mode}", "password": "password-123"}, follow_redirects=False
        )
        cookie = resp.headers["set-cookie"]
        assert ("; secure" in cookie.lower()) is secure, (mode, cookie)
        assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()


def test_the_api_description_needs_a_sign_in(web_factory: WebFactory, sqlite_engine: Engine) -> None:
    web = web_factory(sqlite_engine, mode="production", secret_key=PRODUCTION_SECRET)
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert web.client.get(path, follow_redirects=False).status_code in (303, 401, 404), path
    web.user("ann", ["agent"])
    headers = web.headers("ann")
    assert web.client.get("/openapi.json", headers=headers).json()["info"]["title"] == "Call Center"
    assert "swagger-ui" in web.client.get("/docs", headers=headers).text


BIG = 2**63


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", f"/api/tasks/{BIG}", None),
        ("GET", f"/api/tasks/{BIG * 10}/snapshot", None),
        ("GET", f"/api/crm/contacts/{BIG}", None),
        ("PATCH", "/api/admin/skill-groups/1", {"agent_ids": [BIG]}),
        ("POST", "/api/admin/agents", {"user_id": BIG, "extension": "1999"}),
        ("GET", f"/api/dnc?offset={BIG}", None),
        ("GET", "/api/crm/contacts?q=a%00b", None),
        ("GET", "/api/dnc?q=%00", None),
        ("GET", "/api/crm/lookup?phone=138%0000138000", None),
    ],
)
def test_a_huge_id_or_a_nul_is_a_client_error_not_a_500(
    web_factory: WebFactory, engine: Engine, method: str, path: str, body: object
) -> None:
    web = web_factory(engine)
    web.user("root", ["admin"])
    with web.client as client:
        client.post("/api/admin/skill-groups", json={"name": "Group"}, headers=web.headers("root"))
        resp = client.request(method, path, json=body, headers=web.headers("root"))
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/crm/contacts", {"name": "nul\u0000name"}),
        ("/api/admin/skill-groups", {"name": "Sales", "description": "a\u0000b"}),
    ],
)
def test_a_nul_in_a_body_is_never_a_500(
    web_factory: WebFactory, engine: Engine, path: str, body: object
) -> None:
    """PostgreSQL refuses NUL in text (a 422 now, a 500 before); SQLite stores it."""
    web = web_factory(engine)
    web.user("root", ["admin"])
    with web.client as client:
        resp = client.post(path, json=body, headers=web.headers("root"))
    assert resp.status_code < 500, (resp.status_code, resp.text)


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(live_server: LiveServer) -> None:
    parts = urlsplit(live_server.url)
    head = (
        f"POST /api/tasks HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 52428800\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head + b"--xyz\r\n")
        sock.settimeout(5)
        try:
            status = sock.recv(4096).split(b"\r\n", 1)[0]
        except TimeoutError:
            pytest.fail("the server reads a 50 MB body before it asks who is sending it")
    assert status.startswith(b"HTTP/1.1 401"), status


def test_a_task_name_cannot_end_the_pages_json_block(web: WebHarness) -> None:
    web.user("root", ["admin"])
    name = "<!--<script>x</script><script>alert(1)</script>"
    sim.campaign(web.engine, name=name)
    web.login("root")
    page = web.client.get("/tasks").text
    block = page.split('<script type="application/json" id="tasks-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in block and ">" not in block
    assert json.loads(block)[0]["name"] == name


@pytest.mark.browser
def test_a_hostile_task_name_leaves_the_task_list_working(pages: Pages, live_server: LiveServer) -> None:
    live_server.user("root", ["admin"])
    name = "<!--<script>"
    task = sim.campaign(live_server.engine, name=name)
    sim.campaign(live_server.engine, name="Renewals")
    page = pages.open("root", "/tasks")
    expect(page.locator("body")).to_have_attribute("data-ready", "1")
    expect(page.locator(f'#tasks-table tr[data-task-id="{task}"]')).to_contain_text(name)
    expect(page.locator("#tasks-table tbody tr")).to_have_count(2)


@pytest.mark.processes
def test_demo_refuses_production_mode(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCENTER_")}
    env.update(
        {
            "CALLCENTER_MODE": "production",
            "CALLCENTER_SECRET_KEY": PRODUCTION_SECRET,
            "CALLCENTER_DATA_DIR": str(tmp_path / "data"),
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "demo", "--port", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its children (Redis, dialer, worker) in its group, to stop them all
    )
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)
        pytest.fail("callcenter demo started in production mode (demo logins with printed passwords)")
    assert proc.returncode != 0
    assert "production" in out
    assert not (tmp_path / "data" / "callcenter.db").exists()


def test_a_short_secret_is_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLCENTER_MODE", "production")
    monkeypatch.setenv("CALLCENTER_SECRET_KEY", "only-twenty-six-bytes-long")
    with pytest.raises(SettingsError, match=r"CALLCENTER_SECRET_KEY.*32 bytes"):
        load_settings()
    monkeypatch.setenv("CALLCENTER_SECRET_KEY", PRODUCTION_SECRET)
    assert load_settings().secret_key.get_secret_value() == PRODUCTION_SECRET


def test_a_change_while_the_database_is_down_is_a_503_not_a_500(web_factory: WebFactory) -> None:
    """The guard asks who is sending a change before the route runs: an unreachable database there
    is answered as the app answers it elsewhere."""
    from itsdangerous import URLSafeTimedSerializer

    from callcenter.db import make_engine
    from callcenter.http import TOKEN_SALT
    from tests.conftest import TEST_SECRET

    unreachable = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    web = web_factory(unreachable)
    token = URLSafeTimedSerializer(TEST_SECRET, salt=TOKEN_SALT).dumps({"uid": 1, "tv": 0})
    headers = {"Authorization": f"Bearer {token}"}
    for method, path in (("POST", "/api/tasks/1/pause"), ("GET", "/api/tasks")):
        resp = web.client.request(method, path, headers=headers)
        assert resp.status_code == 503 and "database is unavailable" in resp.json()["detail"], (
            method,
            resp.status_code,
            resp.text,
        )
    unreachable.dispose()
