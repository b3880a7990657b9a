"""A chat world on a real database and Redis: two skill groups with chat on, multimedia agents in them,
a runtime (no channel adapters unless a test gives some), and helpers to start chats as visitors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy.engine import Engine
from sqlmodel import Session

from callcenter import accounts
from callcenter.db import session_scope
from chat import assign, services, views, visitors
from chat.bot.runner import greeting_of
from chat.models import ChatGroupConfig, ChatRoom, ChatVisitor
from chat.runtime import ChatRuntime
from chat.services import Outbox
from tests.conftest import make_settings


@dataclass
class World:
    engine: Engine
    rt: ChatRuntime
    redis: redis.Redis
    groups: dict[str, int] = field(default_factory=dict)
    agents: dict[str, int] = field(default_factory=dict)  # username -> agent id
    users: dict[str, int] = field(default_factory=dict)
    clock: float = 1_000_000.0

    def tick(self, seconds: float = 1.0) -> float:
        self.clock += seconds
        return self.clock

    def group(self, name: str, **config: Any) -> int:
        with session_scope(self.engine) as session:
            group = accounts.create_skill_group(session, name=name)
            assert group.id is not None
            session.add(ChatGroupConfig(skill_group_id=group.id, **config))
            self.groups[name] = group.id
            return group.id

    def agent(
        self, username: str, groups: list[str], *, roles: list[str] | None = None, capacity: int = 3
    ) -> int:
        with session_scope(self.engine) as session:
            user = accounts.create_user(
                session, username=username, password="password-123", roles=roles or ["agent"]
            )
            assert user.id is not None
            ext = str(2000 + len(self.agents))
            agent = accounts.create_agent(
                session, user_id=user.id, extension=ext, skill_group_ids=[self.groups[g] for g in groups]
            )
            assert agent.id is not None
            self.agents[username] = agent.id
            self.users[username] = user.id
        self.set_agent(username, available=True, capacity=capacity)
        return self.agents[username]

    def set_agent(self, username: str, *, available: bool | None = None, capacity: int | None = None) -> None:
        with session_scope(self.engine) as session:
            assign.set_agent(
                session,
                agent_id=self.agents[username],
                settings=self.rt.settings,
                now=self.tick(),
                available=available,
                capacity=capacity,
            )

    def visit(self, group: str, *, name: str = "Visitor", text: str | None = None) -> tuple[int, str]:
        """A web visitor starts a chat in `group` (and says `text`): (room id, token). Settled."""
        out = Outbox()
        with session_scope(self.engine) as session:
            visitor = visitors.new_web_visitor(session, name=name, email="", phone="", now=self.tick())
            config = session.get(ChatGroupConfig, self.groups[group])
            room = services.start(
                session,
                visitor=visitor,
                group_id=self.groups[group],
                now=self.clock,
                out=out,
                greeting=greeting_of(config),
            )
            assert room.id is not None
            room_id = room.id
            token = visitors.issue_token(visitor, secret=self.rt.settings.secret_key.get_secret_value())
            if text is not None:
                services.visitor_says(session, room=room, text=text, now=self.tick(), out=out, limit=2000)
        self.rt.settle(out, now=self.clock)
        return room_id, token

    def say(self, room_id: int, text: str) -> None:
        out = Outbox()
        with session_scope(self.engine) as session:
            room = services.load_room(session, room_id)
            services.visitor_says(session, room=room, text=text, now=self.tick(), out=out, limit=2000)
        self.rt.settle(out, now=self.clock)

    def room(self, room_id: int) -> ChatRoom:
        with Session(self.engine) as session:
            room = session.get(ChatRoom, room_id)
            assert room is not None
            return room

    def history(self, room_id: int) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            return views.history(session, room_id=room_id)

    def visitor(self, room_id: int) -> ChatVisitor:
        with Session(self.engine) as session:
            visitor = session.get(ChatVisitor, self.room(room_id).visitor_id)
            assert visitor is not None
            return visitor


def _world(engine: Engine, redis_client: redis.Redis, tmp_path: Path, **settings: Any) -> World:
    port = redis_client.connection_pool.connection_kwargs["port"]
    conf = make_settings(tmp_path, redis_url=f"redis://127.0.0.1:{port}/0", **settings)
    return World(
        engine=engine,
        rt=ChatRuntime(engine=engine, redis=redis_client, settings=conf, channels={}),
        redis=redis_client,
    )


@pytest.fixture
def world(engine: Engine, redis_client: redis.Redis, tmp_path: Path) -> World:
    """On both databases."""
    return _world(engine, redis_client, tmp_path)


@pytest.fixture
def sqlite_world(sqlite_engine: Engine, redis_client: redis.Redis, tmp_path: Path) -> World:
    return _world(sqlite_engine, redis_client, tmp_path)


@pytest.fixture
def bus(redis_client: redis.Redis) -> Iterator[Any]:
    """A subscription to every chat topic, read as typed dicts."""
    sub = redis_client.pubsub()
    sub.psubscribe("cc:chat:*")
    sub.get_message(timeout=1.0)

    class Reader:
        def drain(self) -> list[tuple[str, dict[str, Any]]]:
            out: list[tuple[str, dict[str, Any]]] = []
            while True:
                msg = sub.get_message(timeout=0.05)
                if msg is None:
                    return out
                if msg["type"] == "pmessage":
                    out.append((msg["channel"], json.loads(msg["data"])))

    yield Reader()
    sub.close()
