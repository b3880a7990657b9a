"""The tasks REST API: create with a list (imported by a real rq worker on real Redis), lifecycle,
bad input with the field named, import progress and report, DNC."""

from __future__ import annotations

import io
from dataclasses import dataclass

import httpx
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue, SimpleWorker

from callcenter import accounts
from callcenter.db import session_scope
from tests.conftest import WebHarness

CSV = "name,phone,plan\nAnn,13812345678,gold\nBob,13912345678,silver\nBad,123,x\nDup,13812345678,y\n"


@dataclass
class TaskApi:
    """The app with an admin and a supervisor (`admin`, `sup`: their headers), a skill group with one
    agent and an empty one."""

    web: WebHarness
    client: TestClient
    admin: dict[str, str]
    sup: dict[str, str]
    group_id: int
    empty_group_id: int


@pytest.fixture
def api(web: WebHarness, monkeypatch: pytest.MonkeyPatch) -> TaskApi:
    """An admin, a supervisor, a skill group with one agent; the worker sees the test database."""
    monkeypatch.setenv("CALLCENTER_DATABASE_URL", web.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("CALLCENTER_MODE", "dev")
    monkeypatch.setenv("CALLCENTER_DEFAULT_REGION", "CN")
    web.user("admin", ["admin"])
    web.user("sup", ["supervisor"])
    with session_scope(web.engine) as s:
        group_id = accounts.create_skill_group(s, name="Sales").id
        empty_group_id = accounts.create_skill_group(s, name="Nobody").id
    assert group_id is not None and empty_group_id is not None
    web.user("ann", ["agent"], extension="1001", skill_group_ids=[group_id])
    return TaskApi(web, web.client, web.headers("admin"), web.headers("sup"), group_id, empty_group_id)


def run_worker(api: TaskApi) -> None:
    conn = Redis.from_url(api.web.settings.redis_url)
    SimpleWorker([Queue("callcenter", connection=conn)], connection=conn).work(burst=True)


def create(
    api: TaskApi, csv: str | bytes = CSV, filename: str = "list.csv", **form: object
) -> httpx.Response:
    data = {"name": "Renewals", "skill_group_id": str(api.group_id), **{k: str(v) for k, v in form.items()}}
    body = csv.encode() if isinstance(csv, str) else csv
    return api.client.post(
        "/api/tasks", data=data, files={"file": (filename, io.BytesIO(body), "text/csv")}, headers=api.admin
    )


def test_create_import_start_pause_stop_delete(api: TaskApi) -> None:
    resp = create(api, dispositions="interested\nnot interested")
    assert resp.status_code == 201, resp.text
    task = resp.json()
    assert task["state"] == "initializing" and task["actions"] == []
    assert task["dispositions"] == ["interested", "not interested"]
    run_worker(api)
    task = api.client.get(f"/api/tasks/{task['id']}", headers=api.admin).json()
    assert task["state"] == "stopped" and task["actions"] == ["delete", "edit", "start"]
    progress = task["import_progress"]
    assert (progress["total"], progress["imported"], progress["rejected"], progress["percent"]) == (
        4,
        2,
        2,
        100.0,
    )
    assert progress["rows_per_s"] > 0
    report = api.client.get(f"/api/tasks/{task['id']}/import-report.csv", headers=api.admin)
    assert report.status_code == 200 and "attachment" in report.headers["content-disposition"]
    lines = report.content.decode("utf-8-sig").strip().splitlines()
    assert lines[0] == "row,number,reason,detail" and lines[1].startswith("4,123,invalid")
    assert lines[2].startswith("5,13812345678,duplicate")
    tid = task["id"]
    assert api.client.post(f"/api/tasks/{tid}/start", headers=api.sup).json()["state"] == "running"
    again = api.client.post(f"/api/tasks/{tid}/start", headers=api.sup)
    assert again.status_code == 409 and "running" in again.json()["detail"]
    assert (
        api.client.patch(f"/api/tasks/{tid}", json={"max_concurrency": 3}, headers=api.admin).status_code
        == 409
    )
    assert api.client.post(f"/api/tasks/{tid}/pause", headers=api.sup).json()["state"] == "paused"
    edited = api.client.patch(
        f"/api/tasks/{tid}", json={"max_concurrency": 3, "agent_ratio": 1.5}, headers=api.admin
    )
    assert edited.status_code == 200 and edited.json()["max_concurrency"] == 3
    assert api.client.post(f"/api/tasks/{tid}/resume", headers=api.sup).json()["state"] == "running"
    deleted = api.client.delete(f"/api/tasks/{tid}", headers=api.admin)
    assert deleted.json()["state"] == "deleted"
    assert [t["id"] for t in api.client.get("/api/tasks?deleted=true", headers=api.admin).json()] == [tid]
    assert api.client.get("/api/tasks", headers=api.admin).json() == []
    audit = api.client.get(f"/api/tasks/{tid}/audit", headers=api.admin).json()
    assert [(a["actor"], a["old"], a["new"]) for a in audit][-2:] == [
        ("admin", "running", "stopped"),
        ("admin", "stopped", "deleted"),
    ]
    snap = api.client.get(f"/api/tasks/{tid}/snapshot", headers=api.sup).json()
    assert snap["source"] == "database" and snap["leads_left"] == 2


def test_snapshot_has_the_counters_the_monitor_needs(api: TaskApi) -> None:
    tid = create(api).json()["id"]
    run_worker(api)
    snap = api.client.get(f"/api/tasks/{tid}/snapshot", headers=api.sup).json()
    for key in (
        "dialled",
        "ringing",
        "answered",
        "connected",
        "abandoned",
        "abandon_pct",
        "failed_by_cause",
        "leads_left",
        "lines_per_agent",
        "agents",
        "state",
    ):
        assert key in snap


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"max_concurrency": "0"}, "max_concurrency"),
        ({"agent_ratio": "0"}, "agent_ratio"),
        ({"agent_ratio": "-1"}, "agent_ratio"),
        ({"ring_timeout_s": "10"}, "ring_timeout_s"),
        ({"pacing_mode": "turbo"}, "pacing_mode"),
        ({"retry_delays": '{"answered": 5}'}, "retry_delays"),
        ({"caller_id": "12\r\n34"}, "caller_id"),
        ({"window_days": "8"}, "window_days"),
    ],
)
def test_bad_fields_are_422_naming_the_field(api: TaskApi, form: dict[str, str], field: str) -> None:
    resp = create(api, **form)
    assert resp.status_code == 422, resp.text
    assert field in resp.text


