"""Who sees which contact: an agent sees what the visibility rule allows (their own, their skill
groups', or all: CALLCENTER_CRM_VISIBILITY) plus the contact of their current call; supervisors and
admins see all. A contact an agent may not see does not exist for them: not readable, editable,
strippable of its phones or findable; and `%` or `_` in a search is a character, not a wildcard."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.engine import Engine

from callcenter import accounts
from callcenter.db import session_scope
from tests.conftest import WebFactory, WebHarness
from tests.web import sim

WANG = {"name": "Wang Fang", "company": "ACME", "phones": ["13800138000"], "tags": ["vip"]}


def _team(web: Any) -> dict[str, dict[str, str]]:
    """ann and bob in Sales, cid in Support, sue a supervisor, root an admin; ann owns Wang Fang."""
    with session_scope(web.engine) as s:
        sales = accounts.create_skill_group(s, name="Sales").id
        support = accounts.create_skill_group(s, name="Support").id
    web.user("ann", ["agent"], extension="1001", skill_group_ids=[sales])
    web.user("bob", ["agent"], extension="1002", skill_group_ids=[sales])
    web.user("cid", ["agent"], extension="1003", skill_group_ids=[support])
    web.user("sue", ["supervisor"])
    web.user("root", ["admin"])
    return {name: web.headers(name) for name in ("ann", "bob", "cid", "sue", "root")}


def _can_see(web: Any, h: dict[str, str], cid: int) -> dict[str, Any]:
    """What one user gets from every route that names the contact or finds it."""

    def ids(**params: str) -> list[int]:
        return [c["id"] for c in web.client.get("/api/crm/contacts", params=params, headers=h).json()]

    return {
        "detail": web.client.get(f"/api/crm/contacts/{cid}", headers=h).status_code,
        "calls": web.client.get(f"/api/crm/contacts/{cid}/calls", headers=h).status_code,
        "search": ids(q="wang"),
        "dump": ids(q="%"),
        "all": ids(),
        "lookup": (web.client.get("/api/crm/lookup", params={"phone": "13800138000"}, headers=h).json())[
            "contact"
        ],
    }


def _changes(web: Any, h: dict[str, str], cid: int) -> list[int]:
    return [
        web.client.patch(f"/api/crm/contacts/{cid}", json={"phones": []}, headers=h).status_code,
        web.client.put(f"/api/crm/contacts/{cid}/tags", json={"tags": []}, headers=h).status_code,
        web.client.post(f"/api/crm/contacts/{cid}/notes", json={"body": "mine now"}, headers=h).status_code,
    ]


def test_an_agent_sees_only_their_own_contacts_by_default(web: WebHarness) -> None:
    h = _team(web)
    cid = web.client.post("/api/crm/contacts", json=WANG, headers=h["ann"]).json()["id"]
    hidden = {"detail": 404, "calls": 404, "search": [], "dump": [], "all": [], "lookup": None}
    assert _can_see(web, h["bob"], cid) == hidden
    assert _changes(web, h["bob"], cid) == [404, 404, 404]
    for user in ("ann", "sue", "root"):
        seen = _can_see(web, h[user], cid)
        assert (seen["detail"], seen["search"], seen["all"]) == (200, [cid], [cid]), user
        assert seen["lookup"]["id"] == cid, user
    # Bob's attempts changed nothing.
    contact = web.client.get(f"/api/crm/contacts/{cid}", headers=h["ann"]).json()
    assert contact["contact"]["phones"] == ["+8613800138000"] and contact["contact"]["tags"] == ["vip"]
    assert contact["notes"] == []


@pytest.mark.parametrize(
    ("rule", "bob", "cid"), [("skill_group", 200, 404), ("all", 200, 200), ("owner", 404, 404)]
)
def test_the_admin_chooses_the_rule(
    web_factory: WebFactory, sqlite_engine: Engine, rule: str, bob: int, cid: int
) -> None:
    web = web_factory(sqlite_engine, crm_visibility=rule)
    h = _team(web)
    contact = web.client.post("/api/crm/contacts", json=WANG, headers=h["ann"]).json()["id"]
    assert web.client.get(f"/api/crm/contacts/{contact}", headers=h["bob"]).status_code == bob
    assert web.client.get(f"/api/crm/contacts/{contact}", headers=h["cid"]).status_code == cid


def test_an_agent_sees_the_contact_of_their_current_call(web: WebHarness) -> None:
    h = _team(web)
    contact = web.client.post("/api/crm/contacts", json=WANG, headers=h["ann"]).json()["id"]
    bob = sim.agent_id(web.engine, "1002")
    call = sim.connect(web.engine, web.redis, agent=bob, number="13800138000")
    assert web.client.get(f"/api/crm/contacts/{contact}", headers=h["bob"]).status_code == 200
    note = web.client.post(
        f"/api/crm/contacts/{contact}/notes", json={"body": "asked for a quote"}, headers=h["bob"]
    )
    assert note.status_code == 201
    sim.hang_up(web.engine, web.redis, agent=bob, call_id=call)  # wrap-up: still the call of the moment
    assert web.client.get(f"/api/crm/contacts/{contact}", headers=h["bob"]).status_code == 200
    sim.set_ready(web.engine, web.redis, bob)  # the next customer: this one is no longer theirs
    assert web.client.get(f"/api/crm/contacts/{contact}", headers=h["bob"]).status_code == 404


def test_wildcards_in_a_search_are_literal(web: WebHarness) -> None:
    h = _team(web)
    for name in ("100% Tea", "Plain Co", "Under_score Ltd", "Underscore Ltd"):
        web.client.post("/api/crm/contacts", json={"name": name}, headers=h["root"])

    def names(q: str) -> list[str]:
        found = web.client.get("/api/crm/contacts", params={"q": q}, headers=h["root"]).json()
        return sorted(c["name"] for c in found)

    assert names("%") == ["100% Tea"]
    assert names("_") == ["Under_score Ltd"]
    assert names("r_c") == []  # as a wildcard it would find "Underscore Ltd"
    assert names("\\") == []


def test_an_agent_sees_the_contact_of_a_chat_they_hold(web: WebHarness) -> None:
    """The chat side of "the contact of their current call" (webui.contacts)."""
    from sqlmodel import Session

    from chat.models import ChatRoom, ChatVisitor

    h = _team(web)
    contact = web.client.post("/api/crm/contacts", json=WANG, headers=h["ann"]).json()["id"]
    bob = sim.agent_id(web.engine, "1002")
    with Session(web.engine) as s:
        visitor = ChatVisitor(external_id="web-1", nonce="n")
        s.add(visitor)
        s.flush()
        assert visitor.id is not None
        room = ChatRoom(
            visitor_id=visitor.id, skill_group_id=1, state="active", agent_id=bob, contact_id=contact
        )
        s.add(room)
        s.commit()
        room_id = room.id
    assert web.client.get(f"/api/crm/contacts/{contact}", headers=h["bob"]).status_code == 200
    assert web.client.get(f"/api/crm/contacts/{contact}", headers=h["cid"]).status_code == 404
    with Session(web.engine) as s:
        held = s.get(ChatRoom, room_id)
        assert held is not None
        held.state = "completed"
        s.add(held)
        s.commit()
    assert web.client.get(f"/api/crm/contacts/{contact}", headers=h["bob"]).status_code == 404
