"""A Telegram Bot API peer speaking the documented wire shapes (https://core.telegram.org/bots/api):
`POST /bot<token>/<method>` with JSON or multipart, answered `{"ok": true, "result": ...}` (or
`{"ok": false, "error_code": 401, "description": "Unauthorized"}` for a wrong token); `getFile` and
`GET /file/bot<token>/<file_path>` for photos. Also builds the `Update` objects Telegram POSTs to a
webhook (text message, photo, callback_query)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from tests.peers.http import Request

_ids = itertools.count(100)


@dataclass
class TelegramPeer:
    token: str
    files: dict[str, bytes] = field(default_factory=dict)  # file_id -> bytes
    calls: list[tuple[str, dict[str, Any], bytes]] = field(default_factory=list)  # (method, fields, raw body)

    def handle(self, req: Request) -> tuple[int, dict[str, str], bytes]:
        json_type = {"Content-Type": "application/json"}
        prefix = f"/file/bot{self.token}/"
        if req.method == "GET" and req.path.startswith(prefix):
            data = self.files.get(req.path[len(prefix) :].removeprefix("photos/"))
            return (200, {"Content-Type": "image/png"}, data) if data else (404, json_type, b"{}")
        head = f"/bot{self.token}/"
        if not req.path.startswith(head):
            return (
                401,
                json_type,
                json.dumps({"ok": False, "error_code": 401, "description": "Unauthorized"}).encode(),
            )
        method = req.path[len(head) :]
        fields: dict[str, Any] = {}
        if req.headers.get("content-type", "").startswith("application/json"):
            fields = json.loads(req.body)
        self.calls.append((method, fields, req.body))
        result: Any = True
        if method in ("sendMessage", "sendPhoto"):
            result = {"message_id": next(_ids), "chat": {"id": fields.get("chat_id"), "type": "private"}}
        elif method == "getFile":
            file_id = fields.get("file_id", "")
            if file_id not in self.files:
                return (
                    400,
                    json_type,
                    json.dumps(
                        {"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"}
                    ).encode(),
                )
            result = {"file_id": file_id, "file_unique_id": file_id, "file_path": f"photos/{file_id}"}
        return 200, json_type, json.dumps({"ok": True, "result": result}).encode()

    def sent(self, method: str) -> list[dict[str, Any]]:
        return [f for m, f, _ in self.calls if m == method]


def user(user_id: int, first_name: str = "Ivan") -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": "en"}


def text_update(chat_id: int, text: str, *, first_name: str = "Ivan") -> dict[str, Any]:
    return {
        "update_id": next(_ids),
        "message": {
            "message_id": next(_ids),
            "from": user(chat_id, first_name),
            "chat": {"id": chat_id, "first_name": first_name, "type": "private"},
            "date": 1_700_000_000,
            "text": text,
        },
    }


def photo_update(chat_id: int, file_id: str, size: int) -> dict[str, Any]:
    return {
        "update_id": next(_ids),
        "message": {
            "message_id": next(_ids),
            "from": user(chat_id),
            "chat": {"id": chat_id, "type": "private"},
            "date": 1_700_000_000,
            "photo": [
                {
                    "file_id": f"{file_id}-small",
                    "file_unique_id": "s",
                    "width": 90,
                    "height": 90,
                    "file_size": 999_999_999,
                },
                {"file_id": file_id, "file_unique_id": "b", "width": 64, "height": 48, "file_size": size},
            ],
        },
    }


def callback_update(chat_id: int, data: str) -> dict[str, Any]:
    return {
        "update_id": next(_ids),
        "callback_query": {
            "id": str(next(_ids)),
            "from": user(chat_id),
            "message": {
                "message_id": 1,
                "chat": {"id": chat_id, "type": "private"},
                "date": 1_700_000_000,
                "text": "...",
            },
            "chat_instance": "42",
            "data": data,
        },
    }