@pytest.mark.parametrize(
    ("content", "filename", "words"),
    [
        (b"", "l.csv", "empty"),
        (b"name,city\nann,x\n", "l.csv", "no phone column"),
        (b"\x00\x01binary\x02" * 40, "l.csv", "binary"),
        (b"phone\n", "l.csv", "no rows"),
        (b"PK\x03\x04garbage", "l.xlsx", "workbook"),
        (b"x", "l.xls", ".xls"),
    ],
)
def test_bad_lists_are_422_and_no_task_is_created(
    api: TaskApi, content: bytes, filename: str, words: str
) -> None:
    resp = create(api, csv=content, filename=filename)
    assert resp.status_code == 422, resp.text
    assert words in resp.json()["detail"]
    assert api.client.get("/api/tasks", headers=api.admin).json() == []


def test_start_with_nobody_in_the_skill_group_is_409(api: TaskApi) -> None:
    tid = create(api, skill_group_id=api.empty_group_id).json()["id"]
    run_worker(api)
    resp = api.client.post(f"/api/tasks/{tid}/start", headers=api.sup)
    assert resp.status_code == 409
    assert "no agent" in resp.json()["detail"] and resp.json()["field"] == "skill_group_id"


def test_initializing_task_cannot_be_started_or_deleted(api: TaskApi) -> None:
    tid = create(api).json()["id"]
    for method, path in (("post", "start"), ("post", "pause"), ("delete", "")):
        url = f"/api/tasks/{tid}/{path}".rstrip("/")
        resp = getattr(api.client, method)(url, headers=api.sup if path else api.admin)
        assert resp.status_code == 409, (path, resp.text)


def test_agents_cannot_create_tasks_and_supervisors_cannot_delete(api: TaskApi) -> None:
    agent = api.web.headers("ann")
    assert api.client.get("/api/tasks", headers=agent).status_code == 403
    tid = create(api).json()["id"]
    assert api.client.delete(f"/api/tasks/{tid}", headers=api.sup).status_code == 403


def test_dnc_list_add_upload_remove(api: TaskApi) -> None:
    resp = api.client.post(
        "/api/dnc", json={"numbers": ["13812345678", "+86 138 1234 5678", "999"]}, headers=api.admin
    )
    body = resp.json()
    assert (resp.status_code, body["added"]) == (201, 1)
    assert body["rejected"][0]["index"] == 2
    upload = api.client.post(
        "/api/dnc/upload",
        headers=api.admin,
        files={"file": ("dnc.csv", io.BytesIO("手机\n13912345678\nabc\n".encode("gbk")), "text/csv")},
    )
    assert upload.json()["added"] == 1 and upload.json()["rejected"][0]["row"] == 3
    listing = api.client.get("/api/dnc", headers=api.admin).json()
    assert listing["total"] == 2
    # the import then reports both as do-not-call rows
    tid = create(api).json()["id"]
    run_worker(api)
    progress = api.client.get(f"/api/tasks/{tid}/import", headers=api.admin).json()
    assert (progress["imported"], progress["rejected"]) == (0, 4)
    assert api.client.delete("/api/dnc/+8613812345678", headers=api.admin).json() == {"removed": True}
