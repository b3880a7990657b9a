"""An external bot in place of the local one, over a signed HTTP webhook (shapes in chat/README.md).

We POST one JSON object per visitor message while the room is queued; the body is signed with
HMAC-SHA256 under `CALLCENTER_CHAT_BOT_WEBHOOK_SECRET`, hex in `X-Callcenter-Signature: sha256=<hex>`,
and carries a `timestamp` so the bot can refuse replays. The bot answers 200 with `{"actions": [...]}`.
Anything else - a timeout, a refused connection, a non-2xx status, a body that is not the shape - is
a failure: the visitor is told they are queued for a human (`Handoff`) and the failure is logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

import httpx

from chat.bot.engine import Action, Buttons, Card, Handoff, Resolve, Say

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Callcenter-Signature"
MAX_REPLY_BYTES = 64 * 1024
MAX_ACTIONS = 5


def sign(body: bytes, secret: str) -> str:
    """The signature header's value for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, header: str) -> bool:
    """True when `header` is the signature of `body` (what a receiving bot checks)."""
    return hmac.compare_digest(sign(body, secret), header.strip())


class WebhookFailed(Exception):
    pass


def _text(value: Any, limit: int, name: str) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise WebhookFailed(f"{name} is not a text of at most {limit} characters")
    return value


def parse_actions(data: Any) -> list[Action]:
    """The bot's reply as actions; WebhookFailed when it is not the documented shape."""
    if not isinstance(data, dict) or not isinstance(data.get("actions"), list):
        raise WebhookFailed("the reply has no actions list")
    actions: list[Action] = []
    for item in data["actions"][:MAX_ACTIONS]:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "text":
            actions.append(Say(_text(item.get("text"), 4000, "text")))
        elif kind == "buttons":
            raw = item.get("buttons")
            if not isinstance(raw, list) or not 1 <= len(raw) <= 8:
                raise WebhookFailed("buttons is a list of 1 to 8")
            buttons = tuple(
                (_text(b.get("id"), 64, "button id"), _text(b.get("label"), 40, "button label"))
                for b in raw
                if isinstance(b, dict)
            )
            actions.append(Buttons(_text(item.get("text", ""), 1000, "text"), buttons, {"webhook": True}))
        elif kind == "card":
            actions.append(
                Card(
                    title=_text(item.get("title"), 200, "title"),
                    summary=_text(item.get("summary", ""), 1000, "summary"),
                    image_url=_text(item.get("image_url", ""), 500, "image_url"),
                    link=_text(item.get("link", ""), 500, "link"),
                )
            )
        elif kind == "handoff":
            actions.append(Handoff())
        elif kind == "resolve":
            actions.append(Resolve())
        else:
            raise WebhookFailed(f"unknown action type {kind!r}")
    return actions


def call(url: str, payload: dict[str, Any], *, secret: str, timeout_s: float) -> list[Action]:
    """POST the signed payload and return the bot's actions; WebhookFailed on any failure."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, secret)}
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
            resp = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise WebhookFailed(f"{type(exc).__name__}: {exc}") from None
    if resp.status_code // 100 != 2:
        raise WebhookFailed(f"HTTP {resp.status_code}")
    if len(resp.content) > MAX_REPLY_BYTES:
        raise WebhookFailed("the reply is too large")
    try:
        data = resp.json()
    except ValueError:
        raise WebhookFailed("the reply is not JSON") from None
    return parse_actions(data)
