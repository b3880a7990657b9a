"""AMI ingest: recorded Asterisk events through (a) panoramisk alone and (b) our whole pipeline.

The inbound events of `burst-20-mixed.jsonl` (20 calls: answered, busy, no answer, congestion; 286
events of which a third are VarSet/Newexten noise) are replayed `--rounds` times, each round with its
own call ids and channel names, over a loopback TCP socket, as fast as the reader takes them, into:

(a) panoramisk 1.4's `Manager` with one catch-all callback (`register_event("*", ...)`), the baseline;
(b) the pipeline: `AsteriskGateway` (AMI framing, filtering, call tracking) -> domain events ->
    `dialer_call_state_stage` (call id -> last state) -> the event bus (`callcenter.bus.Bus`,
    publishing every domain event to a real Redis started here with `EmbeddedRedis`).

Both read the very same bytes (the replay ignores the `Events:` subscription, so the driver's own
class filter does not shrink (b)'s input), in the same process and run, best of `--trials`. For (b)
the calls are originated through the driver first (untimed), so that it follows them; (b) is done
when every call has ended in the call-state stage and every domain event is published.

    python bench/ami_ingest.py [--quick] [--rounds N] [--trials N]

The output ends with one JSON line: {"baseline_events_per_s": .., "pipeline_events_per_s": .., "ratio": ..}
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
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
from panoramisk import Manager  # noqa: E402

from callcenter.bus import MONITOR_TOPIC, Bus  # noqa: E402
from callcenter.gateways.asterisk import AsteriskGateway  # noqa: E402
from callcenter.gateways.base import (  # noqa: E402
    CallAnswered,
    CallConnected,
    CallEnded,
    CallRinging,
    GatewayEvent,
    OriginateRequest,
)
from callcenter.redis_server import EmbeddedRedis  # noqa: E402

TRACE = Path("/work/shared/traces/asterisk-20/burst-20-mixed.jsonl")
USER, SECRET = "bench", "bench-secret"
_LOGIN_NOISE = ("Event: FullyBooted", "Event: SuccessfulAuth")


# --- the recorded burst ---------------------------------------------------------------------------


@dataclasses.dataclass
class Burst:
    events: list[str]  # inbound events, in order
    call_ids: list[str]  # call-b000 ...
    action_ids: dict[str, str]  # call id -> the Originate's ActionID in the recording
    channels: list[str]  # channel names Asterisk made

    @classmethod
    def load(cls, path: Path = TRACE) -> Burst:
        events, call_ids, action_ids = [], [], {}
        for line in path.read_text().splitlines():
            item = json.loads(line)
            data = item["data"]
            if item["dir"] == "out":
                if data.startswith("Action: Originate"):
                    cid = re.search(r"ChannelId: (\S+)", data).group(1)  # type: ignore[union-attr]
                    call_ids.append(cid)
                    action_ids[cid] = re.search(r"ActionID: (\S+)", data).group(1)  # type: ignore[union-attr]
            elif data.startswith("Event: ") and not data.startswith(_LOGIN_NOISE):
                events.append(data)
        channels = sorted(set(re.findall(r"Channel: (SIP/[\w-]+-[0-9a-f]{8})\r\n", "".join(events))))
        return cls(events, call_ids, action_ids, channels)

    def stream(self, rounds: int, call_id: Any, action_id: Any) -> bytes:
        """`rounds` copies of the burst; call ids, ActionIDs and channel names made unique per round by
        `call_id(round, recorded_id)` and `action_id(round, recorded_id)`."""
        text = "".join(self.events)
        tokens = self.call_ids + list(self.action_ids.values()) + self.channels
        pattern = re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))
        by_action = {a: c for c, a in self.action_ids.items()}
        out = []
        for r in range(rounds):
            mapping = {c: call_id(r, c) for c in self.call_ids}
            mapping |= {a: action_id(r, by_action[a]) for a in self.action_ids.values()}
            mapping |= {ch: f"{ch[:-8]}{r:04x}{ch[-4:]}" for ch in self.channels}
            out.append(pattern.sub(lambda m, mp=mapping: mp[m.group(0)], text))
        return "".join(out).encode()


def round_call_id(r: int, recorded: str) -> str:
    return f"r{r:05d}-{recorded}"


# --- a minimal AMI server in its own thread -----------------------------------------------------------


_REPLIES = {
    "login": ("Success", "Message: Authentication accepted"),
    "ping": ("Success", "Ping: Pong\r\nTimestamp: 0"),
    "originate": ("Success", "Message: Originate successfully queued"),
    "logoff": ("Goodbye", "Message: Thanks for all the fish."),
}


class ReplayServer:
    """Loopback AMI: banner, Login, Ping, Logoff and async Originate replies; then, on `play`, writes a
    prepared byte stream as fast as the client reads it. Runs in threads, off the measured loop."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.originates: dict[str, str] = {}  # ChannelId -> ActionID
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
            self._conn = conn
            self._go.clear()
            self._send(b"Asterisk Call Manager/9.0.0\r\n")
            threading.Thread(target=self._stream_when_asked, args=(conn,), daemon=True).start()
            self._serve(conn)

    def _stream_when_asked(self, conn: socket.socket) -> None:
        self._go.wait()
        if self._conn is conn:
            self._send(self._stream)

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
            *actions, buf = buf.split(b"\r\n\r\n")
            replies = []
            for raw in actions:
                headers = dict(line.split(": ", 1) for line in raw.decode().split("\r\n") if ": " in line)
                action, aid = headers.get("Action", "").lower(), headers.get("ActionID", "")
                if action in _REPLIES:
                    replies.append(
                        f"Response: {_REPLIES[action][0]}\r\nActionID: {aid}\r\n{_REPLIES[action][1]}\r\n\r\n"
                    )
                if action == "originate":
                    self.originates[headers.get("ChannelId", "")] = aid
            if replies:
                self._send("".join(replies).encode())


