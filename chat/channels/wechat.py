"""WeChat Official Account adapter (plaintext mode of the server configuration).

Inbound: WeChat calls our URL (`/api/chat/channels/wechat`) with `signature`, `timestamp` and `nonce`
in the query; the signature is the SHA-1 of the sorted concatenation of our token, the timestamp and
the nonce. GET (checking the URL once) echoes `echostr`; POST carries one XML message (`text`,
`image` with `PicUrl`, a click on a `msgmenu` button as `text` with `bizmsgmenuid`). A bad signature
is refused with 403 and logged; DOCTYPE / entity declarations are refused before parsing.

Outbound: the first bot text produced while handling a POST goes back as the passive reply (the
response's XML, within WeChat's 5 s); everything else - agents' replies, later bot messages - goes
through the customer-service message API (`/cgi-bin/message/custom/send`) with an access token
(`/cgi-bin/token`, cached in Redis until shortly before it expires): text, `msgmenu` for buttons,
`news` for a card, `image` after `/cgi-bin/media/upload`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import httpx

from callcenter.config import Settings
from chat.channels.base import Inbound, Outgoing
from chat.models import Channel

TIMEOUT_S = 10.0
MAX_BODY = 64 * 1024
TOKEN_KEY = "cc:chat:wechat:access_token"


class WeChatError(Exception):
    pass


def signature(token: str, timestamp: str, nonce: str) -> str:
    return hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest()


def parse_xml(body: bytes) -> dict[str, str]:
    """The fields of one pushed message; ValueError when it is not a safe, well-formed <xml>."""
    if len(body) > MAX_BODY:
        raise ValueError("message too large")
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise ValueError("DOCTYPE and entity declarations are refused")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ValueError(f"not XML: {exc}") from None
    if root.tag != "xml":
        raise ValueError("the root element is not <xml>")
    return {child.tag: (child.text or "") for child in root}


def reply_xml(to_user: str, from_user: str, text: str, now: float) -> str:
    """A passive text reply. CDATA cannot hold "]]>", so the text is escaped character data instead."""
    return (
        f"<xml><ToUserName>{escape(to_user)}</ToUserName><FromUserName>{escape(from_user)}</FromUserName>"
        f"<CreateTime>{int(now)}</CreateTime><MsgType>text</MsgType><Content>{escape(text)}</Content></xml>"
    )


@dataclass
class WeChatAdapter:
    token: str
    app_id: str
    app_secret: str
    api_base: str
    redis: Any
    max_image_bytes: int = 5 * 1024 * 1024
    name: str = Channel.WECHAT.value

    @classmethod
    def from_settings(cls, settings: Settings, redis: Any) -> WeChatAdapter:
        return cls(
            token=settings.chat_wechat_token.get_secret_value(),
            app_id=settings.chat_wechat_app_id,
            app_secret=settings.chat_wechat_app_secret.get_secret_value(),
            api_base=settings.chat_wechat_api_base,
            redis=redis,
            max_image_bytes=settings.chat_upload_max_bytes,
        )

    # --- inbound ---------------------------------------------------------------------------------

    def verify(self, sig: str, timestamp: str, nonce: str) -> bool:
        return bool(self.token) and hmac.compare_digest(signature(self.token, timestamp, nonce), sig)

    def parse(self, fields: dict[str, str]) -> Inbound | None:
        """The visitor message of one push; None for events (subscribe, menu views ...)."""
        kind = fields.get("MsgType", "")
        user = fields.get("FromUserName", "")
        if not user:
            return None
        key = f"w{fields['MsgId']}" if fields.get("MsgId") else ""
        if kind == "text":
            seq, _, button = fields.get("bizmsgmenuid", "").partition(":")
            if seq.isdigit() and button:
                return Inbound(Channel.WECHAT, user, choice=(int(seq), button), message_key=key)
            return Inbound(Channel.WECHAT, user, text=fields.get("Content", ""), message_key=key)
        if kind == "image" and fields.get("PicUrl"):
            return Inbound(Channel.WECHAT, user, image=self.download(fields["PicUrl"]), message_key=key)
        return None

    def download(self, url: str) -> bytes:
        if not url.startswith(("http://", "https://")):
            raise WeChatError("PicUrl is not an http(s) URL")
        with httpx.Client(timeout=TIMEOUT_S) as client:
            resp = client.get(url)
        if resp.status_code != 200:
            raise WeChatError(f"image download: HTTP {resp.status_code}")
        return resp.content[: self.max_image_bytes + 1]

    # --- outbound --------------------------------------------------------------------------------

    def access_token(self) -> str:
        cached = self.redis.get(TOKEN_KEY) if self.redis is not None else None
        if cached:
            return str(cached)
        with httpx.Client(timeout=TIMEOUT_S) as client:
            resp = client.get(
                f"{self.api_base}/cgi-bin/token",
                params={"grant_type": "client_credential", "appid": self.app_id, "secret": self.app_secret},
            )
        data = _json(resp)
        token = data.get("access_token")
        if not isinstance(token, str):
            raise WeChatError(f"token: {data.get('errcode')} {data.get('errmsg')}")
        ttl = max(60, int(data.get("expires_in", 7200)) - 300)
        if self.redis is not None:
            self.redis.set(TOKEN_KEY, token, ex=ttl)
        return token

    def send(self, user_id: str, message: Outgoing) -> None:
        body: dict[str, Any] = {"touser": user_id}
        if message.kind == "image" and message.image is not None:
            body.update(msgtype="image", image={"media_id": self._upload(message.image, message.image_mime)})
        elif message.kind == "buttons" and message.buttons:
            body.update(
                msgtype="msgmenu",
                msgmenu={
                    "head_content": message.text,
                    "list": [
                        {"id": f"{message.seq}:{b['id']}", "content": b["label"]} for b in message.buttons
                    ],
                    "tail_content": "",
                },
            )
        elif message.kind == "card":
            card = message.card
            article = {
                "title": card.get("title", ""),
                "description": card.get("summary", ""),
                "url": card.get("link", ""),
                "picurl": card.get("image_url", ""),
            }
            body.update(msgtype="news", news={"articles": [article]})
        else:
            body.update(msgtype="text", text={"content": message.text})
        self._post("/cgi-bin/message/custom/send", body)

    def _upload(self, data: bytes, mime: str) -> str:
        with httpx.Client(timeout=TIMEOUT_S) as client:
            resp = client.post(
                f"{self.api_base}/cgi-bin/media/upload",
                params={"access_token": self.access_token(), "type": "image"},
                files={"media": ("image", data, mime)},
            )
        data_ = _json(resp)
        media = data_.get("media_id")
        if not isinstance(media, str):
            raise WeChatError(f"media/upload: {data_.get('errcode')} {data_.get('errmsg')}")
        return media

    def _post(self, path: str, body: dict[str, Any]) -> None:
        for attempt in range(2):
            with httpx.Client(timeout=TIMEOUT_S) as client:
                resp = client.post(
                    f"{self.api_base}{path}",
                    params={"access_token": self.access_token()},
                    content=json.dumps(body, ensure_ascii=False).encode(),
                    headers={"Content-Type": "application/json"},
                )
            data = _json(resp)
            code = data.get("errcode", 0)
            if code == 0:
                return
            if code in (40001, 42001) and attempt == 0 and self.redis is not None:
                self.redis.delete(TOKEN_KEY)  # the cached token was revoked or expired early: once more
                continue
            raise WeChatError(f"{path}: {code} {data.get('errmsg')}")


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        raise WeChatError(f"HTTP {resp.status_code}, not JSON") from None
    if not isinstance(data, dict):
        raise WeChatError("the reply is not a JSON object")
    return data


def now_s() -> float:
    return time.time()
