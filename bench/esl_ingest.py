"""ESL ingest: recorded FreeSWITCH events through (a) a bare ESL reader and (b) our whole pipeline.

The inbound events of `burst-20-mixed.jsonl` (20 calls: 5 answered, 5 busy, 5 no answer, 5 failed with
503; 110 events, 4.3 KB each on average, with all channel variables) are replayed `--rounds` times,
each round with its own call ids and Job-UUIDs, over a loopback TCP socket, as fast as the reader takes
them, into:

(a) a bare ESL reader: `EslFramer` cuts the stream into messages and `parse_event` parses every event's
    header block (the same framing and parsing code the driver uses, nothing else): the baseline;
(b) the pipeline: `FreeswitchGateway` (framing, parsing, call tracking, cause mapping) -> domain events
    -> `dialer_call_state_stage` (call id -> last state) -> the event bus (`callcenter.bus.Bus`,
    publishing every domain event to a real Redis started here with `EmbeddedRedis`).

Both read the very same bytes in the same process, best of `--trials`. For (b) the calls are originated
through the driver first (untimed), so that it follows them, and each round's BACKGROUND_JOBs carry the
Job-UUIDs the driver chose; (b) is done when every call has ended in the call-state stage and every
domain event is published. `--greenswitch` adds, for comparison, greenswitch 0.0.19 reading the same
stream (in its own thread with its gevent hub, one catch-all handler).

    python bench/esl_ingest.py [--quick] [--rounds N] [--trials N] [--greenswitch]

The output ends with one JSON line: {"baseline_events_per_s": .., "pipeline_events_per_s": .., "ratio": ..}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis.asyncio as aioredis  # noqa: E402

from callcenter.bus import MONITOR_TOPIC, Bus  # noqa: E402
from callcenter.gateways.base import (  # noqa: E402
    CallAnswered,
    CallConnected,
    CallEnded,
    CallRinging,
    GatewayEvent,
    OriginateRequest,
)
from callcenter.gateways.esl_client import EslFramer, parse_event  # noqa: E402
from callcenter.gateways.freeswitch import FreeswitchGateway  # noqa: E402
from callcenter.redis_server import EmbeddedRedis  # noqa: E402

TRACE = Path("/work/shared/traces/freeswitch/burst-20-mixed.jsonl")
PASSWORD = "bench-password"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# --- the recorded burst ---------------------------------------------------------------------------


class Burst:
    """The recorded events (after the first originate) and the 20 recorded originates' ids."""

    def __init__(self, path: Path = TRACE) -> None:
        self.events: list[str] = []
        self.calls: list[tuple[str, str, str]] = []  # (origination_uuid, Job-UUID, number)
        started = False
        for line in path.read_text().splitlines():
            item = json.loads(line)
            data = item["data"]
            if item["dir"] == "out" and data.startswith("bgapi originate"):
                started = True
                uid = re.search(r"origination_uuid=([^,}]+)", data).group(1)  # type: ignore[union-attr]
                job = re.search(r"Job-UUID: (\S+)", data).group(1)  # type: ignore[union-attr]
                number = re.search(r"}sofia/cc/(\d+)@", data).group(1)  # type: ignore[union-attr]
                self.calls.append((uid, job, number))
            elif item["dir"] == "in" and started and "Content-Type: text/event-plain" in data[:80]:
                self.events.append(data)
        self.text = "".join(self.events)
        wanted = ("CHANNEL_PROGRESS", "CHANNEL_ANSWER", "CHANNEL_BRIDGE", "CHANNEL_HANGUP_COMPLETE")
        wanted += ("BACKGROUND_JOB", "CUSTOM")
        self.unread = sum(
            1 for e in self.events if re.search(r"\nEvent-Name: (\S+)", e).group(1) not in wanted
        )  # type: ignore[union-attr]
        tokens = [u for u, _, _ in self.calls] + [j for _, j, _ in self.calls]
        # Cut the text at every recorded id once; a round is a join with its own ids (same lengths,
        # so every Content-Length stays right).
        self._parts = re.split("(" + "|".join(map(re.escape, tokens)) + ")", self.text)

    def round_call_id(self, r: int, recorded: str) -> str:
        return f"{r:08x}{recorded[8:]}"

    def stream(self, rounds: int, jobs: dict[str, str] | None = None) -> bytes:
        """`rounds` copies; with `jobs` (round call id -> the driver's Job-UUID), ids made per round."""
        if jobs is None:
            return self.text.encode() * rounds
        recorded_job = {j: u for u, j, _ in self.calls}
        out = []
        for r in range(rounds):
            parts = list(self._parts)
            for i in range(1, len(parts), 2):
                token = parts[i]
                uid = recorded_job.get(token, token)
                call_id = self.round_call_id(r, uid)
                parts[i] = jobs[call_id] if token in recorded_job else call_id
            out.append("".join(parts))
        return "".join(out).encode()


