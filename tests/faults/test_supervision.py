"""`callcenter serve` with its children (embedded Redis, dialer, worker): they end with it however it
ends (SIGTERM, SIGINT, SIGKILL), and a child that dies is started again, with backoff."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from app.processes import Backoff, ChildSpec, Supervisor
from tests.faults.conftest import Processes, wait_until
from tests.servers import free_port

CHILDREN = ("redis-server", "app.cli dialer", "app.cli worker")


def start_serve(procs: Processes, sqlite_url: str) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    """`callcenter serve` with no Redis URL (so: embedded Redis, dialer and worker as children),
    once it answers HTTP; with the pid of each child."""
    port = free_port()
    parent = procs.spawn("serve", "--port", str(port), env=procs.env(CALLCENTER_DATABASE_URL=sqlite_url))

    def up() -> bool:
        assert parent.poll() is None, procs.log(parent)
        try:
            return httpx.get(f"http://127.0.0.1:{port}/login", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, 30, "serve answers /login")
    children: dict[str, int] = {}

    def all_children() -> bool:
        for word in CHILDREN:
            found = procs.named(parent.pid, word)
            if found:
                children[word] = found[0]
        return len(children) == len(CHILDREN)

    wait_until(all_children, 20, f"serve has its children {CHILDREN}")
    return parent, children


@pytest.mark.processes
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_no_child_outlives_serve(sig: signal.Signals, procs: Processes, sqlite_url: str) -> None:
    parent, children = start_serve(procs, sqlite_url)
    everyone = procs.descendants(parent.pid)
    assert set(children.values()) <= set(everyone)
    os.kill(parent.pid, sig)  # the parent alone, as `kill PID`, systemd or docker stop would
    try:
        wait_until(lambda: not any(procs.alive(p) for p in everyone), 10, f"children gone after {sig.name}")
    except AssertionError:
        left = {p: procs.cmdline(p) for p in everyone if procs.alive(p)}
        raise AssertionError(f"alive 10 s after {sig.name} to the parent: {left}") from None
    parent.wait(10)
    if sig is not signal.SIGKILL:
        assert "Traceback" not in procs.log(parent), procs.log(parent)


@pytest.mark.processes
def test_a_crashed_dialer_is_started_again(procs: Processes, sqlite_url: str) -> None:
    parent, children = start_serve(procs, sqlite_url)
    first = children["app.cli dialer"]
    os.kill(first, signal.SIGKILL)
    killed_at = time.monotonic()
    found: list[int] = []

    def restarted() -> bool:
        found[:] = [p for p in procs.named(parent.pid, "app.cli dialer") if p != first]
        return bool(found)

    wait_until(restarted, 15, "a new dialer")
    assert time.monotonic() - killed_at >= 0.9  # not before the first backoff step (1 s)
    assert procs.alive(children["app.cli worker"]) and procs.alive(children["redis-server"])
    wait_until(lambda: "dialer" in procs.log(parent) and "restart" in procs.log(parent), 5, "restart logged")


def test_backoff_doubles_for_quick_deaths_and_starts_over_after_a_long_run() -> None:
    backoff = Backoff(initial_s=1, max_s=8, stable_s=30)
    assert [backoff.next_delay(ran_s=0.1) for _ in range(5)] == [1, 2, 4, 8, 8]
    assert backoff.next_delay(ran_s=45) == 1
    assert backoff.next_delay(ran_s=2) == 2


def test_a_child_that_keeps_crashing_is_restarted_no_faster_than_the_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    crash = ChildSpec("crasher", [sys.executable, "-c", "raise SystemExit(3)"])
    caplog.set_level(logging.INFO, logger="callcenter.processes")
    started = time.monotonic()
    with Supervisor([crash], backoff_s=0.2, backoff_max_s=0.8) as sup:
        time.sleep(2.0)
        starts = sup.children[0].starts
    # Starts at about 0, 0.2, 0.6, 1.4 s (+ the child's own run time); a crash loop would be dozens.
    assert 3 <= starts <= 5, starts
    deaths = [r for r in caplog.records if "died (exit code 3)" in r.getMessage()]
    assert len(deaths) >= starts - 1 and "restart in 0.2 s" in deaths[0].getMessage()
    assert time.monotonic() - started < 5
