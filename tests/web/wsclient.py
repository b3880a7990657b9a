"""Receiving from a TestClient WebSocket with a deadline, so a message that never comes fails the test
in seconds instead of hanging it."""

from __future__ import annotations

import json
from typing import Any

import anyio
from starlette.testclient import WebSocketTestSession

DEADLINE_S = 5.0


class Closed(Exception):
    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"socket closed with {code} {reason}")
        self.code = code
        self.reason = reason


def recv(ws: WebSocketTestSession, timeout: float = DEADLINE_S) -> dict[str, Any]:
    """The next message as JSON; raises `Closed` when the server closed the socket."""

    async def receive() -> Any:
        with anyio.fail_after(timeout):
            return await ws._send_rx.receive()

    message = ws.portal.call(receive)
    if message["type"] == "websocket.close":
        raise Closed(message.get("code", 1000), message.get("reason") or "")
    data = json.loads(message["text"])
    assert isinstance(data, dict)
    return data


def recv_until(ws: WebSocketTestSession, kind: str, timeout: float = DEADLINE_S) -> dict[str, Any]:
    """Skip messages until one of type `kind` arrives."""
    while True:
        msg = recv(ws, timeout)
        if msg["type"] == kind:
            return msg
