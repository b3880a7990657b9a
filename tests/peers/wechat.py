"""A WeChat Official Account API peer speaking the documented wire shapes: `GET /cgi-bin/token` (an
access token for the right AppID/AppSecret, else errcode 40013 / 40125), `POST /cgi-bin/message/
custom/send?access_token=` (errcode 40001 for a wrong token), `POST /cgi-bin/media/upload`, and a
picture host for `PicUrl`. Also signs and builds what WeChat pushes to a server URL: the signature
query (SHA-1 of the sorted token, timestamp and nonce) and the XML messages."""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from tests.peers.http import Request

_ids = itertools.count(5000)


@dataclass
class WeChatPeer:
    app_id: str
    app_secret: str
    pictures: dict[str, bytes] = field(default_factory=dict)  # path -> bytes
    tokens: list[str] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    uploads: list[bytes] = field(default_factory=list)

    def handle(self, req: Request) -> tuple[int, dict[str, str], bytes]:
        json_type = {"Content-Type": "application/json"}

        def answer(data: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
            return 200, json_type, json.dumps(data, ensure_ascii=False).encode()

        if req.path in self.pictures:
            return 200, {"Content-Type": "image/png"}, self.pictures[req.path]
        if req.path == "/cgi-bin/token":
            if req.query.get("appid") != self.app_id:
                return answer({"errcode": 40013, "errmsg": "invalid appid"})
            if req.query.get("secret") != self.app_secret:
                return answer({"errcode": 40125, "errmsg": "invalid appsecret"})
            token = f"ACCESS_TOKEN_{next(_ids)}"
            self.tokens.append(token)
            return answer({"access_token": token, "expires_in": 7200})
        if req.query.get("access_token") not in self.tokens:
            return answer(
                {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"}
            )
        if req.path == "/cgi-bin/message/custom/send":
            self.sent.append(json.loads(req.body))
            return answer({"errcode": 0, "errmsg": "ok"})
        if req.path == "/cgi-bin/media/upload":
            self.uploads.append(req.body)
            return answer(
                {"type": "image", "media_id": f"MEDIA_{next(_ids)}", "created_at": int(time.time())}
            )
        return 404, json_type, b"{}"


def signed_query(token: str, *, good: bool = True) -> dict[str, str]:
    timestamp, nonce = str(int(time.time())), str(next(_ids))
    signature = hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest()
    return {"signature": signature if good else "0" * 40, "timestamp": timestamp, "nonce": nonce}


def _xml(openid: str, kind: str, body: str) -> bytes:
    return (
        f"<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[{kind}]]></MsgType>{body}"
        f"<MsgId>{next(_ids)}</MsgId></xml>"
    ).encode()


def text_xml(openid: str, content: str) -> bytes:
    return _xml(openid, "text", f"<Content><![CDATA[{content}]]></Content>")


def menu_click_xml(openid: str, content: str, menu_id: str) -> bytes:
    return _xml(
        openid, "text", f"<Content><![CDATA[{content}]]></Content><bizmsgmenuid>{menu_id}</bizmsgmenuid>"
    )


def image_xml(openid: str, pic_url: str) -> bytes:
    return _xml(openid, "image", f"<PicUrl><![CDATA[{pic_url}]]></PicUrl><MediaId><![CDATA[m1]]></MediaId>")
