"""Uploads are bounded: a body announced or streamed past the upload limit is refused before it is all
in and leaves nothing on disk; a big list keeps the memory of the web and of the worker flat; a cell
or a row too long for a screen pop is refused; an XLSX that unzips to more than the limit (a zip
bomb) is refused before it is parsed."""

from __future__ import annotations

import re
import select
import socket
import time
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import insert, text
from sqlalchemy.engine import Engine

from callcenter.models import Campaign, SkillGroup
from tests.conftest import WebFactory
from tests.web.conftest import LiveServer

BOUNDARY = "cc-test-boundary"


@pytest.fixture
def live_overrides() -> dict[str, object]:
    return {"upload_max_mb": 1}


def _token(live: Any, username: str = "root") -> str:
    live.user(username, ["admin"])
    resp = httpx.post(
        f"{live.url}/api/auth/token", json={"username": username, "password": "password-123"}, timeout=10
    )
    return str(resp.json()["access_token"])


def _head(live: Any, token: str, group: int, extra: str) -> tuple[bytes, bytes]:
    """The request head and the multipart prologue (form fields, then the file part's head)."""
    prologue = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="name"\r\n\r\nBig list\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="skill_group_id"\r\n\r\n{group}\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        "Content-Type: text/csv\r\n\r\nphone,name\r\n"
    ).encode()
    host = urlsplit(live.url).netloc
    head = (
        f"POST /api/tasks HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{extra}\r\n"
    ).encode()
    return head, prologue


def _status(sock: socket.socket, timeout: float) -> int:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    match = re.match(rb"HTTP/1\.1 (\d{3})", data)
    assert match, data
    return int(match.group(1))


def _connect(live: Any) -> socket.socket:
    parts = urlsplit(live.url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def test_an_upload_announced_over_the_limit_is_refused_at_once(
    live_server: LiveServer, tmp_path: Path
) -> None:
    token = _token(live_server)
    group = live_server.skill_group("Sales")
    head, prologue = _head(live_server, token, group, "Content-Length: 1610612736\r\n")  # 1.5 GB
    with _connect(live_server) as sock:
        sock.sendall(head + prologue)
        try:
            status = _status(sock, timeout=5)
        except TimeoutError:
            pytest.fail("the server waits for a 1.5 GB body instead of refusing it")
    assert status == 413
    assert not list((tmp_path / "uploads").glob("*"))


def test_a_streamed_upload_is_refused_once_past_the_limit(live_server: LiveServer, tmp_path: Path) -> None:
    token = _token(live_server)
    group = live_server.skill_group("Sales")
    head, prologue = _head(live_server, token, group, "Transfer-Encoding: chunked\r\n")
    rows = b"".join(b"138%08d,customer %d\r\n" % (i, i) for i in range(3000))  # ~70 KB a chunk
    sent = 0
    with _connect(live_server) as sock:
        sock.sendall(head + b"%x\r\n%s\r\n" % (len(prologue), prologue))
        while sent < 64 * 1024 * 1024:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(rows), rows))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(rows)
        else:
            pytest.fail("64 MB sent against a 1 MB limit and the server still reads")
        assert _status(sock, timeout=5) == 413
    # Refused within what the sockets' buffers hold past the limit, not after the whole body.
    assert sent < 16 * 1024 * 1024, sent
    assert not list((tmp_path / "uploads").glob("*"))


_XLSX_PARTS = {
    "[Content_Types].xml": (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        '<Override PartName="/xl/sharedStrings.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
        "</Types>"
    ),
    "_rels/.rels": (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" '
        'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
        'Target="xl/workbook.xml"/></Relationships>'
    ),
    "xl/workbook.xml": (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
        '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
    ),
    "xl/_rels/workbook.xml.rels": (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" '
        'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" '
        'Target="worksheets/sheet1.xml"/>'
        '<Relationship Id="rId2" '
        'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" '
        'Target="sharedStrings.xml"/></Relationships>'
    ),
    "xl/worksheets/sheet1.xml": (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        '<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c></row>'
        '<row r="2"><c r="A2" t="s"><v>2</v></c><c r="B2" t="s"><v>3</v></c></row>'
        "</sheetData></worksheet>"
    ),
}


