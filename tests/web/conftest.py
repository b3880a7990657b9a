"""A live server (uvicorn, the real app, SQLite + the session's real Redis) and Debian's Chromium driven by
Playwright, for the browser tests."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import uvicorn
from sqlalchemy.engine import Engine

from callcenter.db import make_engine
from callcenter.redis_server import free_port
from tests.conftest import make_settings

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

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class LiveServer:
    def __init__(self, url: str, engine: Engine, redis_client: redis.Redis) -> None:
        self.url = url
        self.engine = engine
        self.redis = redis_client

    def user(self, username: str, roles: list[str], *, extension: str | None = None) -> int:
        from callcenter import accounts
        from callcenter.db import session_scope

        with session_scope(self.engine) as session:
            user = accounts.create_user(session, username=username, password=PASSWORD, roles=roles)
            assert user.id is not None
            if extension:
                accounts.create_agent(session, user_id=user.id, extension=extension)
            return user.id


@pytest.fixture
def live_server(
    sqlite_url: str, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[LiveServer]:
    from webui.app import create_app

    settings = make_settings(tmp_path, database_url=sqlite_url, redis_url=redis_url)
    port = free_port()
    server = _Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            ws="websockets-sansio",
            log_level="warning",
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    if not server.ready.wait(15):
        raise RuntimeError("the live server did not start")
    engine = make_engine(sqlite_url)
    yield LiveServer(f"http://127.0.0.1:{port}", engine, redis_client)
    server.should_exit = True
    thread.join(15)
    engine.dispose()
    # The app froze the heap at start-up as a server process does; this process goes on testing.
    gc.unfreeze()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
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

    def __init__(self, browser: Any, live: LiveServer) -> None:
        self.browser = browser
        self.live = live
        self.contexts: list[Any] = []
        self.errors: list[str] = []
        self.allowed: list[str] = []

    def allow(self, text: str) -> None:
        """A console error the test provokes on purpose (e.g. the status of a refused request)."""
        self.allowed.append(text)

    def _console(self, username: str, msg: Any) -> None:
        if msg.type == "error" and not any(a in msg.text for a in self.allowed):
            self.errors.append(f"{username}: {msg.text}")

    def open(self, username: str, path: str, *, permissions: list[str] | None = None) -> Any:
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
def pages(browser: Any, live_server: LiveServer) -> Iterator[Pages]:
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
    opened = Pages(browser, live_server)
    yield opened
    opened.close()
    assert not opened.errors, opened.errors
