"""What every request handler may use: settings, the database engine, Redis. Built once by the app's
lifespan (or handed in by tests) and stored on `app.state.ctx`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from sqlalchemy.engine import Engine
from sqlmodel import Session

from callcenter.bus import Bus
from callcenter.config import Settings


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    redis: Any  # redis.Redis (sync): throttling, publishing from sync routes
    aredis: Any = None  # redis.asyncio.Redis: WebSocket fan-out
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def bus(self) -> Bus:
        return Bus(self.redis)


def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def get_session(request: Request) -> Iterator[Session]:
    """A database session per request: committed when the handler returns, rolled back on error."""
    with Session(get_ctx(request).engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
