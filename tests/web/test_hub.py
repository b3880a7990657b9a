"""The hub's fan-out on its own: routing by topic, and a socket that falls behind being dropped (it
reconnects and gets a fresh `hello`) instead of holding messages for everyone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from starlette.websockets import WebSocketState

from callcenter.accounts import Principal
from callcenter.bus import MONITOR_TOPIC, agent_topic, encode
from callcenter.http import AppContext
from callcenter.messages import AgentChanged, AgentStateChanged, TaskStats
from callcenter.models import Permission
from webui import ws as push


class FakeSocket:
    application_state = WebSocketState.CONNECTED
    client_state = WebSocketState.CONNECTED

    def __init__(self) -> None:
        self.closed: int | None = None

    async def close(self, code: int = 1000) -> None:
        self.closed = code


def _principal(user_id: int, *, agent_id: int | None, monitor: bool = False) -> Principal:
    perms = {Permission.WORKSTATION} | ({Permission.MONITOR} if monitor else set())
    return Principal(
        user_id=user_id,
        username=f"u{user_id}",
        display_name=f"u{user_id}",
        token_version=0,
        roles=frozenset(),
        permissions=frozenset(perms),
        agent_id=agent_id,
    )


def _conn(principal: Principal) -> push.Conn:
    return push.Conn(FakeSocket(), principal, push.permitted_streams(principal), 0.0)  # type: ignore[arg-type]


def _drain(conn: push.Conn) -> list[Any]:
    out = []
    while not conn.queue.empty():
        out.append(conn.queue.get_nowait())
    return out


async def test_messages_are_routed_by_topic_and_permission(sqlite_engine: Engine, tmp_path: Path) -> None:
    from tests.conftest import make_settings

    hub = push.Hub(AppContext(settings=make_settings(tmp_path), engine=sqlite_engine, redis=None))
    ann, bob = _conn(_principal(1, agent_id=7)), _conn(_principal(2, agent_id=8))
    sue = _conn(_principal(3, agent_id=None, monitor=True))
    for conn in (ann, bob, sue):
        hub.register(conn)
    assert ann.streams == {"agent"} and sue.streams == {"monitor"}

    state = AgentStateChanged(agent_id=7, state="ready", since=1.0).encode()
    stats = TaskStats(campaign_id=1).encode()
    hub.dispatch(agent_topic(7), state)
    hub.dispatch(MONITOR_TOPIC, stats)
    hub.dispatch("cc:dialer", AgentChanged(agent_id=7).encode())
    hub.dispatch(agent_topic(7), encode("agent_state", {"agent_id": 7}))  # malformed: dropped, logged
    hub.dispatch(agent_topic(99), state)  # nobody here: nothing happens, nothing is read
    hub.dispatch("cc:agent:not-a-number", state)
    assert _drain(ann) == [state]  # forwarded as the exact text Redis delivered
    assert _drain(bob) == []
    assert [m for m in _drain(sue) if isinstance(m, str)] == [stats]
    hub.unregister(ann)
    assert 7 not in hub.by_agent
    hub._pool.shutdown()


async def test_a_socket_that_falls_behind_is_dropped_not_waited_for(
    sqlite_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import make_settings

    monkeypatch.setattr(push, "QUEUE_MAX", 3)
    hub = push.Hub(AppContext(settings=make_settings(tmp_path), engine=sqlite_engine, redis=None))
    slow, fast = _conn(_principal(1, agent_id=7)), _conn(_principal(2, agent_id=7))
    hub.register(slow)
    hub.register(fast)
    for i in range(3):
        hub.dispatch(agent_topic(7), AgentStateChanged(agent_id=7, state="ready", since=float(i)).encode())
        _drain(fast)  # this one keeps up
    hub.dispatch(agent_topic(7), AgentStateChanged(agent_id=7, state="ready", since=9.0).encode())
    await asyncio.gather(*hub.tasks)
    assert slow.dropped and slow.ws.closed == push.CLOSE_TOO_SLOW  # type: ignore[attr-defined]
    assert not fast.dropped and len(_drain(fast)) == 1
    hub._pool.shutdown()
