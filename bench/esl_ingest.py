"""ESL ingest: recorded FreeSWITCH events through (a) a bare ESL reader and (b) the real dialer.

The inbound events of `burst-20-mixed.jsonl` (20 calls: 5 answered, 5 busy, 5 no answer, 5 failed with
503; 105 events, 4.5 KB each on average, with all channel variables) are replayed `--rounds` times,
each round with its own call ids and Job-UUIDs, over a loopback TCP socket, as fast as the reader takes
them, into:

(a) a bare ESL reader: `EslFramer` cuts the stream into messages and every event's header block is
    split into its headers (`parse_event(...).raw`: the same framing and parsing code the driver
    uses, nothing else), as a reader that hands its events on as dicts (greenswitch) does: the
    baseline;
(b) the dialer process as production runs it, without the web: `DialerRunner` (the async shell) with
    `FreeswitchGateway` as its gateway, `DialerCore` with its `SqlStore` on a fresh SQLite database
    (`callcenter.db.upgrade` + `make_engine`: WAL, synchronous=NORMAL) and its `Notifier` publishing
    to a real Redis started here with `EmbeddedRedis`. That is: ESL framing, the driver's pre-parse
    filter (events it has no use for are dropped unparsed), parsing (of the headers it reads: an
    event's header is found when asked for, not the whole block split), call tracking and cause mapping
    -> domain events -> per runner batch, one store transaction in which `DialerCore.handle` updates
    the call's row for every ringing, answer and end (agent ringing too), settles the lead of every
    ended call, reserves a ready agent for every answered call and releases it when the customer
    hangs up (compare-and-set on the agent row, each move published as `agent_state` on the agent's
    and the monitor topic, plus `call_ended` to the agent), and re-paces the task (claims nothing:
    every lead is out) -> the commit, then that batch's bus messages in one Redis pipeline -> the
    commands the core returned -> the next batch; plus the runner's once-a-second tick, refresh and
    `task_stats` publish. The commands are one `ConnectAgent` per answered call; the recording's 8 s
    between answer and hang-up pass in microseconds here, so the driver has nearly always read the
    hang-up already and refuses it without writing anything (no call), and the few the core still
    follows are abandoned and counted in the warnings line. The busy, no-answer and failed calls
    reach the bus only through `task_stats`: the Notifier has no per-call message for calls without
    an agent.

The calls of (b) are ones the core itself placed: a running ratio task is seeded (`seed_world`) with
one lead per call of every round, whose number is the recorded number followed by the round; the
runner claims them all and originates them through the driver (untimed), and the replay server uses
the number in each `bgapi originate` to give the round's recorded call the core's call id (its
`origination_uuid`) and the driver's Job-UUID (same lengths, so every Content-Length stays right).

Both read the very same bytes in the same process, best of `--trials`; (b) gets them in slices cut at
event boundaries so that the replies to the dialer's commands can go in between, as FreeSWITCH
interleaves them. (b) is timed from the first byte to the end of the runner batch (transaction
committed, bus messages published) after which the core follows no call any more: every call has
ended in the database. Each trial also runs (b) with the driver's pre-parse filter off (every
event handed to the driver), for information. `--greenswitch` adds, for comparison, greenswitch 0.0.19 reading
the same stream (in its own thread with its gevent hub, one catch-all handler).

    python bench/esl_ingest.py [--quick] [--rounds N] [--trials N] [--greenswitch]

The output ends with one JSON line: {"baseline_events_per_s": .., "pipeline_events_per_s": .., "ratio": ..}
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
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

import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from common import (  # noqa: E402
    LogTally,
    LoopbackReplayServer,
    TimedRunner,
    lead_number,
    publish_calls,
    seed_ingest_task,
)
from sqlalchemy import text as sql  # noqa: E402

from callcenter.gateways.esl_wire import EslFramer, parse_event  # noqa: E402
from callcenter.gateways.freeswitch import FreeswitchGateway  # noqa: E402
from callcenter.redis_server import EmbeddedRedis  # noqa: E402

TRACE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "freeswitch" / "burst-20-mixed.jsonl"
PASSWORD = "bench-password"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
DIAL_TEMPLATE = "sofia/cc/{number}"
AGENTS = 10  # ready agents of the task's skill group (a round has at most 5 answered calls at once)
SLICE = 16 << 10  # (b) gets the stream in slices of whole events of about this size


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

    def stream(self, rounds: int, jobs: dict[str, str] | None = None, call_id: Any = None) -> bytes:
        """`rounds` copies; with `jobs` (round call id -> the driver's Job-UUID), ids made per round by
        `call_id(round, recorded uuid)` (default `round_call_id`), which must keep their length."""
        if jobs is None:
            return self.text.encode() * rounds
        return b"".join(self._rounds(rounds, jobs, call_id or self.round_call_id))

    def _rounds(self, rounds: int, jobs: dict[str, str], call_id: Any) -> list[bytes]:
        recorded_job = {j: u for u, j, _ in self.calls}
        out = []
        for r in range(rounds):
            parts = list(self._parts)
            for i in range(1, len(parts), 2):
                token = parts[i]
                uid = recorded_job.get(token, token)
                live = call_id(r, uid)
                parts[i] = jobs[live] if token in recorded_job else live
            out.append("".join(parts).encode())
        return out

    def slices(self, rounds: int, jobs: dict[str, str], call_id: Any, size: int = SLICE) -> list[bytes]:
        """The bytes of `stream(rounds, jobs, call_id)`, cut into slices of whole events (ids keep
        their length, so every round's events sit where the recorded ones do)."""
        cuts, at, last = [], 0, 0
        for event in self.events:
            at += len(event.encode())
            if at - last >= size:
                cuts.append(at)
                last = at
        if not cuts or cuts[-1] != at:
            cuts.append(at)
        out = []
        for data in self._rounds(rounds, jobs, call_id):
            assert len(data) == at, "an id changed length"
            start = 0
            for end in cuts:
                out.append(data[start:end])
                start = end
        return out


# --- a minimal ESL server in its own thread --------------------------------------------------------


class ReplayServer(LoopbackReplayServer):
    """Loopback ESL: auth, `event plain`, `bgapi originate` (+OK Job-UUID), `api ...` and `exit`; then,
    on `play`, the prepared stream (and, without auth, EOF: the bare reader stops there)."""

    def __init__(self, *, auth: bool = True) -> None:
        self.auth = auth
        self.jobs: dict[str, str] = {}  # origination_uuid -> Job-UUID
        self.dialled: dict[str, str] = {}  # number -> origination_uuid
        self.commands: collections.Counter[str] = collections.Counter()
        super().__init__()

    def greet(self, conn: socket.socket) -> None:
        if self.auth:
            self._send(b"Content-Type: auth/request\n\n")

    def streamed(self, conn: socket.socket) -> None:
        if not self.auth:
            conn.shutdown(socket.SHUT_WR)

    def reply(self, message: bytes) -> str:
        line, _, rest = message.decode().partition("\n")
        words = line.split(" ", 2)
        self.commands[words[1] if words[0] in ("api", "bgapi") and len(words) > 1 else words[0]] += 1
        if line.startswith("auth "):
            text = "+OK accepted" if line == f"auth {PASSWORD}" else "-ERR invalid"
            return f"Content-Type: command/reply\nReply-Text: {text}\n\n"
        if line.startswith("event "):
            return "Content-Type: command/reply\nReply-Text: +OK event listener enabled plain\n\n"
        if line.startswith("bgapi "):
            job = rest.removeprefix("Job-UUID: ").strip()
            m = re.search(r"origination_uuid=([^,}]+)", line)
            if m:
                self.jobs[m.group(1)] = job
                number = re.search(r"}sofia/cc/(\d+)", line)
                if number:
                    self.dialled[number.group(1)] = m.group(1)
            return f"Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job}\nJob-UUID: {job}\n\n"
        if line.startswith("api "):
            body = '{"row_count":0}\n' if "show channels" in line else "+OK\n"
            return f"Content-Type: api/response\nContent-Length: {len(body)}\n\n{body}"
        if line == "exit":
            return "Content-Type: command/reply\nReply-Text: +OK bye\n\n"
        return ""


# --- (a) the bare reader ---------------------------------------------------------------------------


class BareReader(asyncio.Protocol):
    """Frames the stream and parses every event; keeps nothing but a count."""

    def __init__(self, done: asyncio.Future[float]) -> None:
        self.framer = EslFramer()
        self.count = 0
        self.done = done

    def data_received(self, data: bytes) -> None:
        for headers, body in self.framer.feed(data):
            is_event = headers.get("Content-Type") == "text/event-plain"
            if is_event and parse_event(body).raw.get("Event-Name"):  # every header split
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


# --- (b) the dialer ------------------------------------------------------------------------------


def seed(path: Path, burst: Burst, rounds: int) -> Any:
    numbers = [lead_number(r, number) for r in range(rounds) for _, _, number in burst.calls]
    return seed_ingest_task(path, numbers, agents=AGENTS, ring_timeout_s=30, caller_name="CallCenter")


async def run_pipeline(
    burst: Burst, rounds: int, redis_url: str, db_path: Path, *, prefilter: bool = True
) -> float:
    total_calls = rounds * len(burst.calls)
    engine = seed(db_path, burst, rounds)
    tally = LogTally()
    logging.getLogger("callcenter").addHandler(tally)
    server = ReplayServer()
    sync_redis = redis.Redis.from_url(redis_url)
    async_redis = aioredis.Redis.from_url(redis_url)
    gw = FreeswitchGateway(
        host="127.0.0.1",
        port=server.port,
        password=PASSWORD,
        keepalive_s=3600,
        timeout_s=30,
        dial_template=DIAL_TEMPLATE,
        prefilter=prefilter,
    )
    runner = TimedRunner(
        engine,
        {"default": gw},
        redis=sync_redis,
        aredis=async_redis,
        dialer_id="bench-esl",
        command_timeout_s=30,
        originates_per_s=1e6,  # the replay server has no session-rate limit: this measures ingest
    )
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    # Untimed: the runner claims every lead and originates it through the driver.
    deadline = time.monotonic() + 120
    while len(server.jobs) < total_calls or len(runner.core.calls) < total_calls:
        if running.done() or time.monotonic() > deadline:
            raise RuntimeError(f"only {len(server.jobs)} of {total_calls} calls originated")
        await asyncio.sleep(0.05)
    await gw.active_calls()  # every originate reply has been read
    call_of = {
        (r, uid): server.dialled[lead_number(r, number)]
        for r in range(rounds)
        for uid, _, number in burst.calls
    }
    slices = burst.slices(rounds, server.jobs, lambda r, uid: call_of[(r, uid)])
    published_before = publish_calls(sync_redis)
    commands_before = server.commands.copy()
    cpu_before = time.process_time()
    runner.all_ended = asyncio.get_running_loop().create_future()
    started = time.perf_counter()
    server.play(slices)
    finished = await asyncio.wait_for(runner.all_ended, 600)
    cpu = time.process_time() - cpu_before
    published = publish_calls(sync_redis) - published_before
    commands = server.commands - commands_before
    skipped = gw._conn.skipped if gw._conn is not None else 0
    stop.set()
    runner.wake.set()
    await asyncio.wait_for(running, 30)
    await runner.close()
    logging.getLogger("callcenter").removeHandler(tally)
    sync_redis.close()
    await async_redis.aclose()
    with engine.connect() as c:
        results = dict(c.execute(sql("SELECT result, count(*) FROM call GROUP BY result")).all())
        with_agent = c.execute(sql("SELECT count(*) FROM call WHERE agent_id IS NOT NULL")).scalar_one()
    engine.dispose()
    assert sum(results.values()) == total_calls and "" not in results, results
    print(
        f"    pipeline: {total_calls} calls placed by the core and ended in the database {results}; "
        f"{with_agent} got an agent; {published} messages published on the bus; commands during the "
        f"replay {dict(commands)}; {skipped} events dropped unparsed; {cpu:.2f} s CPU in this process; "
        f"warnings the dialer logged: {dict(tally.counts) or 'none'}",
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
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as redis_server:
        for trial in range(1, trials + 1):
            a = await run_baseline(burst, rounds)
            print(f"  trial {trial}: (a) bare ESL reader      {a:10.0f} events/s", flush=True)
            b = await run_pipeline(burst, rounds, redis_server.url, Path(tmp) / f"b{trial}.db")
            print(f"  trial {trial}: (b) driver->dialer->bus  {b:10.0f} events/s", flush=True)
            c = await run_pipeline(
                burst, rounds, redis_server.url, Path(tmp) / f"c{trial}.db", prefilter=False
            )
            print(f"  trial {trial}: (b) without the pre-filter {c:7.0f} events/s", flush=True)
            baseline, pipeline, parsed_all = max(baseline, a), max(pipeline, b), max(parsed_all, c)
    print(
        f"  (b) as shipped drops unparsed the {burst.unread} events per round whose names it has no use for "
        f"(and those of calls already ended); with every event handed to the driver: "
        f"{parsed_all:.0f} events/s, "
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