# --- a minimal ESL server in its own thread --------------------------------------------------------


class ReplayServer:
    """Loopback ESL: auth, `event plain`, `bgapi originate` (+OK Job-UUID), `api ...` and `exit`; then,
    on `play`, writes a prepared byte stream as fast as the client reads it. Threads, off the loop."""

    def __init__(self, *, auth: bool = True) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.auth = auth
        self.jobs: dict[str, str] = {}  # origination_uuid -> Job-UUID
        self._conn: socket.socket | None = None
        self._lock = threading.Lock()
        self._stream = b""
        self._go = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def play(self, stream: bytes) -> None:
        self._stream = stream
        self._go.set()

    def _send(self, data: bytes) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.sendall(data)

    def _accept(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conn = conn  # one client per server: `play` may come before this line runs
            if self.auth:
                self._send(b"Content-Type: auth/request\n\n")
            threading.Thread(target=self._stream_when_asked, args=(conn,), daemon=True).start()
            self._serve(conn)

    def _stream_when_asked(self, conn: socket.socket) -> None:
        self._go.wait()
        if self._conn is conn:
            self._send(self._stream)
            if not self.auth:
                conn.shutdown(socket.SHUT_WR)  # the bare reader stops at EOF

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            try:
                data = conn.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            buf += data
            *commands, buf = buf.split(b"\n\n")
            replies = []
            for raw in commands:
                line, _, rest = raw.decode().partition("\n")
                if line.startswith("auth "):
                    text = "+OK accepted" if line == f"auth {PASSWORD}" else "-ERR invalid"
                    replies.append(f"Content-Type: command/reply\nReply-Text: {text}\n\n")
                elif line.startswith("event "):
                    replies.append(
                        "Content-Type: command/reply\nReply-Text: +OK event listener enabled plain\n\n"
                    )
                elif line.startswith("bgapi "):
                    job = rest.removeprefix("Job-UUID: ").strip()
                    m = re.search(r"origination_uuid=([^,}]+)", line)
                    if m:
                        self.jobs[m.group(1)] = job
                    replies.append(
                        f"Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job}\nJob-UUID: {job}\n\n"
                    )
                elif line.startswith("api "):
                    body = '{"row_count":0}\n' if "show channels" in line else "+OK\n"
                    replies.append(f"Content-Type: api/response\nContent-Length: {len(body)}\n\n{body}")
                elif line == "exit":
                    replies.append("Content-Type: command/reply\nReply-Text: +OK bye\n\n")
            if replies:
                self._send("".join(replies).encode())


# --- (a) the bare reader ---------------------------------------------------------------------------


class BareReader(asyncio.Protocol):
    """Frames the stream and parses every event; keeps nothing but a count."""

    def __init__(self, done: asyncio.Future[float]) -> None:
        self.framer = EslFramer()
        self.count = 0
        self.done = done

    def data_received(self, data: bytes) -> None:
        for headers, body in self.framer.feed(data):
            if headers.get("Content-Type") == "text/event-plain":
                event = parse_event(body)
                if event.name:
                    self.count += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(time.perf_counter())


async def run_baseline(burst: Burst, rounds: int) -> float:
    server = ReplayServer(auth=False)
    stream = burst.stream(rounds)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()
    transport, reader = await loop.create_connection(lambda: BareReader(done), "127.0.0.1", server.port)
    started = time.perf_counter()
    server.play(stream)
    finished = await asyncio.wait_for(done, 600)
    transport.close()
    total = rounds * len(burst.events)
    assert reader.count == total, (reader.count, total)
    return total / (finished - started)


# --- (b) the pipeline ------------------------------------------------------------------------------

_STATE = {CallRinging: "ringing", CallAnswered: "answered", CallConnected: "connected"}


def dialer_call_state_stage(states: dict[str, str], event: GatewayEvent) -> tuple[str, dict[str, Any]] | None:
    """Stand-in for the dialer's call tracker: keep call id -> last state; return the bus message
    (type, payload) to publish, or None for events that are not about a call."""
    if isinstance(event, CallEnded):
        states[event.call_id] = f"ended:{event.result.value}"
        return "call_state", {
            "call_id": event.call_id,
            "state": "ended",
            "result": event.result.value,
            "cause": event.cause,
            "at": event.at,
        }
    state = _STATE.get(type(event))
    if state is None:
        return None
    call_id: str = event.call_id  # type: ignore[union-attr]
    states[call_id] = state
    payload: dict[str, Any] = {"call_id": call_id, "state": state, "at": event.at}
    if isinstance(event, CallAnswered):
        payload["answer"] = event.answer.value
    elif isinstance(event, CallConnected):
        payload["extension"] = event.extension
    return "call_state", payload


class BusStage:
    """Publishes on the bus without blocking `emit`: messages are queued and a task sends them to Redis
    in pipelined batches."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.queue: list[tuple[str, dict[str, Any]]] = []
        self.wake = asyncio.Event()
        self.published = 0
        self.flushed = asyncio.Event()

    def push(self, message: tuple[str, dict[str, Any]]) -> None:
        self.queue.append(message)
        self.wake.set()

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue:
                batch, self.queue = self.queue, []
                pipe = self.client.pipeline(transaction=False)
                bus = Bus(pipe)
                for message_type, payload in batch:
                    bus.publish(MONITOR_TOPIC, message_type, payload)
                await pipe.execute()
                self.published += len(batch)
            self.flushed.set()


async def run_pipeline(burst: Burst, rounds: int, redis_url: str, *, prefilter: bool = True) -> float:
    server = ReplayServer()
    client = aioredis.Redis.from_url(redis_url)
    states: dict[str, str] = {}
    bus_stage = BusStage(client)
    publisher = asyncio.create_task(bus_stage.run())
    expected = rounds * len(burst.calls)
    ended = 0
    staged = 0

    def emit(event: GatewayEvent) -> None:
        nonlocal ended, staged
        message = dialer_call_state_stage(states, event)
        if message is not None:
            staged += 1
            bus_stage.push(message)
        if type(event) is CallEnded:
            ended += 1

    gw = FreeswitchGateway(
        host="127.0.0.1",
        port=server.port,
        password=PASSWORD,
        keepalive_s=3600,
        timeout_s=30,
        dial_template="sofia/cc/{number}",
        prefilter=prefilter,
    )
    await gw.start(emit)
    for r in range(rounds):  # untimed: the driver must know the calls it follows
        for uid, _, number in burst.calls:
            ring = 5.0 if number.endswith(("2", "6")) else 30.0
            await gw.originate(
                OriginateRequest(call_id=burst.round_call_id(r, uid), number=number, ring_timeout_s=ring)
            )
    await gw.active_calls()  # every originate reply has been read
    stream = burst.stream(rounds, server.jobs)
    staged_before = staged
    started = time.perf_counter()
    server.play(stream)
    while ended < expected or bus_stage.published < staged or bus_stage.queue:
        bus_stage.flushed.clear()
        await asyncio.wait_for(bus_stage.flushed.wait(), 600)
    finished = time.perf_counter()
    skipped = gw._conn.skipped if gw._conn is not None else 0
    await gw.close()
    publisher.cancel()
    stats = await client.info("commandstats")
    await client.aclose()
    assert ended == expected, (ended, expected)
    ends = sorted({v for v in states.values() if v.startswith("ended:")})
    print(
        f"    pipeline: {staged - staged_before} call-state messages published "
        f"(redis PUBLISH calls so far: {stats.get('cmdstat_publish', {}).get('calls', 0)}), "
        f"{len(states)} calls tracked, end states {ends}, {skipped} events dropped unparsed",
        flush=True,
    )
    return rounds * len(burst.events) / (finished - started)


# --- for comparison: greenswitch 0.0.19 reading the same stream --------------------------------------


def run_greenswitch(burst: Burst, rounds: int) -> float:
    """greenswitch's InboundESL in a thread (its own gevent hub, no monkey patching), one `*` handler."""
    import gevent
    import greenswitch

    server = ReplayServer()
    stream = burst.stream(rounds)
    total = rounds * len(burst.events)
    result: dict[str, float] = {}

    def client() -> None:
        conn = greenswitch.InboundESL("127.0.0.1", server.port, PASSWORD)
        conn.connect()
        count = [0]

        def any_event(_: Any) -> None:
            count[0] += 1

        conn.register_handle("*", any_event)
        conn.send("event plain ALL")
        started = time.perf_counter()
        server.play(stream)
        while count[0] < total and time.perf_counter() - started < 600:
            gevent.sleep(0.001)
        result["rate"] = count[0] / (time.perf_counter() - started)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    thread.join(600)
    return result.get("rate", 0.0)


# --- main ------------------------------------------------------------------------------------------


async def main(rounds: int, trials: int, greenswitch: bool) -> dict[str, float]:
    burst = Burst()
    size = len(burst.text.encode()) / len(burst.events)
    print(
        f"burst-20-mixed: {len(burst.events)} inbound events ({size:.0f} bytes each on average), "
        f"{len(burst.calls)} calls per round; {rounds} rounds = {rounds * len(burst.events)} events per run; "
        f"best of {trials}",
        flush=True,
    )
    baseline, pipeline, parsed_all = 0.0, 0.0, 0.0
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp)) as redis_server:
        for trial in range(1, trials + 1):
            a = await run_baseline(burst, rounds)
            print(f"  trial {trial}: (a) bare ESL reader      {a:10.0f} events/s", flush=True)
            b = await run_pipeline(burst, rounds, redis_server.url)
            print(f"  trial {trial}: (b) driver->state->bus   {b:10.0f} events/s", flush=True)
            c = await run_pipeline(burst, rounds, redis_server.url, prefilter=False)
            print(f"  trial {trial}: (b) with every event parsed {c:7.0f} events/s", flush=True)
            baseline, pipeline, parsed_all = max(baseline, a), max(pipeline, b), max(parsed_all, c)
    print(
        f"  (b) as shipped drops unparsed the {burst.unread} events per round whose names it has no use for "
        f"(and those of calls already ended); with every event parsed as in (a): {parsed_all:.0f} events/s, "
        f"ratio {parsed_all / baseline:.3f}",
        flush=True,
    )
    if greenswitch:
        g = await asyncio.to_thread(run_greenswitch, burst, rounds)
        print(f"  for comparison: greenswitch 0.0.19 reader {g:10.0f} events/s", flush=True)
    return {
        "baseline_events_per_s": round(baseline),
        "pipeline_events_per_s": round(pipeline),
        "ratio": round(pipeline / baseline, 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run, well under a minute")
    parser.add_argument("--rounds", type=int, default=None, help="copies of the burst per run")
    parser.add_argument("--trials", type=int, default=None, help="runs of each side; the best counts")
    parser.add_argument("--greenswitch", action="store_true", help="also time greenswitch 0.0.19 reading")
    args = parser.parse_args()
    rounds = args.rounds or (100 if args.quick else 400)
    trials = args.trials or (2 if args.quick else 3)
    print(f"python {platform.python_version()} on {platform.machine()}", flush=True)
    result = asyncio.run(main(rounds, trials, args.greenswitch))
    print(
        f"(a) {result['baseline_events_per_s']} events/s, (b) {result['pipeline_events_per_s']} events/s, "
        f"ratio {result['ratio']} (goal >= 0.5)"
    )
    print(json.dumps(result))