# --- (a) panoramisk alone -------------------------------------------------------------------------------


async def run_baseline(burst: Burst, rounds: int) -> float:
    server = ReplayServer()
    stream = burst.stream(rounds, round_call_id, lambda r, recorded: burst.action_ids[recorded])
    total = rounds * len(burst.events)
    done = asyncio.get_running_loop().create_future()
    logged_in = asyncio.Event()
    count = 0

    def catch_all(_: Manager, event: Any) -> None:
        nonlocal count
        count += 1
        if count == total and not done.done():
            done.set_result(time.perf_counter())

    manager = Manager(
        host="127.0.0.1",
        port=server.port,
        username=USER,
        secret=SECRET,
        ping_delay=3600,
        reconnect_timeout=3600,
        loop=asyncio.get_running_loop(),
        on_login=lambda _: logged_in.set(),
    )
    manager.register_event("*", catch_all)
    manager.connect()
    await asyncio.wait_for(logged_in.wait(), 10)
    started = time.perf_counter()
    server.play(stream)
    finished = await asyncio.wait_for(done, 600)
    manager.close()
    return total / (finished - started)


# --- (b) the pipeline ---------------------------------------------------------------------------------

_STATE = {CallRinging: "ringing", CallAnswered: "answered", CallConnected: "connected", CallEnded: "ended"}
_FIELDS: dict[type, tuple[str, ...]] = {}


def dialer_call_state_stage(event: GatewayEvent, states: dict[str, str]) -> None:
    """Stand-in for the dialer's call tracker: keep call id -> last state."""
    state = _STATE.get(type(event))
    if state is not None:
        states[event.call_id] = state  # type: ignore[union-attr]


def payload(event: GatewayEvent) -> dict[str, Any]:
    names = _FIELDS.get(type(event))
    if names is None:
        names = _FIELDS[type(event)] = tuple(f.name for f in dataclasses.fields(event))  # type: ignore[arg-type]
    return {name: getattr(event, name) for name in names}


