"""Bounds and shapes of what people type into a chat: plain text (emoji welcome, no control
characters, never HTML: the browser escapes it), http(s) links, buttons, cards, idempotency keys.
Each failure is `Invalid` naming the field."""

from __future__ import annotations

import re
from collections.abc import Sequence

from callcenter.errors import Invalid

MAX_BUTTONS = 8
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(text: str, *, limit: int, name: str = "text", required: bool = True) -> str:
    """Plain text as typed (emoji welcome), without control characters, within `limit`."""
    if not isinstance(text, str):
        raise Invalid(f"{name} must be a text", field=name)
    if _CONTROL.search(text):
        raise Invalid(f"{name} contains control characters", field=name)
    if required and not text.strip():
        raise Invalid(f"{name} must not be empty", field=name)
    if len(text) > limit:
        raise Invalid(f"{name} has at most {limit} characters", field=name)
    return text


def clean_url(url: str, *, name: str) -> str:
    url = url.strip()
    if not url:
        return ""
    if len(url) > 500 or not re.match(r"^https?://[^\s<>\"]+$", url):
        raise Invalid(f"{name} must be an http(s) URL of at most 500 characters", field=name)
    return url


def clean_buttons(buttons: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    if not 1 <= len(buttons) <= MAX_BUTTONS:
        raise Invalid(f"give 1 to {MAX_BUTTONS} buttons", field="buttons")
    out = []
    for bid, label in buttons:
        clean_text(label, limit=40, name="buttons")
        if not re.match(r"^[A-Za-z0-9_.:-]{1,64}$", bid):
            raise Invalid("a button id has 1-64 letters, digits or _.:-", field="buttons")
        out.append({"id": bid, "label": label})
    if len({b["id"] for b in out}) != len(out):
        raise Invalid("button ids must differ", field="buttons")
    return out


def clean_client_id(client_id: str | None) -> str | None:
    if client_id is None or client_id == "":
        return None
    if len(client_id) > 64 or not re.match(r"^[A-Za-z0-9_.:-]+$", client_id):
        raise Invalid("client_id has 1-64 letters, digits or _.:-", field="client_id")
    return client_id


def card_payload(card: dict[str, str]) -> dict[str, str]:
    title = clean_text(card.get("title", ""), limit=200, name="title")
    return {
        "title": title,
        "summary": clean_text(card.get("summary", ""), limit=1000, name="summary", required=False),
        "image_url": clean_url(card.get("image_url", ""), name="image_url"),
        "link": clean_url(card.get("link", ""), name="link"),
    }
