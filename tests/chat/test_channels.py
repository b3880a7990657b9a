"""Telegram and WeChat adapters against local peers speaking their wire shapes: inbound messages become
rooms, agents' and the bot's replies go back (text, buttons, cards, images), clicks come back as
choices, and a bad secret or signature is refused with 403."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from PIL import Image
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from chat.models import ChatRoom, ChatVisitor
from tests.chat.test_api import Chat
from tests.peers import telegram, wechat
from tests.peers.http import serve

BOT_TOKEN = "123456:ABC-test-token"
TG_SECRET = "tg-secret-abc"
WX_TOKEN = "wx-token-xyz"


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


def _room_of(engine: Engine, channel: str, external_id: str) -> ChatRoom:
    with Session(engine) as session:
        visitor = session.exec(
            select(ChatVisitor).where(
                col(ChatVisitor.channel) == channel, col(ChatVisitor.external_id) == external_id
            )
        ).one()
        room = session.exec(select(ChatRoom).where(col(ChatRoom.visitor_id) == visitor.id)).one()
        return room


@pytest.fixture
def tg(web_factory: Any, sqlite_engine: Engine) -> Any:
    peer = telegram.TelegramPeer(token=BOT_TOKEN, files={"photo-1": _png()})
    with serve(peer.handle) as http:
        web = web_factory(
            sqlite_engine,
            chat_telegram_bot_token=BOT_TOKEN,
            chat_telegram_secret_token=TG_SECRET,
            chat_telegram_api_base=http.url,
        )
        yield Chat(web), peer


def _post_update(chat: Chat, update: dict[str, Any], secret: str = TG_SECRET) -> Any:
    return chat.web.client.post(
        "/api/chat/channels/telegram/webhook",
        json=update,
        headers={"X-Telegram-Bot-Api-Secret-Token": secret},
    )


def test_telegram_messages_become_a_room_and_replies_go_back(tg: Any) -> None:
    chat, peer = tg
    sales = chat.group("sales", greeting="Hello from Sales")
    ann = chat.agent("ann", [sales])
    assert _post_update(chat, telegram.text_update(777, "Hi, my order?", first_name="Ivan")).json() == {
        "ok": True
    }
    room = _room_of(chat.web.engine, "telegram", "777")
    assert room.skill_group_id == sales and room.channel == "telegram" and room.agent_id is not None
    texts = [m["text"] for m in peer.sent("sendMessage")]
    assert texts[0] == "Hello from Sales" and "ann joined the chat" in texts
    assert all(m["chat_id"] == "777" for m in peer.sent("sendMessage"))
    client = chat.web.client
    buttons = {
        "kind": "buttons",
        "text": "Which?",
        "buttons": [{"id": "a", "label": "Order A"}, {"id": "b", "label": "Order B"}],
    }
    sent = client.post(f"/api/chat/rooms/{room.id}/messages", json=buttons, headers=ann).json()
    keyboard = peer.sent("sendMessage")[-1]["reply_markup"]["inline_keyboard"]
    assert keyboard == [
        [{"text": "Order A", "callback_data": f"{sent['seq']}:a"}],
        [{"text": "Order B", "callback_data": f"{sent['seq']}:b"}],
    ]
    _post_update(chat, telegram.callback_update(777, f"{sent['seq']}:b"))
    last = client.get(
        f"/api/chat/rooms/{room.id}/messages", params={"after_seq": sent["seq"]}, headers=ann
    ).json()
    assert [(m["kind"], m["text"]) for m in last] == [("choice", "Order B")]
    assert len(peer.sent("answerCallbackQuery")) == 1
    card = {
        "kind": "card",
        "card": {"title": "Order B", "summary": "Shipped", "link": "https://example.com/b"},
    }
    client.post(f"/api/chat/rooms/{room.id}/messages", json=card, headers=ann)
    assert (
        peer.sent("sendMessage")[-1]["reply_markup"]["inline_keyboard"][0][0]["url"]
        == "https://example.com/b"
    )
    client.post(
        f"/api/chat/rooms/{room.id}/images", files={"file": ("p.png", _png(), "image/png")}, headers=ann
    )
    photo = [raw for m, _, raw in peer.calls if m == "sendPhoto"]
    assert len(photo) == 1 and _png() in photo[0] and b'name="chat_id"' in photo[0]


def test_telegram_photo_is_fetched_and_stored_as_an_image(tg: Any) -> None:
    chat, peer = tg
    chat.group("sales")
    _post_update(chat, telegram.photo_update(888, "photo-1", size=len(_png())))
    room = _room_of(chat.web.engine, "telegram", "888")
    assert peer.sent("getFile")[-1] == {"file_id": "photo-1"}
    with Session(chat.web.engine) as session:
        from chat import views

        images = [m for m in views.history(session, room_id=room.id or 0) if m["kind"] == "image"]
    assert images and images[0]["content"]["width"] == 64


@pytest.mark.parametrize("secret", ["wrong", ""])
def test_telegram_webhook_with_a_bad_secret_is_refused_and_logged(
    tg: Any, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    chat, peer = tg
    chat.group("sales")
    resp = _post_update(chat, telegram.text_update(999, "hi"), secret=secret)
    assert resp.status_code == 403
    assert "bad secret token" in caplog.text
    with Session(chat.web.engine) as session:
        assert session.exec(select(ChatVisitor)).all() == []
    assert peer.calls == []


@pytest.fixture
def wx(web_factory: Any, sqlite_engine: Engine) -> Any:
    peer = wechat.WeChatPeer(app_id="wx123", app_secret="sekrit", pictures={"/pic/1.png": _png()})
    with serve(peer.handle) as http:
        web = web_factory(
            sqlite_engine,
            chat_wechat_token=WX_TOKEN,
            chat_wechat_app_id="wx123",
            chat_wechat_app_secret="sekrit",
            chat_wechat_api_base=http.url,
        )
        yield Chat(web), peer, http.url


def _push(chat: Chat, body: bytes, *, good: bool = True) -> Any:
    return chat.web.client.post(
        "/api/chat/channels/wechat",
        params=wechat.signed_query(WX_TOKEN, good=good),
        content=body,
        headers={"Content-Type": "text/xml"},
    )


def test_wechat_url_check_and_bad_signatures(wx: Any, caplog: pytest.LogCaptureFixture) -> None:
    chat, peer, _ = wx
    chat.group("sales")
    ok = chat.web.client.get(
        "/api/chat/channels/wechat", params={**wechat.signed_query(WX_TOKEN), "echostr": "abc123"}
    )
    assert ok.status_code == 200 and ok.text == "abc123"
    bad = chat.web.client.get(
        "/api/chat/channels/wechat", params={**wechat.signed_query(WX_TOKEN, good=False), "echostr": "x"}
    )
    assert bad.status_code == 403
    assert _push(chat, wechat.text_xml("openid-1", "hi"), good=False).status_code == 403
    assert "bad signature" in caplog.text
    evil = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><xml><FromUserName>&a;</FromUserName></xml>'
    )
    assert _push(chat, evil).status_code == 400
    assert peer.sent == []


def test_wechat_passive_reply_then_customer_service_messages(wx: Any) -> None:
    chat, peer, base = wx
    sales = chat.group("sales", greeting="Welcome!", unmatched_text="Queued for a human.")
    resp = _push(chat, wechat.text_xml("openid-1", "where is my parcel?"))
    assert resp.status_code == 200
    reply = resp.text
    assert "<MsgType>text</MsgType>" in reply and "<Content>Queued for a human.</Content>" in reply
    assert "<ToUserName>openid-1</ToUserName>" in reply
    assert [m["text"]["content"] for m in peer.sent if m["msgtype"] == "text"] == ["Welcome!"]
    ann = chat.agent("ann", [sales])
    room = _room_of(chat.web.engine, "wechat", "openid-1")
    client = chat.web.client
    client.post(f"/api/chat/rooms/{room.id}/messages", json={"text": "Let me check."}, headers=ann)
    assert peer.sent[-1] == {"touser": "openid-1", "msgtype": "text", "text": {"content": "Let me check."}}
    assert len(peer.tokens) == 1  # one access token, cached in Redis
    buttons = {
        "kind": "buttons",
        "text": "Pick one",
        "buttons": [{"id": "y", "label": "Yes"}, {"id": "n", "label": "No"}],
    }
    sent = client.post(f"/api/chat/rooms/{room.id}/messages", json=buttons, headers=ann).json()
    menu = peer.sent[-1]["msgmenu"]
    assert menu["head_content"] == "Pick one" and menu["list"][0] == {
        "id": f"{sent['seq']}:y",
        "content": "Yes",
    }
    _push(chat, wechat.menu_click_xml("openid-1", "Yes", f"{sent['seq']}:y"))
    last = client.get(
        f"/api/chat/rooms/{room.id}/messages", params={"after_seq": sent["seq"]}, headers=ann
    ).json()
    assert [(m["kind"], m["text"]) for m in last] == [("choice", "Yes")]
    card = {
        "kind": "card",
        "card": {"title": "Parcel", "summary": "On its way", "link": "https://example.com/p"},
    }
    client.post(f"/api/chat/rooms/{room.id}/messages", json=card, headers=ann)
    assert peer.sent[-1]["news"]["articles"][0]["title"] == "Parcel"
    client.post(
        f"/api/chat/rooms/{room.id}/images", files={"file": ("p.png", _png(), "image/png")}, headers=ann
    )
    assert peer.sent[-1]["msgtype"] == "image" and re.match(r"MEDIA_\d+", peer.sent[-1]["image"]["media_id"])
    _push(chat, wechat.image_xml("openid-1", f"{base}/pic/1.png"))
    with Session(chat.web.engine) as session:
        from chat import views

        kinds = [m["kind"] for m in views.history(session, room_id=room.id or 0) if m["sender"] == "visitor"]
    assert kinds == ["text", "choice", "image"]


def test_wechat_token_revoked_is_fetched_again_once(wx: Any) -> None:
    chat, peer, _ = wx
    sales = chat.group("sales")
    _push(chat, wechat.text_xml("openid-2", "hello"))
    peer.tokens.clear()  # WeChat revoked the cached token
    ann = chat.agent("ann", [sales])
    room = _room_of(chat.web.engine, "wechat", "openid-2")
    chat.web.client.post(f"/api/chat/rooms/{room.id}/messages", json={"text": "Still here"}, headers=ann)
    assert peer.sent[-1]["text"]["content"] == "Still here" and len(peer.tokens) == 1


def test_telegram_updates_we_cannot_take_are_acknowledged_not_retried(
    tg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    chat, peer = tg
    chat.group("sales")
    peer.files.pop("photo-1")
    too_long = _post_update(chat, telegram.text_update(555, "x" * 5000))
    assert too_long.status_code == 200 and "refused" in caplog.text
    lost = _post_update(chat, telegram.photo_update(556, "photo-1", size=10))
    assert lost.status_code == 200 and "dropped" in caplog.text
    with Session(chat.web.engine) as session:
        assert session.exec(select(ChatRoom)).all() == []
