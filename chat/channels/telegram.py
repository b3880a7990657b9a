"""Telegram Bot API adapter (https://core.telegram.org/bots/api).

Inbound: Telegram POSTs `Update` objects to our webhook (`POST /api/chat/channels/telegram/webhook`,
registered with `setWebhook(url, secret_token=...)`); every request carries the secret in
`X-Telegram-Bot-Api-Secret-Token`, compared in constant time (a wrong one is refused with 403 and
logged). A `message` with `text` (or a `photo`, fetched with `getFile`) is a visitor message; a
`callback_query` is a click on an inline keyboard button we sent (`callback_data` = "<seq>:<button
id>"), acknowledged with `answerCallbackQuery`.

Outbound: `sendMessage` (text; buttons as an `inline_keyboard`, one button per row; a card as its
title and summary with a URL button), `sendPhoto` (multipart upload of the stored image).
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from callcenter.config import Settings
from chat.channels.base import Inbound, Outgoing
from chat.models import Channel

log = logging.getLogger(__name__)
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
TIMEOUT_S = 10.0
MAX_PHOTO_BYTES = 20 * 1024 * 1024


class TelegramError(Exception):
    pass


@dataclass
class TelegramAdapter:
    token: str
    secret: str
    api_base: str
    max_photo_bytes: int = MAX_PHOTO_BYTES
    name: str = Channel.TELEGRAM.value

    @classmethod
    def from_settings(cls, settings: Settings) -> TelegramAdapter:
        return cls(
            token=settings.chat_telegram_bot_token.get_secret_value(),
            secret=settings.chat_telegram_secret_token.get_secret_value(),
            api_base=settings.chat_telegram_api_base,
            max_photo_bytes=settings.chat_upload_max_bytes,
        )

    # --- inbound ---------------------------------------------------------------------------------

    def verify(self, header: str | None) -> bool:
        """The webhook request is Telegram's: it carries our secret token."""
        return bool(self.secret) and header is not None and hmac.compare_digest(header, self.secret)

    def parse(self, update: Any) -> tuple[Inbound | None, str | None]:
        """(the visitor message, the callback query id to answer) of one Update; (None, None) for
        updates that are not for us (edits, channel posts, group chats)."""
        if not isinstance(update, dict):
            return None, None
        query = update.get("callback_query")
        if isinstance(query, dict):
            message = query.get("message") or {}
            chat = message.get("chat") or {}
            seq, _, button = str(query.get("data", "")).partition(":")
            if not seq.isdigit() or not button or "id" not in chat:
                return None, str(query.get("id", "")) or None
            sender = query.get("from") or {}
            inbound = Inbound(
                channel=Channel.TELEGRAM,
                user_id=str(chat["id"]),
                name=_name(sender),
                choice=(int(seq), button),
                message_key=f"cb{query.get('id', '')}",
            )
            return inbound, str(query.get("id", ""))
        message = update.get("message")
        if not isinstance(message, dict):
            return None, None
        chat = message.get("chat") or {}
        if chat.get("type") != "private" or "id" not in chat:
            return None, None
        user_id, name = str(chat["id"]), _name(message.get("from") or {})
        key = f"m{message.get('message_id', '')}"
        if isinstance(message.get("text"), str):
            return Inbound(Channel.TELEGRAM, user_id, name, text=message["text"], message_key=key), None
        photos = message.get("photo")
        if isinstance(photos, list) and photos:
            fitting = [
                p for p in photos if isinstance(p, dict) and p.get("file_size", 0) <= self.max_photo_bytes
            ]
            best = max(fitting or photos[:1], key=lambda p: p.get("width", 0) * p.get("height", 0))
            image = self.download(str(best.get("file_id", "")))
            return Inbound(Channel.TELEGRAM, user_id, name, image=image, message_key=key), None
        return None, None

    def download(self, file_id: str) -> bytes:
        """A photo's bytes: `getFile`, then the file URL."""
        result = self._call("getFile", {"file_id": file_id})
        path = result.get("file_path") if isinstance(result, dict) else None
        if not isinstance(path, str):
            raise TelegramError("getFile gave no file_path")
        with httpx.Client(timeout=TIMEOUT_S) as client:
            resp = client.get(f"{self.api_base}/file/bot{self.token}/{path}")
        if resp.status_code != 200:
            raise TelegramError(f"file download: HTTP {resp.status_code}")
        return resp.content[: self.max_photo_bytes + 1]

    def answer_callback(self, callback_id: str) -> None:
        self._call("answerCallbackQuery", {"callback_query_id": callback_id})

    # --- outbound --------------------------------------------------------------------------------

    def send(self, user_id: str, message: Outgoing) -> None:
        if message.kind == "image" and message.image is not None:
            self._call(
                "sendPhoto",
                {"chat_id": user_id},
                files={"photo": ("image", message.image, message.image_mime)},
            )
            return
        body: dict[str, Any] = {"chat_id": user_id, "text": message.text or " "}
        if message.kind == "buttons" and message.buttons:
            body["reply_markup"] = {
                "inline_keyboard": [
                    [{"text": b["label"], "callback_data": f"{message.seq}:{b['id']}"[:64]}]
                    for b in message.buttons
                ]
            }
        elif message.kind == "card":
            card = message.card
            body["text"] = "\n\n".join(p for p in (card.get("title", ""), card.get("summary", "")) if p)
            if card.get("link"):
                body["reply_markup"] = {"inline_keyboard": [[{"text": "Open", "url": card["link"]}]]}
        self._call("sendMessage", body)

    def _call(self, method: str, body: dict[str, Any], *, files: dict[str, Any] | None = None) -> Any:
        url = f"{self.api_base}/bot{self.token}/{method}"
        with httpx.Client(timeout=TIMEOUT_S) as client:
            resp = client.post(url, data=body, files=files) if files else client.post(url, json=body)
        try:
            data = resp.json()
        except ValueError:
            raise TelegramError(f"{method}: HTTP {resp.status_code}, not JSON") from None
        if not isinstance(data, dict) or not data.get("ok"):
            raise TelegramError(f"{method}: {data.get('description') if isinstance(data, dict) else data}")
        return data.get("result")


def _name(user: dict[str, Any]) -> str:
    parts = [str(user.get("first_name", "")), str(user.get("last_name", ""))]
    return " ".join(p for p in parts if p).strip()[:128] or str(user.get("username", ""))[:128]
