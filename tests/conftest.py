"""Session-wide real servers (Redis, PostgreSQL) and per-test databases on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.engine import Engine

from callcenter.config import Settings
from callcenter.db import make_engine, upgrade
from callcenter.redis_server import EmbeddedRedis
from callcenter.seed import seed_base
from tests.servers import PostgresServer

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

TEST_SECRET = "test-secret-key-0123456789abcdef"
_db_counter = itertools.count()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server for the whole session."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_template(pg_server: PostgresServer) -> str:
    """A migrated and seeded database that each PostgreSQL test copies."""
    admin = make_engine(pg_server.url()).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE cc_template"))
    admin.dispose()
    url = pg_server.url("cc_template")
    upgrade(url)
    engine = make_engine(url)
    seed_base(engine)
    engine.dispose()
    return "cc_template"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = make_engine(url)
    seed_base(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


def _sqlite_url(template: Path, tmp_path: Path) -> str:
    path = tmp_path / "test.db"
    shutil.copy(template, path)
    return f"sqlite:///{path}"


def _pg_url(pg_server: PostgresServer, template: str) -> str:
    name = f"cc_test_{next(_db_counter)}"
    admin = make_engine(pg_server.url()).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name} TEMPLATE {template}"))
    admin.dispose()
    return pg_server.url(name)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh migrated database: every test using it runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return _sqlite_url(request.getfixturevalue("sqlite_template"), tmp_path)
    return _pg_url(request.getfixturevalue("pg_server"), request.getfixturevalue("pg_template"))


@pytest.fixture
def pg_url(pg_server: PostgresServer, pg_template: str) -> str:
    """A fresh migrated PostgreSQL database (for tests that need PostgreSQL specifically)."""
    return _pg_url(pg_server, pg_template)


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh migrated SQLite database (the fast path, for tests that are not about the database)."""
    return _sqlite_url(sqlite_template, tmp_path)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"mode": "dev", "secret_key": TEST_SECRET, "data_dir": tmp_path}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


class WebHarness:
    """A TestClient on the real app with helpers to create users and sign in."""

    def __init__(
        self, app: FastAPI, client: TestClient, engine: Engine, settings: Settings, redis_client: redis.Redis
    ) -> None:
        self.app = app
        self.client = client
        self.engine = engine
        self.settings = settings
        self.redis = redis_client

    def user(
        self,
        username: str,
        roles: list[str],
        *,
        password: str = "password-123",
        extension: str | None = None,
        skill_group_ids: list[int] | None = None,
    ) -> int:
        from callcenter import accounts
        from callcenter.db import session_scope

        with session_scope(self.engine) as session:
            user = accounts.create_user(session, username=username, password=password, roles=roles)
            assert user.id is not None
            if extension:
                accounts.create_agent(
                    session, user_id=user.id, extension=extension, skill_group_ids=skill_group_ids or []
                )
            return user.id

    def token(self, username: str, password: str = "password-123") -> str:
        resp = self.client.post("/api/auth/token", json={"username": username, "password": password})
        assert resp.status_code == 200, resp.text
        return str(resp.json()["access_token"])

    def headers(self, username: str, password: str = "password-123") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(username, password)}"}

    def login(self, username: str, password: str = "password-123") -> None:
        """Sign in with the session cookie as a browser does, and send the page's CSRF token with
        every later request (as the pages' scripts do)."""
        resp = self.client.post(
            "/login", data={"username": username, "password": password}, follow_redirects=False
        )
        assert resp.status_code == 303, resp.text
        token = self.csrf_token()
        if token:
            self.client.headers["X-CSRF-Token"] = token
        else:
            self.client.headers.pop("X-CSRF-Token", None)

    def csrf_token(self) -> str:
        """The CSRF token a page of the signed-in session carries (its `csrf-token` meta tag)."""
        import re

        page = self.client.get("/login")
        found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
        return found.group(1) if found else ""


class WebFactory(Protocol):
    """The `web_factory` fixture: a WebHarness on the given engine, settings overridden by keyword."""

    def __call__(
        self, engine: Engine, *, peer: tuple[str, int] | None = None, **overrides: object
    ) -> WebHarness: ...


@pytest.fixture
def web_factory(redis_client: redis.Redis, tmp_path: Path) -> Iterator[WebFactory]:
    """Build a WebHarness on a given engine (so a test can pick SQLite or both databases)."""
    from fastapi.testclient import TestClient

    from callcenter.http import AppContext
    from webui.app import create_app

    clients = []

    def build(engine: Engine, *, peer: tuple[str, int] | None = None, **overrides: object) -> WebHarness:
        """`peer`: the address the app sees the test client connect from."""
        settings = make_settings(
            tmp_path,
            redis_url=redis_client.connection_pool.connection_kwargs
            and f"redis://127.0.0.1:{redis_client.connection_pool.connection_kwargs['port']}/0",
            **overrides,
        )
        ctx = AppContext(settings=settings, engine=engine, redis=redis_client)
        app = create_app(settings, ctx=ctx)
        client = TestClient(app, client=peer) if peer else TestClient(app)
        client.__enter__()
        clients.append(client)
        return WebHarness(app, client, engine, settings, redis_client)

    yield build
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def web(web_factory: WebFactory, sqlite_engine: Engine) -> WebHarness:
    return web_factory(sqlite_engine)
