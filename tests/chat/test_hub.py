"""The hub's chat fan-out on its own (no Redis, no sockets): who gets a room's messages, what a visitor
sees of them, a queue turned into each visitor's own place, and a slow visitor socket dropped."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy.engine import Engine
from starlette.websockets import WebSocket, WebSocketState

from callcenter.accounts import Principal
from callcenter.bus import CHAT_MONITOR_TOPIC, chat_group_topic, chat_room_topic
from callcenter.http import AppContext
from callcenter.models import Permission
from chat.messages import ChatAgentChanged, ChatMessagePosted, ChatQueueChanged, ChatTyping, QueueEntry
from tests.conftest import make_settings
from webui import ws as push


class FakeSocket:
    application_state = WebSocketState.CONNECTED
    client_state = WebSocketState.CONNECTED

    def __init__(self) -> None:
        self.closed: int | None = None

    async def close(self, code: int = 1000) -> None:
        self.closed = code


def _staff(
    user_id: int, *, agent_id: int | None, monitor: bool = False, groups: frozenset[int] = frozenset()
) -> push.Conn:
    perms = {Permission.WORKSTATION, Permission.MULTIMEDIA_AGENT} if agent_id else set()
    if monitor:
        perms.add(Permission.MONITOR)
    principal = Principal(
        user_id=user_id,
        username=f"u{user_id}",
        display_name=f"u{user_id}",
        token_version=0,
        roles=frozenset(),
        permissions=frozenset(perms),
        agent_id=agent_id,
    )
    conn = push.Conn(cast(WebSocket, FakeSocket()), principal, frozenset({push.CHAT}), 0.0)
    conn.chat_groups = groups
    return conn


def _visitor(
    room_id: int, group_id: int = 1, state: str = "queued", sock: FakeSocket | None = None
) -> push.VisitorConn:
    ws = cast(WebSocket, sock or FakeSocket())
    return push.VisitorConn(ws, visitor_id=room_id * 10, room_id=room_id, group_id=group_id, state=state)


def _drain(conn: push.Conn | push.VisitorConn) -> list[dict[str, Any]]:
    out = []
    while not conn.queue.empty():
        item = conn.queue.get_nowait()
        assert isinstance(item, str)
        out.append(json.loads(item))
    return out


@pytest.fixture
def hub(sqlite_engine: Engine, tmp_path: Path) -> Any:
    hub = push.Hub(AppContext(settings=make_settings(tmp_path), engine=sqlite_engine, redis=None))
    yield hub
    hub._pool.shutdown()


def _message(room_id: int, text: str, agent_ids: list[int]) -> str:
    return ChatMessagePosted(
        room_id=room_id,
        agent_ids=agent_ids,
        seq=1,
        message_id=1,
        at=1.0,
        sender="visitor",
        kind="text",
        text=text,
    ).encode()


async def test_room_messages_reach_their_visitor_agent_and_watchers_only(hub: Any) -> None:
    ann, bob = _staff(1, agent_id=7, groups=frozenset({1})), _staff(2, agent_id=8, groups=frozenset({1}))
    sue = _staff(3, agent_id=None, monitor=True)
    v1, v2 = _visitor(101), _visitor(102)
    for conn in (ann, bob, sue, v1, v2):
        hub.register(conn)
    hub.dispatch(chat_room_topic(101), _message(101, "for ann", [7]))
    mine = _drain(v1)
    assert [m["text"] for m in mine] == ["for ann"] and "agent_ids" not in mine[0] and _drain(v2) == []
    assert [m["text"] for m in _drain(ann)] == ["for ann"] and _drain(bob) == []
    assert _drain(sue) == []  # supervisors read a room's messages once they watch it
    hub.watchers.setdefault(101, set()).add(sue)
    hub.dispatch(chat_room_topic(101), _message(101, "watched", [7]))
    assert [m["text"] for m in _drain(sue)] == ["watched"]
    _drain(v1)
    _drain(ann)
    hub.dispatch(
        chat_room_topic(101), ChatTyping(room_id=101, agent_ids=[7], sender="visitor", at=1.0).encode()
    )
    assert _drain(v1) == []  # a visitor does not see their own typing echoed
    seen = _drain(ann)[0]
    assert seen["type"] == "chat_typing" and seen["sender"] == "visitor"


async def test_a_queue_becomes_each_visitors_own_place(hub: Any) -> None:
    ann = _staff(1, agent_id=7, groups=frozenset({1}))
    other = _staff(2, agent_id=8, groups=frozenset({2}))
    v1, v2, v3 = _visitor(101), _visitor(102), _visitor(103, group_id=2)
    for conn in (ann, other, v1, v2, v3):
        hub.register(conn)
    queue = ChatQueueChanged(
        group_id=1,
        rooms=[
            QueueEntry(room_id=101, visitor_name="A", queued_at=1.0),
            QueueEntry(room_id=102, visitor_name="B", queued_at=2.0),
        ],
        total=2,
        agents_online=1,
        free=0,
        capacity=3,
        handle_s=90.0,
    )
    hub.dispatch(chat_group_topic(1), queue.encode())
    assert _drain(v2) == [
        {"type": "chat_queue", "room_id": 102, "position": 2, "eta_s": 60.0, "agents_online": 1, "at": 0.0}
    ]
    assert _drain(v1)[0]["position"] == 1 and _drain(v3) == []
    assert _drain(ann)[0]["rooms"][1]["visitor_name"] == "B" and _drain(other) == []
    hub.dispatch(
        CHAT_MONITOR_TOPIC, ChatAgentChanged(agent_id=7, available=True, capacity=3, load=1, at=1.0).encode()
    )
    assert _drain(ann)[0]["load"] == 1 and _drain(other) == []


async def test_a_slow_visitor_socket_is_dropped(hub: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push, "QUEUE_MAX", 2)
    sock = FakeSocket()
    slow = _visitor(101, sock=sock)
    hub.register(slow)
    for i in range(3):
        hub.dispatch(chat_room_topic(101), _message(101, f"m{i}", []))
    await asyncio.gather(*hub.tasks)
    assert slow.dropped and sock.closed == push.CLOSE_TOO_SLOW
