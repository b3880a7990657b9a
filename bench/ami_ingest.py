"""AMI ingest: recorded Asterisk events through (a) panoramisk alone and (b) the real dialer.

The inbound events of `burst-20-mixed.jsonl` (20 calls: 5 answered, 5 busy, 5 no answer, 5
congestion; 285 events of which a third are VarSet/Newexten noise) are replayed `--rounds` times,
each round with its own call ids and channel names, over a loopback TCP socket, as fast as the reader
takes them, into:

(a) panoramisk 1.4's `Manager` with one catch-all callback (`register_event("*", ...)`), the baseline;
(b) the dialer process as production runs it, without the web: `DialerRunner` (the async shell) with
    `AsteriskGateway` as its gateway, `DialerCore` with its `SqlStore` on a fresh SQLite database
    (`callcenter.db.upgrade` + `make_engine`: WAL, synchronous=NORMAL) and its `Notifier` publishing
    to a real Redis started here with `EmbeddedRedis`. That is: AMI framing, the driver's name filter
    (events it has no use for are dropped unparsed), parsing and call tracking -> domain events ->
    per runner batch, one store transaction in which `DialerCore.handle` updates the call's row for
    every ringing, answer and end (agent ringing too), settles the lead of every ended call, reserves
    a ready agent for every answered call and releases it when the customer hangs up (compare-and-set
    on the agent row, each move published as `agent_state` on the agent's and the monitor topic,
    plus `call_ended` to the agent), and re-paces the task (claims nothing: every lead is out) -> the
    commit, then that batch's bus messages in one Redis pipeline -> the commands the core returned ->
    the next batch; plus the runner's once-a-second tick, refresh and `task_stats` publish. The
    commands are one `ConnectAgent` per answered call; the recording's 8 s between answer and hang-up
    pass in microseconds here, so the driver has nearly always read the hang-up already and refuses
    it without writing anything (no call), and the few the core still follows are abandoned and
    counted in the warnings line. The busy, no-answer and congestion calls reach the bus only through
    `task_stats`: the Notifier has no per-call message for calls without an agent.

The calls of (b) are ones the core itself placed: a running ratio task is seeded (`seed_world`) with
one lead per call of every round, whose number is the recorded number followed by the round; the
runner claims them all and originates them through the driver (untimed), and the replay server
uses the `Channel` of each Originate to give the round's recorded call the core's call id and the
driver's ActionID.

Both read the very same bytes (the replay ignores the `Events:` subscription, so the driver's own
class filter does not shrink (b)'s input), in the same process and run, best of `--trials`; (b)
gets them in slices cut at message boundaries so that the replies to the dialer's actions can go in
between, as a real Asterisk interleaves them. (b) is timed from the first byte to the end of the
runner batch (transaction committed, bus messages published) after which the core follows no call
any more: every call has ended in the database.

    python bench/ami_ingest.py [--quick] [--rounds N] [--trials N]

The output ends with one JSON line: {"baseline_events_per_s": .., "pipeline_events_per_s": .., "ratio": ..}
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import logging
import platform
import re
import socket
import sys
import tempfile
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
from panoramisk import Manager  # noqa: E402
from sqlalchemy import text as sql  # noqa: E402

from callcenter.gateways.asterisk import AsteriskGateway  # noqa: E402
from callcenter.redis_server import EmbeddedRedis  # noqa: E402

TRACE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "asterisk-20" / "burst-20-mixed.jsonl"
USER, SECRET = "bench", "bench-secret"
_LOGIN_NOISE = ("Event: FullyBooted", "Event: SuccessfulAuth")
DIAL_TEMPLATE = "SIP/trunk/{number}"
AGENTS = 10  # ready agents of the task's skill group (a round has at most 5 answered calls at once)
SLICE = 16 << 10  # (b) gets the stream in slices of whole messages of about this size


# --- the recorded burst ---------------------------------------------------------------------------


@dataclasses.dataclass
class Burst:
    events: list[str]  # inbound events, in order
    call_ids: list[str]  # call-b000 ...
    action_ids: dict[str, str]  # call id -> the Originate's ActionID in the recording
    channels: list[str]  # channel names Asterisk made
    numbers: dict[str, str]  # call id -> the number the recording dialled

    @classmethod
    def load(cls, path: Path = TRACE) -> Burst:
        events, call_ids, action_ids, numbers = [], [], {}, {}
        for line in path.read_text().splitlines():
            item = json.loads(line)
            data = item["data"]
            if item["dir"] == "out":
                if data.startswith("Action: Originate"):
                    cid = re.search(r"ChannelId: (\S+)", data).group(1)  # type: ignore[union-attr]
                    call_ids.append(cid)
                    action_ids[cid] = re.search(r"ActionID: (\S+)", data).group(1)  # type: ignore[union-attr]
                    numbers[cid] = re.search(r"Channel: \S+/(\d+)\r\n", data).group(1)  # type: ignore[union-attr]
            elif data.startswith("Event: ") and not data.startswith(_LOGIN_NOISE):
                events.append(data)
        channels = sorted(set(re.findall(r"Channel: (SIP/[\w-]+-[0-9a-f]{8})\r\n", "".join(events))))
        return cls(events, call_ids, action_ids, channels, numbers)

    def rounds(self, rounds: int, call_id: Any, action_id: Any) -> list[str]:
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
        return out

    def stream(self, rounds: int, call_id: Any, action_id: Any) -> bytes:
        return "".join(self.rounds(rounds, call_id, action_id)).encode()

    def slices(self, rounds: int, call_id: Any, action_id: Any, size: int = SLICE) -> list[bytes]:
        """The same bytes as `stream`, cut into slices of whole messages."""
        out, part, length = [], [], 0
        for round_text in self.rounds(rounds, call_id, action_id):
            for message in round_text.split("\r\n\r\n")[:-1]:
                part.append(message + "\r\n\r\n")
                length += len(message) + 4
                if length >= size:
                    out.append("".join(part).encode())
                    part, length = [], 0
        if part:
            out.append("".join(part).encode())
        return out


def round_call_id(r: int, recorded: str) -> str:
    return f"r{r:05d}-{recorded}"


# --- a minimal AMI server in its own thread -----------------------------------------------------------


_REPLIES = {
    "login": ("Success", "Message: Authentication accepted"),
    "ping": ("Success", "Ping: Pong\r\nTimestamp: 0"),
    "originate": ("Success", "Message: Originate successfully queued"),
    "logoff": ("Goodbye", "Message: Thanks for all the fish."),
    # Asterisk's own replies to the actions the dialer sends on a call (the channel is up).
    "redirect": ("Success", "Message: Redirect successful"),
    "setvar": ("Success", "Message: Variable Set"),
    "hangup": ("Success", "Message: Channel Hungup"),
    "coreshowchannels": ("Success", "EventList: start\r\nMessage: Channels will follow"),
}


class ReplayServer(LoopbackReplayServer):
    """Loopback AMI: banner, Login, Ping, Logoff, async Originate, and the call actions (Redirect,
    Setvar, Hangup; CoreShowChannels lists no channel); then, on `play`, the prepared stream."""

    separator = b"\r\n\r\n"

    def __init__(self) -> None:
        self.originates: dict[str, str] = {}  # ChannelId -> ActionID
        self.dialled: dict[str, str] = {}  # number -> ChannelId
        self.actions: collections.Counter[str] = collections.Counter()
        super().__init__()

    def greet(self, conn: socket.socket) -> None:
        self._go.clear()
        self._send(b"Asterisk Call Manager/9.0.0\r\n")

    def reply(self, message: bytes) -> str:
        headers = dict(line.split(": ", 1) for line in message.decode().split("\r\n") if ": " in line)
        action, aid = headers.get("Action", "").lower(), headers.get("ActionID", "")
        self.actions[action] += 1
        out = ""
        if action in _REPLIES:
            out += f"Response: {_REPLIES[action][0]}\r\nActionID: {aid}\r\n{_REPLIES[action][1]}\r\n\r\n"
        if action == "coreshowchannels":
            out += (
                f"Event: CoreShowChannelsComplete\r\nActionID: {aid}\r\nEventList: Complete\r\n"
                "ListItems: 0\r\n\r\n"
            )
        if action == "originate":
            channel_id = headers.get("ChannelId", "")
            self.originates[channel_id] = aid
            self.dialled[headers.get("Channel", "").rpartition("/")[2]] = channel_id
        return out


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


# --- (b) the dialer -----------------------------------------------------------------------------------


def seed(path: Path, burst: Burst, rounds: int) -> Any:
    numbers = [lead_number(r, burst.numbers[c]) for r in range(rounds) for c in burst.call_ids]
    return seed_ingest_task(path, numbers, agents=AGENTS, ring_timeout_s=8, caller_name="Campaign 7")


async def run_pipeline(burst: Burst, rounds: int, redis_url: str, db_path: Path) -> float:
    total_calls = rounds * len(burst.call_ids)
    engine = seed(db_path, burst, rounds)
    tally = LogTally()
    logging.getLogger("callcenter").addHandler(tally)
    server = ReplayServer()
    sync_redis = redis.Redis.from_url(redis_url)
    async_redis = aioredis.Redis.from_url(redis_url)
    gw = AsteriskGateway(
        host="127.0.0.1",
        port=server.port,
        username=USER,
        secret=SECRET,
        dial_template=DIAL_TEMPLATE,
        keepalive_s=3600,
        timeout_s=30,
    )
    runner = TimedRunner(
        engine,
        {"default": gw},
        redis=sync_redis,
        aredis=async_redis,
        dialer_id="bench-ami",
        command_timeout_s=30,
        originates_per_s=1e6,  # the replay server has no session-rate limit: this measures ingest
    )
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    # Untimed: the runner claims every lead and originates it through the driver.
    deadline = time.monotonic() + 120
    while len(server.originates) < total_calls or len(runner.core.calls) < total_calls:
        if running.done() or time.monotonic() > deadline:
            raise RuntimeError(f"only {len(server.originates)} of {total_calls} calls originated")
        await asyncio.sleep(0.05)
    await gw.ping()  # every Originate reply has been read
    call_of = {
        (r, c): server.dialled[lead_number(r, burst.numbers[c])]
        for r in range(rounds)
        for c in burst.call_ids
    }
    slices = burst.slices(
        rounds, lambda r, c: call_of[(r, c)], lambda r, c: server.originates[call_of[(r, c)]]
    )
    published_before = publish_calls(sync_redis)
    actions_before = server.actions.copy()
    cpu_before = time.process_time()
    runner.all_ended = asyncio.get_running_loop().create_future()
    started = time.perf_counter()
    server.play(slices)
    finished = await asyncio.wait_for(runner.all_ended, 600)
    cpu = time.process_time() - cpu_before
    published = publish_calls(sync_redis) - published_before
    actions = server.actions - actions_before
    dropped = gw._proto.dropped if gw._proto is not None else 0
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
        f"{with_agent} got an agent; {published} messages published on the bus; actions during the "
        f"replay {dict(actions)}; {dropped} events dropped by name before parsing; {cpu:.2f} s CPU in "
        "this process; "
        f"warnings the dialer logged: {dict(tally.counts) or 'none'}",
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
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as redis_server:
        for trial in range(1, trials + 1):
            a = await run_baseline(burst, rounds)
            print(f"  trial {trial}: (a) panoramisk alone     {a:10.0f} events/s", flush=True)
            b = await run_pipeline(burst, rounds, redis_server.url, Path(tmp) / f"b{trial}.db")
            print(f"  trial {trial}: (b) driver->dialer->bus  {b:10.0f} events/s", flush=True)
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