class BusStage:
    """Publishes domain events on the bus without blocking `emit`: they are queued and a task sends
    them to Redis in pipelined batches."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.queue: list[GatewayEvent] = []
        self.wake = asyncio.Event()
        self.published = 0
        self.flushed = asyncio.Event()

    def __call__(self, event: GatewayEvent) -> None:
        self.queue.append(event)
        self.wake.set()

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue:
                batch, self.queue = self.queue, []
                pipe = self.client.pipeline(transaction=False)
                bus = Bus(pipe)
                for event in batch:
                    bus.publish(MONITOR_TOPIC, type(event).__name__, payload(event))
                await pipe.execute()
                self.published += len(batch)
            self.flushed.set()


async def run_pipeline(burst: Burst, rounds: int, redis_url: str) -> float:
    server = ReplayServer()
    client = aioredis.Redis.from_url(redis_url)
    states: dict[str, str] = {}
    bus_stage = BusStage(client)
    publisher = asyncio.create_task(bus_stage.run())
    expected = rounds * len(burst.call_ids)
    ended = 0
    emitted = 0

    def emit(event: GatewayEvent) -> None:
        nonlocal ended, emitted
        emitted += 1
        dialer_call_state_stage(event, states)
        bus_stage(event)
        if type(event) is CallEnded:
            ended += 1

    gw = AsteriskGateway(
        host="127.0.0.1", port=server.port, username=USER, secret=SECRET, keepalive_s=3600, timeout_s=30
    )
    await gw.start(emit)
    for r in range(rounds):  # untimed: the driver must know the calls it follows
        for recorded in burst.call_ids:
            await gw.originate(OriginateRequest(call_id=round_call_id(r, recorded), number="+8610000000"))
    await gw.ping()  # every Originate reply has been read
    stream = burst.stream(
        rounds, round_call_id, lambda r, recorded: server.originates[round_call_id(r, recorded)]
    )
    emitted_before = emitted
    started = time.perf_counter()
    server.play(stream)
    while ended < expected or bus_stage.published < emitted or bus_stage.queue:
        bus_stage.flushed.clear()
        await asyncio.wait_for(bus_stage.flushed.wait(), 600)
    finished = time.perf_counter()
    dropped = gw._proto.dropped if gw._proto is not None else 0
    await gw.close()
    publisher.cancel()
    await client.aclose()
    assert ended == expected, (ended, expected)
    print(
        f"    pipeline: {emitted - emitted_before} domain events published, {len(states)} calls tracked, "
        f"{dropped} events dropped by name before parsing",
        flush=True,
    )
    return rounds * len(burst.events) / (finished - started)


# --- main ---------------------------------------------------------------------------------------------


async def main(rounds: int, trials: int) -> dict[str, float]:
    burst = Burst.load()
    print(
        f"burst-20-mixed: {len(burst.events)} inbound events, {len(burst.call_ids)} calls per round; "
        f"{rounds} rounds = {rounds * len(burst.events)} events per run; best of {trials}",
        flush=True,
    )
    baseline, pipeline = 0.0, 0.0
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp)) as redis_server:
        for trial in range(1, trials + 1):
            a = await run_baseline(burst, rounds)
            print(f"  trial {trial}: (a) panoramisk alone     {a:10.0f} events/s", flush=True)
            b = await run_pipeline(burst, rounds, redis_server.url)
            print(f"  trial {trial}: (b) driver->state->bus   {b:10.0f} events/s", flush=True)
            baseline, pipeline = max(baseline, a), max(pipeline, b)
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
    args = parser.parse_args()
    rounds = args.rounds or (150 if args.quick else 600)
    trials = args.trials or (2 if args.quick else 3)
    print(f"python {platform.python_version()} on {platform.machine()}", flush=True)
    result = asyncio.run(main(rounds, trials))
    print(
        f"(a) {result['baseline_events_per_s']} events/s, (b) {result['pipeline_events_per_s']} events/s, "
        f"ratio {result['ratio']} (goal >= 0.5)"
    )
    print(json.dumps(result))