def _bomb_xlsx(path: Path, unpacked_mb: int) -> None:
    """A valid workbook whose shared strings table (phone, notes, a number and one long note)
    unzips to `unpacked_mb` MB; the file itself is a few hundred KB at most."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for name, xml in _XLSX_PARTS.items():
            out.writestr(name, xml)
        with out.open("xl/sharedStrings.xml", "w", force_zip64=True) as member:
            member.write(
                b'<?xml version="1.0" encoding="UTF-8"?>'
                b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="4" '
                b'uniqueCount="4"><si><t>phone</t></si><si><t>notes</t></si>'
                b"<si><t>13800138000</t></si><si><t>"
            )
            for _ in range(unpacked_mb):
                member.write(b"A" * (1024 * 1024))
            member.write(b"</t></si></sst>")


def test_an_xlsx_that_unzips_past_the_limit_is_refused_by_the_api(
    web_factory: WebFactory, sqlite_engine: Engine, tmp_path: Path
) -> None:
    from callcenter import accounts
    from callcenter.db import session_scope

    web = web_factory(sqlite_engine, upload_max_unpacked_mb=8)
    web.user("root", ["admin"])
    with session_scope(web.engine) as s:
        group = accounts.create_skill_group(s, name="Sales").id
    bomb = tmp_path / "bomb.xlsx"
    _bomb_xlsx(bomb, unpacked_mb=40)
    assert bomb.stat().st_size < 1024 * 1024
    resp = web.client.post(
        "/api/tasks",
        data={"name": "Bomb", "skill_group_id": str(group)},
        files={"file": ("bomb.xlsx", bomb.read_bytes(), "application/octet-stream")},
        headers=web.headers("root"),
    )
    assert resp.status_code == 422, resp.text
    assert resp.json()["field"] == "file" and "unzip" in resp.json()["detail"]


def _task(engine: Engine) -> int:
    with engine.begin() as c:
        c.execute(insert(SkillGroup).values(id=1, name="g", description=""))
        c.execute(insert(Campaign).values(id=1, name="t", state="initializing", skill_group_id=1))
    return 1


def test_the_worker_refuses_a_zip_bomb_too(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from callcenter.leads import import_job

    monkeypatch.setenv("CALLCENTER_MODE", "dev")
    monkeypatch.setenv("CALLCENTER_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("CALLCENTER_REDIS_URL", "")
    monkeypatch.setenv("CALLCENTER_UPLOAD_MAX_UNPACKED_MB", "8")
    cid = _task(sqlite_engine)
    bomb = tmp_path / "bomb.xlsx"
    _bomb_xlsx(bomb, unpacked_mb=40)
    with pytest.raises(Exception, match="unzip"):
        import_job(cid, str(bomb), None, "bomb.xlsx")
    with sqlite_engine.connect() as c:
        assert c.execute(text("SELECT COUNT(*) FROM lead")).scalar() == 0
        error = c.execute(text("SELECT import_error FROM campaign")).scalar()
    assert error is not None and "unzip" in error


def test_a_cell_too_long_for_a_screen_pop_rejects_its_row(sqlite_engine: Engine, tmp_path: Path) -> None:
    """A 40 MB lead column once made Redis drop the web's subscription (the pop carries the lead)."""
    from callcenter.leads import MAX_CELL_CHARS, import_list

    cid = _task(sqlite_engine)
    path = tmp_path / "list.csv"
    path.write_text(
        f"phone,notes\n13800138000,short\n13900139000,{'x' * (MAX_CELL_CHARS + 1)}\n", encoding="utf-8"
    )
    result = import_list(sqlite_engine, campaign_id=cid, path=path, phone_column=None, region="CN")
    assert (result.imported, result.rejected) == (1, 1)
    with sqlite_engine.connect() as c:
        issue = c.execute(text("SELECT row_no, reason, detail FROM import_issue")).one()
        longest = c.execute(text("SELECT MAX(LENGTH(fields)) FROM lead")).scalar()
    assert issue[:2] == (3, "too_long") and "notes" in issue[2]
    assert longest is not None and longest < 100


def _status_mb(field: str) -> float:
    found = re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text())
    assert found, field
    return int(found.group(1)) / 1024


def _vm_hwm_mb() -> float:
    return _status_mb("VmHWM")


def _vm_rss_mb() -> float:
    return _status_mb("VmRSS")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _big_csv(path: Path, megabytes: int) -> int:
    """A list of `megabytes` MB: long rows (a 1,500-character notes column), so the file is big and
    the row count moderate."""
    notes = "n" * 1500
    rows = 0
    with path.open("w", encoding="utf-8") as f:
        f.write("phone,name,notes\n")
        while f.tell() < megabytes * 1024 * 1024:
            f.write(f"13{rows % 10}{rows:08d},customer {rows},{notes}\n")
            rows += 1
    return rows


@pytest.mark.parametrize("live_overrides", [{"upload_max_mb": 200}])
def test_a_big_list_keeps_the_memory_of_web_and_worker_flat(
    live_server: LiveServer,
    live_overrides: dict[str, object],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The live server and the rq worker (`run_imports`) run in this process: its peak resident set
    while each works on a 100 MB list is what they add."""
    monkeypatch.setenv("CALLCENTER_UPLOAD_MAX_MB", "200")  # the worker reads its settings from there
    token = _token(live_server)
    group = live_server.skill_group("Sales")
    path = tmp_path / "big.csv"
    rows = _big_csv(path, 100)
    time.sleep(0.2)
    base = _vm_rss_mb()
    _reset_peak()
    with path.open("rb") as f, httpx.Client(timeout=120) as client:
        resp = client.post(
            f"{live_server.url}/api/tasks",
            data={"name": "Big", "skill_group_id": str(group)},
            files={"file": ("big.csv", f, "text/csv")},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert resp.status_code == 201, resp.text
    web_peak = _vm_hwm_mb() - base
    base = _vm_rss_mb()
    _reset_peak()
    live_server.run_imports()
    worker_peak = _vm_hwm_mb() - base
    task = httpx.get(
        f"{live_server.url}/api/tasks/{resp.json()['id']}", headers={"Authorization": f"Bearer {token}"}
    ).json()
    print(f"100 MB list: the web's peak grew {web_peak:.0f} MB, the worker's {worker_peak:.0f} MB")
    assert web_peak < 60, f"the upload of a 100 MB list added {web_peak:.0f} MB to the web"
    assert worker_peak < 80, f"the import of a 100 MB list added {worker_peak:.0f} MB to the worker"
    assert task["import_progress"]["imported"] == rows, task
