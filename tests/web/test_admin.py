"""Admin API additions behind the admin pages: editing a skill group and its members."""

from __future__ import annotations

from tests.conftest import WebHarness


def test_skill_group_is_renamed_and_its_members_replaced(web: WebHarness) -> None:
    web.user("root", ["admin"])
    web.user("ann", ["agent"], extension="1001")
    web.user("bob", ["agent"], extension="1002")
    h = web.headers("root")
    agents = {a["extension"]: a["id"] for a in web.client.get("/api/admin/agents", headers=h).json()}
    sales = web.client.post("/api/admin/skill-groups", json={"name": "Sales"}, headers=h).json()
    web.client.post("/api/admin/skill-groups", json={"name": "Support"}, headers=h)

    resp = web.client.patch(
        f"/api/admin/skill-groups/{sales['id']}",
        json={"name": "Sales East", "description": "华东销售", "agent_ids": [agents["1001"], agents["1002"]]},
        headers=h,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "id": sales["id"],
        "name": "Sales East",
        "description": "华东销售",
        "agent_ids": sorted(agents.values()),
    }
    only_bob = web.client.patch(
        f"/api/admin/skill-groups/{sales['id']}", json={"agent_ids": [agents["1002"]]}, headers=h
    ).json()
    assert only_bob["agent_ids"] == [agents["1002"]] and only_bob["name"] == "Sales East"
    ann = next(a for a in web.client.get("/api/admin/agents", headers=h).json() if a["extension"] == "1001")
    assert ann["skill_group_ids"] == []

    taken = web.client.patch(f"/api/admin/skill-groups/{sales['id']}", json={"name": "Support"}, headers=h)
    assert taken.status_code == 409 and taken.json()["field"] == "name"
    ghost = web.client.patch(f"/api/admin/skill-groups/{sales['id']}", json={"agent_ids": [999]}, headers=h)
    assert ghost.status_code == 404
    assert web.client.patch("/api/admin/skill-groups/999", json={}, headers=h).status_code == 404
