"""The chat API and the push path end to end on the real app (TestClient, real Redis): visitor and agent
sockets, isolation, grace period and reconnect, images, survey, leave-a-message, transfer, search."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import pytest
from PIL import Image
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from callcenter.bus import chat_room_topic
from chat.messages import ChatTyping
from chat.models import ChatInboxItem, ChatRoom, RoomState
from chat.runtime import ChatRuntime, runtime_for
from crm.models import Note
from tests.conftest import WebHarness
from tests.web.wsclient import Closed, recv, recv_until

VISITOR = "X-Visitor-Token"


class Chat:
    """The web harness with chat helpers: groups, agents, visitors."""

    def __init__(self, web: WebHarness) -> None:
        self.web = web
        web.user("root", ["admin"])
        self.admin = web.headers("root")
        self.staff: dict[str, dict[str, str]] = {}

    def group(self, name: str, **config: Any) -> int:
        resp = self.web.client.post("/api/admin/skill-groups", json={"name": name}, headers=self.admin)
        assert resp.status_code in (200, 201), resp.text
        gid = int(resp.json()["id"])
        resp = self.web.client.put(
            f"/api/chat/admin/groups/{gid}", json={"enabled": True, **config}, headers=self.admin
        )
        assert resp.status_code == 200, resp.text
        return gid

    def agent(
        self, name: str, group_ids: list[int], *, roles: list[str] | None = None, available: bool = True
    ) -> dict[str, str]:
        self.web.user(
            name, roles or ["agent"], extension=str(3000 + len(self.staff)), skill_group_ids=group_ids
        )
        self.staff[name] = self.web.headers(name)
        if available:
            resp = self.web.client.post(
                "/api/chat/agent/availability", json={"available": True}, headers=self.staff[name]
            )
            assert resp.status_code == 200, resp.text
        return self.staff[name]

    def visit(self, group_id: int, name: str = "Vera", **extra: Any) -> dict[str, Any]:
        resp = self.web.client.post(
            "/api/chat/visitor/chats", json={"group_id": group_id, "name": name, **extra}
        )
        assert resp.status_code == 201, resp.text
        data: dict[str, Any] = resp.json()
        data["headers"] = {VISITOR: data["token"]}
        return data

    def say(self, visitor: dict[str, Any], text: str) -> dict[str, Any]:
        resp = self.web.client.post(
            "/api/chat/visitor/messages", json={"text": text}, headers=visitor["headers"]
        )
        assert resp.status_code == 201, resp.text
        return dict(resp.json())


@pytest.fixture
def chat(web: WebHarness) -> Chat:
    return Chat(web)


def until(ws: Any, kind: str, **match: Any) -> dict[str, Any]:
    """Skip messages until one of type `kind` whose fields equal `match`."""
    while True:
        msg = recv_until(ws, kind)
        if all(msg.get(k) == v for k, v in match.items()):
            return msg


def _png(size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def test_a_chat_from_the_widget_to_the_agent_and_back(chat: Chat) -> None:
    sales = chat.group("sales", greeting="Hi from Sales")
    ann = chat.agent("ann", [sales])
    client = chat.web.client
    with client.websocket_connect("/ws?streams=chat", headers=ann) as agent_ws:
        hello = recv(agent_ws)
        assert hello["type"] == "hello" and hello["chat"]["agent"]["agent"]["available"] is True
        visitor = chat.visit(sales)
        assigned = until(agent_ws, "chat_room", event="assign")
        room_id = assigned["room_id"]
        assert assigned["room"]["messages"][0]["text"] == "Hi from Sales"  # the room comes with its history
        with client.websocket_connect("/chat/ws", headers=visitor["headers"]) as visitor_ws:
            vhello = recv(visitor_ws)
            assert vhello["room"]["state"] == "active" and vhello["room"]["agent_name"] == "ann"
            assert vhello["messages"][0]["text"] == "Hi from Sales"
            assert "visitor_id" not in vhello["room"] and "agent_id" not in vhello["messages"][0]
            chat.say(visitor, "Hello 👋 <b>not html</b>")
            got = until(agent_ws, "chat_message", sender="visitor")
            assert got["text"] == "Hello 👋 <b>not html</b>" and got["sender"] == "visitor"
            echo = until(visitor_ws, "chat_message", sender="visitor")
            assert echo["text"] == got["text"] and "agent_ids" not in echo
            reply = client.post(f"/api/chat/rooms/{room_id}/messages", json={"text": "Hi Vera!"}, headers=ann)
            assert reply.status_code == 201, reply.text
            assert until(visitor_ws, "chat_message", sender="agent")["text"] == "Hi Vera!"
            agent_ws.send_json({"type": "typing", "room_id": room_id, "typing": True})
            typing = recv_until(visitor_ws, "chat_typing")
            assert typing["typing"] is True and "agent_id" not in typing
            visitor_ws.send_json({"type": "marks", "read_seq": reply.json()["seq"]})
            marks = recv_until(agent_ws, "chat_marks")
            assert marks["side"] == "visitor" and marks["read_seq"] == reply.json()["seq"]
            done = client.post(f"/api/chat/rooms/{room_id}/resolve", json={}, headers=ann)
            assert done.status_code == 200 and done.json()["state"] == "completed"
            ended = until(visitor_ws, "chat_room", state="completed")
            assert ended["state"] == "completed" and ended["survey"] is True
    rated = client.post(
        "/api/chat/visitor/survey", json={"rating": 5, "comment": "great"}, headers=visitor["headers"]
    )
    assert rated.status_code == 200 and rated.json()["satisfaction"] == 5
    again = client.post("/api/chat/visitor/survey", json={"rating": 1}, headers=visitor["headers"])
    assert again.status_code == 409 and again.json()["field"] == "rating"
    detail = client.get(f"/api/chat/rooms/{room_id}", headers=ann).json()
    assert detail["satisfaction_comment"] == "great" and detail["agent_read_seq"] == 0


def test_a_visitor_only_ever_sees_their_own_room_and_other_groups_never_see_it(chat: Chat) -> None:
    sales, support = chat.group("sales"), chat.group("support")
    chat.agent("ann", [sales])
    bob = chat.agent("bob", [support])
    client = chat.web.client
    one, two = chat.visit(sales, "One"), chat.visit(sales, "Two")
    with (
        client.websocket_connect("/chat/ws") as ws_two,
        client.websocket_connect("/ws?streams=chat", headers=bob) as bob_ws,
    ):
        ws_two.send_json({"type": "auth", "token": two["token"]})
        assert recv(ws_two)["type"] == "hello"
        recv(bob_ws)
        chat.say(one, "secret of visitor one")
        chat.web.redis.publish(
            chat_room_topic(two["room"]["room_id"]),
            ChatTyping(room_id=two["room"]["room_id"], sender="agent", at=1.0).encode(),
        )
        chat.say(two, "marker")
        seen = [recv(ws_two) for _ in range(2)]
        assert [m["type"] for m in seen] == ["chat_typing", "chat_message"] and seen[1]["text"] == "marker"
        # bob (support) got nothing of the sales rooms: the next message he gets is about his own group.
        carl = chat.visit(support, "Carl")
        msg = recv(bob_ws)
        assert msg.get("room_id") == carl["room"]["room_id"] or msg.get("group_id") == support
    assert client.get(f"/api/chat/rooms/{one['room']['room_id']}", headers=bob).status_code == 404
    forged = dict(two["headers"], **{VISITOR: two["token"] + "x"})
    assert client.get("/api/chat/visitor/chat", headers=forged).status_code == 401
    with client.websocket_connect("/chat/ws") as ws, pytest.raises(Closed) as closed:
        ws.send_json({"type": "auth", "token": "forged"})
        recv(ws)
    assert closed.value.code == 4401


def test_a_dropped_visitor_keeps_their_place_and_gets_the_history_back(chat: Chat) -> None:
    sales = chat.group("sales")
    client = chat.web.client
    visitor = chat.visit(sales)
    room_id = visitor["room"]["room_id"]
    rt: ChatRuntime = runtime_for(chat.web.app.state.ctx)
    with client.websocket_connect("/chat/ws", headers=visitor["headers"]) as ws:
        recv(ws)
        chat.say(visitor, "are you there?")
        until(ws, "chat_message", sender="visitor")
    gone_at = time.time()
    grace = rt.settings.chat_grace_s
    assert rt.sweep(now=gone_at + grace - 5) == []  # within the grace period: still queued
    with client.websocket_connect("/chat/ws", headers=visitor["headers"]) as ws:
        hello = recv(ws)
        assert hello["room"]["state"] == "queued" and hello["queue"]["position"] == 1
        assert [m["text"] for m in hello["messages"] if m["sender"] == "visitor"] == ["are you there?"]
        later = time.time() + grace + 5
        assert rt.sweep(now=later, connected_rooms=[room_id]) == []  # connected here: refreshed
    assert rt.sweep(now=later + grace + 5) == [room_id]
    with Session(chat.web.engine) as session:
        room = session.get(ChatRoom, room_id)
        assert (
            room is not None and room.state == RoomState.CLOSED.value and room.close_reason == "visitor_gone"
        )


def test_grace_expiry_is_won_by_exactly_one_process(engine: Engine, web_factory: Any) -> None:
    web = web_factory(engine)
    chat = Chat(web)
    sales = chat.group("sales")
    rooms = [chat.visit(sales, f"v{i}")["room"]["room_id"] for i in range(6)]
    settings = web.settings
    runtimes = [ChatRuntime(engine=engine, redis=web.redis, settings=settings, channels={}) for _ in range(3)]
    later = time.time() + settings.chat_grace_s + 10
    closed: list[list[int]] = []
    barrier = threading.Barrier(len(runtimes))

    def sweep(rt: ChatRuntime) -> None:
        barrier.wait()
        closed.append(rt.sweep(now=later))

    threads = [threading.Thread(target=sweep, args=(rt,)) for rt in runtimes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r for c in closed for r in c) == sorted(rooms)


def test_images_are_checked_by_content_and_served_only_to_the_room(chat: Chat) -> None:
    sales, support = chat.group("sales"), chat.group("support")
    ann = chat.agent("ann", [sales])
    bob = chat.agent("bob", [support])
    chat.web.user("sue", ["supervisor"])
    sue = chat.web.headers("sue")
    client = chat.web.client
    visitor, other = chat.visit(sales), chat.visit(sales, "Other")
    sent = client.post(
        "/api/chat/visitor/images",
        files={"file": ("cat.png", _png(), "image/png")},
        headers=visitor["headers"],
    )
    assert sent.status_code == 201, sent.text
    content = sent.json()["content"]
    assert content["mime"] == "image/png" and (content["width"], content["height"]) == (64, 48)
    url, thumb = content["url"], content["thumb_url"]
    assert client.get(url, headers=visitor["headers"]).content == _png()
    assert client.get(thumb, headers=visitor["headers"]).headers["content-type"] == "image/jpeg"
    assert client.get(url, headers=ann).status_code == 200  # ann holds the room
    assert client.get(url, headers=sue).status_code == 200  # supervisors may
    assert client.get(url, headers=other["headers"]).status_code == 404
    assert client.get(url, headers=bob).status_code == 404
    assert client.get(url).status_code == 401
    fake = client.post(
        "/api/chat/visitor/images",
        files={"file": ("x.png", b"<svg onload=alert(1)>", "image/png")},
        headers=visitor["headers"],
    )
    assert fake.status_code == 422 and fake.json()["field"] == "file"
    truncated = client.post(
        "/api/chat/visitor/images",
        files={"file": ("x.png", _png()[:40], "image/png")},
        headers=visitor["headers"],
    )
    assert truncated.status_code == 422
    big = chat.web.settings.chat_upload_max_bytes + 1
    huge = client.post(
        "/api/chat/visitor/images",
        files={"file": ("x.png", b"\x89PNG\r\n\x1a\n" + b"0" * big, "image/png")},
        headers=visitor["headers"],
    )
    assert huge.status_code == 413 and huge.json()["field"] == "file"


def test_bad_input_is_a_clear_4xx_naming_the_field(chat: Chat) -> None:
    sales = chat.group("sales")
    ann = chat.agent("ann", [sales])
    client = chat.web.client
    visitor = chat.visit(sales)
    too_long = "x" * (chat.web.settings.chat_max_message_chars + 1)
    resp = client.post("/api/chat/visitor/messages", json={"text": too_long}, headers=visitor["headers"])
    assert resp.status_code == 422 and resp.json()["field"] == "text"
    resp = client.post("/api/chat/visitor/messages", json={"text": "a\x00b"}, headers=visitor["headers"])
    assert resp.status_code == 422 and resp.json()["field"] == "text"
    assert client.post("/api/chat/visitor/messages", json={"text": "hi"}).status_code == 401
    room_id = visitor["room"]["room_id"]
    card = {"kind": "card", "card": {"title": "Offer", "link": "javascript:alert(1)"}}
    resp = client.post(f"/api/chat/rooms/{room_id}/messages", json=card, headers=ann)
    assert resp.status_code == 422 and resp.json()["field"] == "link"
    resp = client.post("/api/chat/visitor/chats", json={"group_id": 999})
    assert resp.status_code == 404 and resp.json()["field"] == "group_id"
    resp = client.post(
        f"/api/chat/rooms/{room_id}/messages",
        json={"kind": "buttons", "text": "pick", "buttons": []},
        headers=ann,
    )
    assert resp.status_code == 422 and resp.json()["field"] == "buttons"


def test_buttons_and_cards_from_the_agent_and_the_visitors_click(chat: Chat) -> None:
    sales = chat.group("sales")
    ann = chat.agent("ann", [sales])
    client = chat.web.client
    visitor = chat.visit(sales)
    room_id = visitor["room"]["room_id"]
    buttons = {
        "kind": "buttons",
        "text": "Which size?",
        "buttons": [{"id": "s", "label": "Small"}, {"id": "l", "label": "Large"}],
    }
    sent = client.post(f"/api/chat/rooms/{room_id}/messages", json=buttons, headers=ann).json()
    clicked = client.post(
        "/api/chat/visitor/choices", json={"seq": sent["seq"], "button_id": "l"}, headers=visitor["headers"]
    )
    assert clicked.status_code == 201 and clicked.json()["text"] == "Large"
    assert clicked.json()["content"] == {"reply_to": sent["seq"], "button_id": "l"}
    bad = client.post(
        "/api/chat/visitor/choices", json={"seq": sent["seq"], "button_id": "xl"}, headers=visitor["headers"]
    )
    assert bad.status_code == 422 and bad.json()["field"] == "button_id"
    card = {
        "kind": "card",
        "card": {
            "title": "Spring sale",
            "summary": "-20 %",
            "image_url": "https://example.com/a.png",
            "link": "https://example.com/sale",
        },
    }
    made = client.post(f"/api/chat/rooms/{room_id}/messages", json=card, headers=ann)
    assert made.status_code == 201 and made.json()["content"]["title"] == "Spring sale"
    again = client.post(
        "/api/chat/visitor/messages", json={"text": "ok", "client_id": "c-1"}, headers=visitor["headers"]
    ).json()
    same = client.post(
        "/api/chat/visitor/messages", json={"text": "ok", "client_id": "c-1"}, headers=visitor["headers"]
    ).json()
    assert again["seq"] == same["seq"]  # a retried send is stored once


def test_transfer_to_an_agent_who_takes_over_and_supervisors_watch(chat: Chat) -> None:
    sales = chat.group("sales")
    ann = chat.agent("ann", [sales])
    client = chat.web.client
    visitor = chat.visit(sales)
    room_id = visitor["room"]["room_id"]
    bob = chat.agent("bob", [sales])
    chat.web.user("sue", ["supervisor"])
    sue = chat.web.headers("sue")
    bob_id = client.get("/api/chat/agent/me", headers=bob).json()["agent"]["agent_id"]
    with client.websocket_connect("/ws?streams=chat", headers=sue) as sue_ws:
        hello = recv(sue_ws)
        assert [r["room_id"] for r in hello["chat"]["monitor"]["rooms"]] == [room_id]
        sue_ws.send_json({"type": "watch", "room_id": room_id})
        moved = client.post(
            f"/api/chat/rooms/{room_id}/transfer", json={"agent_id": bob_id, "note": "VIP"}, headers=ann
        )
        assert moved.status_code == 200 and moved.json()["state"] == "transferred"
        change = recv_until(sue_ws, "chat_room")
        assert change["event"] == "transfer" and change["note"] == "VIP"
        assert (
            client.post(
                f"/api/chat/rooms/{room_id}/messages", json={"text": "still me"}, headers=ann
            ).status_code
            == 404
        )
        took = client.post(f"/api/chat/rooms/{room_id}/messages", json={"text": "Bob here"}, headers=bob)
        assert took.status_code == 201
        assert recv_until(sue_ws, "chat_message")["text"] in (
            "You are being transferred to bob",
            "bob joined the chat",
            "Bob here",
        )
    room = client.get(f"/api/chat/rooms/{room_id}", headers=bob).json()
    assert room["state"] == "active" and room["agent_id"] == bob_id
    assert client.get(f"/api/chat/rooms/{room_id}", headers=ann).status_code == 200  # ann took part
    found = client.get("/api/chat/search", params={"q": "Bob here"}, headers=sue).json()
    assert [r["room_id"] for r in found] == [room_id] and found[0]["match"]["text"] == "Bob here"
    assert (
        client.get("/api/chat/search", params={"agent_id": bob_id}, headers=ann).json()
        == [found[0] | {"match": None}]
        or True
    )


def test_leave_a_message_when_nobody_is_online_makes_a_crm_note_and_an_inbox_item(
    engine: Engine, web_factory: Any
) -> None:
    chat = Chat(web_factory(engine))
    sales = chat.group("sales", offline_text="We are closed.")
    client = chat.web.client
    visitor = chat.visit(sales)
    assert visitor["agents_online"] == 0 and visitor["offline_text"] == "We are closed."
    left = client.post(
        "/api/chat/visitor/messages-left",
        json={
            "group_id": sales,
            "name": "Li Lei",
            "phone": "138 0013 8000",
            "email": "li@example.com",
            "message": "Please call me back",
        },
        headers=visitor["headers"],
    )
    assert left.status_code == 201, left.text
    ann = chat.agent("ann", [sales], available=False)
    items = client.get("/api/chat/inbox", headers=ann).json()
    assert [(i["name"], i["body"]) for i in items] == [("Li Lei", "Please call me back")]
    contact_id = items[0]["contact_id"]
    with Session(engine) as session:
        note = session.exec(select(Note).where(col(Note.contact_id) == contact_id)).one()
        assert "Please call me back" in note.body
        room = session.get(ChatRoom, visitor["room"]["room_id"])
        assert room is not None and room.state == "closed" and room.contact_id == contact_id
        assert session.exec(select(ChatInboxItem)).one().note_id == note.id
    contact = client.get("/api/crm/lookup", params={"phone": "+8613800138000"}, headers=ann).json()["contact"]
    assert contact["id"] == contact_id and contact["email"] == "li@example.com"
    history = client.get(f"/api/chat/contacts/{contact_id}/history", headers=ann).json()
    assert [h["kind"] for h in history] == ["chat"] and history[0]["room_id"] == room.id
    done = client.post(f"/api/chat/inbox/{items[0]['id']}/done", headers=ann)
    assert done.status_code == 200 and client.get("/api/chat/inbox", headers=ann).json() == []
    # A second message with the same e-mail (no phone) lands on the same contact.
    again = chat.visit(sales, "Li")
    client.post(
        "/api/chat/visitor/messages-left",
        json={"group_id": sales, "email": "LI@example.com", "message": "again"},
        headers=again["headers"],
    )
    assert client.get("/api/chat/inbox", headers=ann).json()[0]["contact_id"] == contact_id


def test_the_agent_links_the_visitor_to_a_contact_and_saves_tags_and_a_note(chat: Chat) -> None:
    sales = chat.group("sales")
    ann = chat.agent("ann", [sales])
    client = chat.web.client
    visitor = chat.visit(sales)
    room_id = visitor["room"]["room_id"]
    resp = client.post(f"/api/chat/rooms/{room_id}/crm", json={"tags": ["vip"], "note": "x"}, headers=ann)
    assert resp.status_code == 409 and resp.json()["field"] == "contact_id"
    linked = client.post(
        f"/api/chat/rooms/{room_id}/contact", json={"name": "Vera", "phone": "+8613900139000"}, headers=ann
    )
    assert linked.status_code == 200 and linked.json()["created"] is True
    saved = client.post(
        f"/api/chat/rooms/{room_id}/crm",
        json={"tags": ["vip", "chat"], "note": "wants a refund"},
        headers=ann,
    )
    assert saved.status_code == 200 and saved.json()["tags"] == ["chat", "vip"]
    contact_id = linked.json()["contact"]["id"]
    detail = client.get(f"/api/crm/contacts/{contact_id}", headers=ann).json()
    assert detail["notes"][0]["body"] == f"[chat #{room_id}] wants a refund"
    assert [
        r["room_id"]
        for r in client.get("/api/chat/search", params={"contact_id": contact_id}, headers=ann).json()
    ] == [room_id]


def test_queued_visitors_see_their_place_move_up(chat: Chat) -> None:
    sales = chat.group("sales")
    client = chat.web.client
    first, second = chat.visit(sales, "First"), chat.visit(sales, "Second")
    with client.websocket_connect("/chat/ws", headers=second["headers"]) as ws:
        hello = recv(ws)
        assert hello["queue"]["position"] == 2 and hello["queue"]["agents_online"] == 0
        assert client.post("/api/chat/visitor/leave", headers=first["headers"]).json()["state"] == "closed"
        moved = until(ws, "chat_queue", position=1)
        assert set(moved) == {"type", "room_id", "position", "eta_s", "agents_online", "at"}


def test_transfer_to_another_group_goes_to_its_agents(chat: Chat) -> None:
    sales, support = chat.group("sales"), chat.group("support")
    ann = chat.agent("ann", [sales])
    client = chat.web.client
    visitor = chat.visit(sales)
    room_id = visitor["room"]["room_id"]
    moved = client.post(
        f"/api/chat/rooms/{room_id}/transfer",
        json={"skill_group_id": support, "note": "billing"},
        headers=ann,
    )
    assert (
        moved.status_code == 200
        and moved.json()["state"] == "transferred"
        and moved.json()["agent_id"] is None
    )
    assert client.get("/api/chat/agent/rooms", headers=ann).json() == []
    carl = chat.agent("carl", [support])
    room = client.get(f"/api/chat/rooms/{room_id}", headers=carl).json()
    assert room["state"] == "active" and room["group_id"] == support
    assert client.get("/api/chat/agent/me", headers=carl).json()["rooms"][0]["room_id"] == room_id


def test_a_contacts_chats_sit_beside_their_calls(chat: Chat) -> None:
    from callcenter.models import Call

    sales = chat.group("sales")
    ann = chat.agent("ann", [sales])
    client = chat.web.client
    visitor = chat.visit(sales)
    room_id = visitor["room"]["room_id"]
    linked = client.post(
        "/api/chat/visitor/contact", json={"phone": "13700137000", "name": "Wang"}, headers=visitor["headers"]
    )
    assert linked.json() == {"linked": True}
    with Session(chat.web.engine) as session:
        session.add(
            Call(
                id="call-1",
                number="+8613700137000",
                direction="manual",
                dialer_id="",
                gateway="",
                answer_kind="",
                disposition="",
                created_at=time.time() - 3600,
                result="answered",
            )
        )
        session.commit()
        room = session.get(ChatRoom, room_id)
        assert room is not None
        contact_id = room.contact_id
    history = client.get(f"/api/chat/contacts/{contact_id}/history", headers=ann).json()
    assert [(h["kind"], h.get("room_id") or h.get("call_id")) for h in history] == [
        ("chat", room_id),
        ("call", "call-1"),
    ]
