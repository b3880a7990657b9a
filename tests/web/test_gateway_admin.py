"""Gateways on the admin API: every field that reaches a PBX checked (4xx naming the field), secrets
only from CALLCENTER_GATEWAY_SECRET_* variables and never shown back, disable, the live status the
dialer published, and a connection test that says what happened."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from callcenter.config import Settings
from callcenter.gateway_admin import probe
from callcenter.messages import GatewayState, GatewayStatus, gateway_status_key
from callcenter.models import GatewayRow
from tests.conftest import WebHarness, make_settings
from tests.peers.ami import AmiPeer
from tests.peers.esl import DEFAULT_PASSWORD, EslPeer

AMI = {
    "name": "pbx-east",
    "kind": "asterisk",
    "host": "10.0.0.5",
    "port": 5038,
    "username": "dialer",
    "secret_env": "CALLCENTER_GATEWAY_SECRET_EAST",
    "dial_template": "PJSIP/{number}@carrier",
    "agent_template": "PJSIP/{extension}",
    "originates_per_s": 8,
}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"host": "10.0.0.5\r\nAction: Originate"}, "host"),
        ({"host": "pbx east"}, "host"),
        ({"host": ""}, "host"),
        ({"port": 70000}, "port"),
        ({"username": "dialer\nsecret = x"}, "username"),
        ({"dial_template": "PJSIP/trunk"}, "dial_template"),
        ({"dial_template": "PJSIP/{number}@trunk,60,tT"}, "dial_template"),
        ({"agent_template": "PJSIP/{extension}&PJSIP/{extension}"}, "agent_template"),
        ({"secret_env": "CALLCENTER_SECRET_KEY"}, "secret_env"),
        ({"secret_env": "CALLCENTER_DATABASE_URL"}, "secret_env"),
        ({"secret_env": "HOME"}, "secret_env"),
        ({"originates_per_s": 0}, "originates_per_s"),
        ({"kind": "freeswitch", "dial_template": "", "agent_template": ""}, "username"),
    ],
)
def test_every_field_that_reaches_a_pbx_is_checked_and_named(
    web: WebHarness, change: dict[str, object], field: str
) -> None:
    web.user("root", ["admin"])
    h = web.headers("root")
    resp = web.client.post("/api/admin/gateways", json={**AMI, **change}, headers=h)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    named = body.get("field") or ".".join(str(p) for p in body["detail"][0]["loc"][1:])
    assert named == field, body
    assert web.client.get("/api/admin/gateways", headers=h).json() == []


def test_gateway_is_created_edited_and_disabled_and_its_secret_never_shown(web, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    web.user("root", ["admin"])
    h = web.headers("root")
    created = web.client.post("/api/admin/gateways", json=AMI, headers=h)
    assert created.status_code == 201, created.text
    gw = created.json()
    assert gw["secret_set"] is False and gw["key"] == f"gw{gw['id']}" and gw["enabled"] is True
    monkeypatch.setenv("CALLCENTER_GATEWAY_SECRET_EAST", "east-ami-secret")
    listed = web.client.get("/api/admin/gateways", headers=h)
    assert listed.json()[0]["secret_set"] is True
    assert "east-ami-secret" not in listed.text
    dup = web.client.post("/api/admin/gateways", json=AMI, headers=h)
    assert dup.status_code == 409 and dup.json()["field"] == "name"

    url = f"/api/admin/gateways/{gw['id']}"
    edited = web.client.patch(url, json={"host": "pbx-east.example", "originates_per_s": 5}, headers=h)
    assert edited.status_code == 200, edited.text
    assert (edited.json()["host"], edited.json()["originates_per_s"]) == ("pbx-east.example", 5)
    bad = web.client.patch(url, json={"secret_env": "CALLCENTER_SECRET_KEY"}, headers=h)
    assert bad.status_code == 422 and bad.json()["field"] == "secret_env"
    assert web.client.patch(url, json={"kind": "freeswitch"}, headers=h).status_code == 422  # kind stays
    disabled = web.client.patch(url, json={"enabled": False}, headers=h)
    assert disabled.json()["enabled"] is False
    assert web.client.patch("/api/admin/gateways/999", json={}, headers=h).status_code == 404

    status = GatewayStatus(
        gateway=gw["key"], name="pbx-east", state=GatewayState.DOWN, detail="refused", at=1.0
    )
    web.redis.set(gateway_status_key(gw["key"]), status.encode())
    try:
        shown = web.client.get("/api/admin/gateways", headers=h).json()[0]["status"]
        assert (shown["state"], shown["detail"]) == ("down", "refused")
        page = web.client.get("/admin/gateways", headers=h)
        assert (
            page.status_code == 200 and "pbx-east.example" in page.text and "east-ami-secret" not in page.text
        )
    finally:
        web.redis.delete(gateway_status_key(gw["key"]))


def test_connection_test_says_what_happened(web) -> None:  # type: ignore[no-untyped-def]
    web.user("root", ["admin"])
    h = web.headers("root")
    gw = web.client.post(
        "/api/admin/gateways", json={**AMI, "host": "127.0.0.1", "port": _closed_port()}, headers=h
    )
    resp = web.client.post(f"/api/admin/gateways/{gw.json()['id']}/test", headers=h)
    assert resp.status_code == 200
    assert resp.json()["ok"] is False and "cannot reach 127.0.0.1:" in resp.json()["detail"]
    assert web.client.post("/api/admin/gateways/999/test", headers=h).status_code == 404


def _row(**kw: object) -> GatewayRow:
    return GatewayRow(**{**AMI, **kw})  # type: ignore[arg-type]


def _settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


async def test_probe_logs_in_to_ami_and_reports_a_refused_login(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    async with AmiPeer({}, username="dialer", secret="right-secret") as peer:
        row = _row(host=peer.host, port=peer.port)
        monkeypatch.setenv("CALLCENTER_GATEWAY_SECRET_EAST", "right-secret")
        ok = await probe(row, _settings(tmp_path), timeout_s=2)
        assert ok.ok and "logged in" in ok.detail and "Asterisk Call Manager/" in ok.detail
        monkeypatch.setenv("CALLCENTER_GATEWAY_SECRET_EAST", "wrong-secret")
        refused = await probe(row, _settings(tmp_path), timeout_s=2)
        assert not refused.ok and "refused the login as 'dialer'" in refused.detail
        assert not any(a[0][1] == "Originate" for _, a in peer.actions)  # a login, nothing else


async def test_an_admin_cannot_get_the_signing_key_into_a_gateway_login(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The attack: a gateway whose secret_env names CALLCENTER_SECRET_KEY and whose host is a listener
    the admin runs. The API refuses the row; a row written behind its back is refused by the accessor
    that the connection test, the dialer and both renderers use, and the listener never hears the key."""
    from callcenter.engine.runner import settings_for_row
    from callcenter.errors import Invalid

    key = "the-application-signing-key"
    monkeypatch.setenv("CALLCENTER_SECRET_KEY", key)
    async with AmiPeer({}, username="dialer", secret=key) as peer:
        row = _row(host=peer.host, port=peer.port, secret_env="CALLCENTER_SECRET_KEY")
        result = await probe(row, _settings(tmp_path), timeout_s=2)
        assert not result.ok and "CALLCENTER_GATEWAY_SECRET_" in result.detail
        assert key.encode() not in peer.received
    with pytest.raises(Invalid, match="CALLCENTER_GATEWAY_SECRET_"):
        settings_for_row(_settings(tmp_path), row)
    # a row that names no variable logs in with no secret, never the default gateway's
    monkeypatch.setenv("CALLCENTER_AMI_SECRET", "default-pbx-secret")
    plain = settings_for_row(make_settings(tmp_path, ami_secret="default-pbx-secret"), _row(secret_env=""))
    assert plain.ami_secret.get_secret_value() == ""


async def test_probe_authenticates_to_the_event_socket(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    async with EslPeer() as peer:
        row = _row(
            kind="freeswitch",
            host="127.0.0.1",
            port=peer.port,
            username="",
            secret_env="CALLCENTER_GATEWAY_SECRET_FS",
        )
        monkeypatch.setenv("CALLCENTER_GATEWAY_SECRET_FS", DEFAULT_PASSWORD)
        ok = await probe(row, _settings(tmp_path), timeout_s=2)
        assert ok.ok, ok.detail
        monkeypatch.setenv("CALLCENTER_GATEWAY_SECRET_FS", "not-the-password")
        refused = await probe(row, _settings(tmp_path), timeout_s=2)
        assert not refused.ok and "refused the event socket password" in refused.detail
