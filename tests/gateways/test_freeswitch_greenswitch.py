"""Why the FreeSWITCH driver does not use greenswitch 0.0.19: its faults, reproduced.

These pin down the evidence behind the decision in freeswitch/README.md. The two that wedge a thread
for good run in a child process that is killed afterwards; if a later greenswitch fixes them, these
fail, and the decision deserves another look. The driver's own behaviour in the same situations is
tested in test_freeswitch.py (the tests that mention greenswitch in their docstrings).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.peers.esl import TRACE_DIR

ROOT = Path(__file__).resolve().parents[2]

_CHILD = r"""
import logging, os, socket, sys, threading, time
logging.disable(logging.CRITICAL)
import gevent, greenswitch

mode = sys.argv[1]
srv = socket.create_server(("127.0.0.1", 0))
port = srv.getsockname()[1]

def server():
    c, _ = srv.accept()
    c.sendall(b"Content-Type: auth/request\n\n")
    c.recv(1000)
    c.sendall(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n")
    c.recv(1000)
    if mode == "eof-in-body":
        c.sendall(b"Content-Type: command/reply\nReply-Text: +OK\n\n")
        c.sendall(b"Content-Length: 5000\nContent-Type: text/event-plain\n\nEvent-Name: CHANNEL_ANSWER\n")
    c.shutdown(socket.SHUT_RDWR)
    c.close()

threading.Thread(target=server, daemon=True).start()
state = {"returned": False}

beats = [0]

def heartbeat():
    while True:
        beats[0] += 1
        gevent.sleep(0.01)

def client():
    conn = greenswitch.InboundESL("127.0.0.1", port, "pw")
    conn.connect()
    # Any other greenlet in the hub (the command-queue poller a thread design needs) keeps it alive;
    # this one also shows whether the hub still runs at all.
    gevent.spawn(heartbeat)
    try:
        conn.send("event plain ALL" if mode == "eof-in-body" else "api status")
    except Exception as exc:
        state["error"] = repr(exc)
    state["returned"] = True
    gevent.sleep(30)

threading.Thread(target=client, daemon=True).start()
time.sleep(0.5)
cpu, wall, before = time.process_time(), time.monotonic(), beats[0]
time.sleep(1.0)
state["cpu_share"] = (time.process_time() - cpu) / (time.monotonic() - wall)
state["beats"] = beats[0] - before
import json
print(json.dumps(state), flush=True)
os._exit(0)  # a spinning thread cannot be stopped; leave without interpreter teardown
"""


def _run_child(mode: str) -> dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, mode], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    try:
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    state: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return state


def test_greenswitch_send_blocks_forever_after_the_connection_drops() -> None:
    state = _run_child("drop")
    assert state["returned"] is False  # still waiting for a reply that can never come
    assert int(state["beats"]) > 10  # while the rest of its hub runs on: nothing wakes the sender


def test_greenswitch_wedges_its_hub_on_eof_inside_an_event_body() -> None:
    """`_read_socket` loops on read() == b'' without yielding: no other greenlet of that thread runs
    again (so no gevent.Timeout can fire either), and it burns CPU (about a core when the machine
    is idle; `cpu_share` in the state, not asserted because a saturated machine gives it less).
    Whether `send()` itself returned first is a race (its +OK reply arrives just before the cut
    event), so only the wedged hub is asserted."""
    state = _run_child("eof-in-body")
    assert int(state["beats"]) == 0, state


def test_greenswitch_glues_the_background_job_result_onto_content_length() -> None:
    from greenswitch.esl import ESLEvent

    lines = (json.loads(line) for line in (TRACE_DIR / "originate-busy.jsonl").read_text().splitlines())
    job = next(r["data"] for r in lines if "Event-Name: BACKGROUND_JOB" in r["data"])
    body = job.split("\n\n", 1)[1]
    event = ESLEvent(body)
    assert event.headers["Content-Length"] == "15\n\n-ERR USER_BUSY"
