"""A live server (uvicorn, the real app, SQLite + the session's real Redis) and Debian's Chromium driven by
Playwright, for the browser tests."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis
import uvicorn
from sqlalchemy.engine import Engine

from callcenter.bus import DIALER_TOPIC
from callcenter.db import make_engine
from callcenter.redis_server import free_port
from tests.conftest import TEST_SECRET, make_settings

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Let the pop's tone play in a headless browser (a person's click unlocks it in a real one).
    "--autoplay-policy=no-user-gesture-required",
]
PASSWORD = "password-123"


class _Server(uvicorn.Server):
    """uvicorn that says when it is listening, so the fixture waits on an event, not a guess."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class LiveServer:
    def __init__(
        self, url: str, engine: Engine, redis_client: redis.Redis, *, db_url: str, redis_url: str
    ) -> None:
        self.url = url
        self.engine = engine
        self.redis = redis_client
        self.db_url = db_url
        self.redis_url = redis_url

    def user(
        self,
        username: str,
        roles: list[str],
        *,
        extension: str | None = None,
        skill_group_ids: list[int] | None = None,
    ) -> int:
        from callcenter import accounts
        from callcenter.db import session_scope

        with session_scope(self.engine) as session:
            user = accounts.create_user(session, username=username, password=PASSWORD, roles=roles)
            assert user.id is not None
            if extension:
                accounts.create_agent(
                    session, user_id=user.id, extension=extension, skill_group_ids=skill_group_ids or []
                )
            return user.id

    def skill_group(self, name: str) -> int:
        from callcenter import accounts
        from callcenter.db import session_scope

        with session_scope(self.engine) as session:
            group_id = accounts.create_skill_group(session, name=name).id
            assert group_id is not None
            return group_id

    def run_imports(self) -> None:
        """Run the queued list imports with a real rq worker, here and now (burst)."""
        from rq import Queue, SimpleWorker

        conn = redis.Redis.from_url(self.redis_url)
        try:
            SimpleWorker([Queue("callcenter", connection=conn)], connection=conn).work(burst=True)
        finally:
            conn.close()


@pytest.fixture
def live_overrides() -> dict[str, object]:
    """Settings of the live server other than the defaults (a test module may override this)."""
    return {}


@pytest.fixture
def live_server(
    live_overrides: dict[str, object],
    sqlite_url: str,
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LiveServer]:
    from webui.app import SERVER_OPTIONS, create_app

    settings = make_settings(tmp_path, database_url=sqlite_url, redis_url=redis_url, **live_overrides)
    # The list import job (run by `LiveServer.run_imports`) reads its settings from the environment.
    monkeypatch.setenv("CALLCENTER_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("CALLCENTER_MODE", "dev")
    monkeypatch.setenv("CALLCENTER_DEFAULT_REGION", "CN")
    port = free_port()
    server = _Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            ws="websockets-sansio",
            log_level="warning",
            lifespan="on",
            **SERVER_OPTIONS,
        )
    )
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    if not server.ready.wait(15):
        raise RuntimeError("the live server did not start")
    engine = make_engine(sqlite_url)
    yield LiveServer(f"http://127.0.0.1:{port}", engine, redis_client, db_url=sqlite_url, redis_url=redis_url)
    server.should_exit = True
    thread.join(15)
    engine.dispose()
    # The app froze the heap at start-up as a server process does; this process goes on testing.
    gc.unfreeze()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for one test module. Not longer: Playwright's sync API keeps an event loop running in
    this thread while it is up, and async tests collected after it could not run theirs."""
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()
    pw.stop()


class Pages:
    """Opens signed-in pages, one browser context per user, and collects script errors."""

    def __init__(self, browser: Browser, live: LiveServer) -> None:
        self.browser = browser
        self.live = live
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []
        self.allowed: list[str] = []

    def allow(self, text: str) -> None:
        """A console error the test provokes on purpose (e.g. the status of a refused request)."""
        self.allowed.append(text)

    def _console(self, username: str, msg: ConsoleMessage) -> None:
        if msg.type == "error" and not any(a in msg.text for a in self.allowed):
            self.errors.append(f"{username}: {msg.text}")

    def open(self, username: str, path: str, *, permissions: list[str] | None = None) -> Page:
        from playwright.sync_api import expect

        context = self.browser.new_context(base_url=self.live.url, locale="en-US")
        context.set_default_timeout(10_000)
        if permissions:
            context.grant_permissions(permissions, origin=self.live.url)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{username}: {exc}"))
        page.on("console", lambda msg: self._console(username, msg))
        page.goto(f"/login?next={path}")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"**{path}")
        live_status = page.locator("#live-status")
        if live_status.count():
            expect(live_status).to_have_attribute("data-live", "up")
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(browser: Browser, live_server: LiveServer) -> Iterator[Pages]:
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    opened = Pages(browser, live_server)
    yield opened
    opened.close()
    assert not opened.errors, opened.errors


class DialerProcess:
    """A real `callcenter dialer` process on the live server's database and Redis, with scripted
    customers on the simulated PBX (`CALLCENTER_SIM_SCRIPT`)."""

    def __init__(self, live: LiveServer, tmp_path: Path) -> None:
        self.live = live
        self.tmp_path = tmp_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = tmp_path / "dialer.log"

    def start(self, script: dict[str, dict[str, Any]], *, time_scale: float = 5.0) -> None:
        script_path = self.tmp_path / "customers.json"
        script_path.write_text(json.dumps(script))
        env = dict(os.environ)
        env.update(
            {
                "CALLCENTER_MODE": "dev",
                "CALLCENTER_SECRET_KEY": TEST_SECRET,
                "CALLCENTER_DATABASE_URL": self.live.db_url,
                "CALLCENTER_REDIS_URL": self.live.redis_url,
                "CALLCENTER_DIALER_ID": "e2e",
                "CALLCENTER_GATEWAY": "simulated",
                "CALLCENTER_SIM_TIME_SCALE": str(time_scale),
                "CALLCENTER_SIM_SCRIPT": str(script_path),
                "CALLCENTER_DATA_DIR": str(self.tmp_path),
                "CALLCENTER_LOG_LEVEL": "WARNING",
            }
        )
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "dialer"], env=env, stdout=log, stderr=log
        )
        log.close()
        # Ready once it listens on the dialer topic (a channel subscription, not the web's pattern).
        deadline = time.monotonic() + 30
        while not self.live.redis.pubsub_numsub(DIALER_TOPIC)[0][1]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the dialer did not start:\n" + self.log())
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def dialer(live_server: LiveServer, tmp_path: Path) -> Iterator[DialerProcess]:
    process = DialerProcess(live_server, tmp_path)
    yield process
    process.stop()
    assert "Traceback" not in process.log(), process.log()[-4000:]
