"""`callcenter demo` (what `make demo` runs): serves the login page, the printed admin login works, and
the seeded task runs on the simulated PBX with live counters; SIGTERM ends it with all its children."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.faults.conftest import alive, descendants, wait_until
from tests.servers import free_port

pytestmark = pytest.mark.processes


def test_demo_serves_logs_in_and_runs_the_demo_task(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCENTER_")}
    env.update(
        {
            "CALLCENTER_DATA_DIR": str(tmp_path / "data"),
            "CALLCENTER_SIM_TIME_SCALE": "10",
            "CALLCENTER_LOG_LEVEL": "WARNING",
        }
    )
    out = open(tmp_path / "demo.log", "w+b")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "demo", "--port", str(port)],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/login", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            out.seek(0)
            raise AssertionError("demo did not serve /login:\n" + out.read().decode(errors="replace")[-3000:])
        out.seek(0)
        printed = out.read().decode(errors="replace")
        assert f"http://127.0.0.1:{port}/" in printed
        logins = re.search(r"admin\s+(\S+) / (\S+)", printed)
        assert logins is not None, printed
        user, password = logins.groups()
        with httpx.Client(base_url=base, timeout=5) as client:
            login = client.post("/login", data={"username": user, "password": password, "next": "/"})
            assert login.status_code in (200, 303) and client.get("/api/me").json()["username"] == user
            tasks = client.get("/api/tasks").json()
            demo = next(t for t in tasks if t["name"].startswith("Demo"))
            assert demo["state"] == "running" and demo["import_progress"]["imported"] == 500
            deadline = time.monotonic() + 30
            snap: dict = {}
            while time.monotonic() < deadline:
                snap = client.get(f"/api/tasks/{demo['id']}/snapshot").json()
                if snap.get("source") == "dialer" and snap["dialled"] >= 5 and snap["connected"] >= 1:
                    break
                time.sleep(0.5)
            assert snap.get("source") == "dialer" and snap["dialled"] >= 5, snap
        # SIGTERM to the demo process alone (as `kill PID` or `docker stop` sends it): its embedded
        # Redis, dialer and worker end with it, and it exits cleanly.
        children = descendants(proc.pid)
        assert len(children) >= 3, children
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        wait_until(lambda: not any(alive(p) for p in children), 10, "the demo's children end with it")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        out.close()
