"""Admin API additions behind the admin pages: editing a skill group and its members."""

from __future__ import annotations

import pytest

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


# --- every field that reaches a PBX is validated where it is entered ------------------------------

BAD_GATEWAYS = [
    {"dial_template": "PJSIP/{number}@trunk\r\nAction: Originate"},  # a second AMI action
    {"dial_template": "PJSIP/{number.__class__.__mro__}@trunk"},  # str.format reaches attributes
    {"dial_template": "{absolute_codec_string=PCMU}sofia/gateway/t/{number}"},  # ESL variables
    {"dial_template": "PJSIP/123@trunk"},  # no {number}: every customer gets one number
    {"dial_template": "PJSIP/{number}&PJSIP/999@trunk"},  # Asterisk dials both
    {"agent_template": "PJSIP/{extension},{number}"},
    {"agent_template": "user/{exten}"},
    {"host": "pbx.example.com\r\nAction: Logoff"},
    {"host": "pbx example"},
    {"username": "callcenter\r\nSecret: x"},
    {"name": "trunk one"},
    {"name": 'trunk"/><x'},
]


@pytest.mark.parametrize("bad", BAD_GATEWAYS)
def test_a_gateway_with_a_field_a_pbx_would_misread_is_refused(web: WebHarness, bad: dict[str, str]) -> None:
    web.user("root", ["admin"])
    good = {
        "name": "pbx-1",
        "kind": "asterisk",
        "host": "10.0.0.5",
        "port": 5038,
        "username": "callcenter",
        "dial_template": "PJSIP/{number}@trunk",
        "agent_template": "PJSIP/{extension}",
    }
    h = web.headers("root")
    resp = web.client.post("/api/admin/gateways", json={**good, **bad}, headers=h)
    assert resp.status_code == 422, resp.text
    assert web.client.post("/api/admin/gateways", json=good, headers=h).status_code == 201
    fs = {
        "name": "fs-1",
        "kind": "freeswitch",
        "host": "10.0.0.6",
        "port": 8021,
        "dial_template": "sofia/gateway/trunk/{number}",
        "agent_template": "user/{extension}",
    }
    assert web.client.post("/api/admin/gateways", json=fs, headers=h).status_code == 201


@pytest.mark.parametrize(
    "name", ["Sales\r\nAction: Originate", "Sales;rm", "Sales{x}", "<b>Sales</b>", "Sales\x00"]
)
def test_a_skill_group_name_with_pbx_metacharacters_is_refused(web: WebHarness, name: str) -> None:
    web.user("root", ["admin"])
    h = web.headers("root")
    assert web.client.post("/api/admin/skill-groups", json={"name": name}, headers=h).status_code == 422
    ok = web.client.post("/api/admin/skill-groups", json={"name": "销售 一组 (East)"}, headers=h)
    assert ok.status_code == 201
    renamed = web.client.patch(f"/api/admin/skill-groups/{ok.json()['id']}", json={"name": name}, headers=h)
    assert renamed.status_code == 422


@pytest.mark.parametrize(
    "change",
    [
        {"display_name": "Ann\r\nAction: Hangup"},
        {"display_name": 'Ann "the boss"'},  # a quote ends the caller name in the PBX's config
        {"display_name": "Ann <ann@x>"},
        {"display_name": "A" * 65},
    ],
)
def test_a_user_name_that_goes_into_the_pbx_config_is_checked(
    web: WebHarness, change: dict[str, str]
) -> None:
    web.user("root", ["admin"])
    uid = web.user("ann", ["agent"], extension="1001")
    h = web.headers("root")
    assert web.client.patch(f"/api/admin/users/{uid}", json=change, headers=h).status_code == 422
    created = web.client.post(
        "/api/admin/users", json={"username": "bob", "password": "password-123", **change}, headers=h
    )
    assert created.status_code == 422
    assert (
        web.client.post(
            "/api/admin/users", json={"username": "bob\r\n", "password": "password-123"}, headers=h
        ).status_code
        == 422
    )
    fine = web.client.patch(f"/api/admin/users/{uid}", json={"display_name": "王芳 (Ann)"}, headers=h)
    assert fine.status_code == 200


@pytest.mark.parametrize("extension", ["1001\r\n", "10 01", "1001&1002", "x" * 33])
def test_an_extension_is_digits_letters_or_underscore(web: WebHarness, extension: str) -> None:
    web.user("root", ["admin"])
    uid = web.user("ann", [])
    h = web.headers("root")
    bad = web.client.post("/api/admin/agents", json={"user_id": uid, "extension": extension}, headers=h)
    assert bad.status_code == 422
    agent = web.client.post("/api/admin/agents", json={"user_id": uid, "extension": "1001"}, headers=h).json()
    patched = web.client.patch(f"/api/admin/agents/{agent['id']}", json={"extension": extension}, headers=h)
    assert patched.status_code == 422


@pytest.mark.parametrize("sound", ["/etc/passwd", "//x", "sounds//abandon", "abandon/", "abandon\r\n"])
def test_a_task_sound_is_a_plain_name_under_the_sounds_folder(web: WebHarness, sound: str) -> None:
    from callcenter import accounts
    from callcenter.db import session_scope

    web.user("root", ["admin"])
    with session_scope(web.engine) as s:
        group = accounts.create_skill_group(s, name="Sales").id
    h = web.headers("root")

    def create(abandon_sound: str) -> int:
        resp = web.client.post(
            "/api/tasks",
            data={"name": "Renewals", "skill_group_id": str(group), "abandon_sound": abandon_sound},
            files={"file": ("list.csv", b"phone\n13800138000\n", "text/csv")},
            headers=h,
        )
        return int(resp.status_code)

    assert create(sound) == 422
    assert create("custom/abandon-2") == 201
