"""The CRM API: create, look up by any spelling of a phone, edit, notes, tags, a contact's calls."""

from __future__ import annotations

from tests.conftest import WebHarness
from tests.web import sim


def test_contact_lifecycle_over_the_api(web: WebHarness) -> None:
    web.user("ann", ["agent"], extension="1001")
    h = web.headers("ann")
    created = web.client.post(
        "/api/crm/contacts",
        json={"name": "Wang Fang", "company": "ACME", "phones": ["138 0013 8000"], "tags": ["vip"]},
        headers=h,
    )
    assert created.status_code == 201, created.text
    contact = created.json()
    assert contact["phones"] == ["+8613800138000"] and contact["owner_id"] is not None
    cid = contact["id"]

    found = web.client.get("/api/crm/lookup", params={"phone": "+86 138-0013-8000"}, headers=h).json()
    assert found["number"] == "+8613800138000" and found["contact"]["id"] == cid
    missing = web.client.get("/api/crm/lookup", params={"phone": "13900139000"}, headers=h).json()
    assert missing == {"number": "+8613900139000", "contact": None}
    assert web.client.get("/api/crm/lookup", params={"phone": "xx"}, headers=h).status_code == 422

    dup = web.client.post("/api/crm/contacts", json={"name": "B", "phones": ["13800138000"]}, headers=h)
    assert dup.status_code == 409 and dup.json()["field"] == "phones"

    edited = web.client.patch(
        f"/api/crm/contacts/{cid}",
        json={"email": "wf@example.com", "phones": ["13800138000", "13900139000"]},
        headers=h,
    )
    assert edited.status_code == 200 and edited.json()["phones"] == ["+8613800138000", "+8613900139000"]
    # "VIP" is the contact's existing "vip" tag: tags are shared and matched without regard to case.
    assert web.client.put(
        f"/api/crm/contacts/{cid}/tags", json={"tags": ["gold", "VIP"]}, headers=h
    ).json() == [
        "gold",
        "vip",
    ]
    note = web.client.post(f"/api/crm/contacts/{cid}/notes", json={"body": "call after 6pm"}, headers=h)
    assert note.status_code == 201 and note.json()["author"] == "ann"

    call_id = sim.connect(web.engine, web.redis, agent=sim.agent_id(web.engine, "1001"), number="13900139000")
    detail = web.client.get(f"/api/crm/contacts/{cid}", headers=h).json()
    assert detail["contact"]["email"] == "wf@example.com" and detail["contact"]["tags"] == ["gold", "vip"]
    assert [n["body"] for n in detail["notes"]] == ["call after 6pm"]
    assert [c["call_id"] for c in detail["calls"]] == [call_id]
    assert [c["call_id"] for c in web.client.get(f"/api/crm/contacts/{cid}/calls", headers=h).json()] == [
        call_id
    ]

    by_name = web.client.get("/api/crm/contacts", params={"q": "wang"}, headers=h).json()
    by_phone = web.client.get("/api/crm/contacts", params={"q": "139 0013 9000"}, headers=h).json()
    assert [c["id"] for c in by_name] == [cid] == [c["id"] for c in by_phone]
    assert web.client.get("/api/crm/contacts", params={"q": "nobody"}, headers=h).json() == []
    assert web.client.get("/api/crm/tags", headers=h).json() == ["gold", "vip"]
    assert web.client.get("/api/crm/contacts/999", headers=h).status_code == 404
