"""Screen-pop latency: from the dialer's connect event to the pop received on the agent's WebSocket.

Three kinds of process over one real Redis (`EmbeddedRedis`) and one fresh SQLite database:
- the web server (`callcenter serve`, uvicorn) - the code under test: one bus subscription, the CRM
  lookup for each pop, fan-out to the agent's socket;
- the "dialer" (this script with `--role dialer`): at each connect event it stamps the call's
  `connected_at`, builds the pop with `callcenter.screenpop.pop_payload` and publishes `agent_state` and
  `screen_pop` with `Notifier`, the pop carrying the connect time;
- the clients (this process): N authenticated agent sockets (token in the first message), each
  checking that it receives its own pops and nothing else.

Half the numbers belong to CRM contacts with tags, notes and earlier calls, so the web process does the
whole enrichment for them. Pops are spread over the agents at a steady rate (`--rate`, default 100 per
second: 500 agents with a minute of talk and half a minute of wrap-up take about 6 calls a second, so
this is a rush hour many times over; `--rate 200` doubles it).

    python bench/screenpop.py            # 500 clients
    python bench/screenpop.py --quick    # 100 clients, well under a minute

Before that line it prints the split by stage (dialer: connect -> publish; bus + web: publish -> pushed
to the socket; socket: pushed -> parsed by the client). On a shared machine the tail follows whatever
else is running; the stages show where it went. `--detail` lists the slowest pops.

The output ends with one JSON line: {"clients", "pops", "p50_ms", "p99_ms", "max_ms"}.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "bench-secret-0123456789abcdef0123"
GOAL_P99_MS = 20.0


# --- set-up ------------------------------------------------------------------------------------------


def build_database(url: str, *, clients: int, pops_per_client: int) -> list[tuple[int, str]]:
    """Migrate and fill a fresh database: `clients` agents (one password hash for all, hashing 500
    passwords would take a minute), a running task, a lead and a call per pop, and CRM contacts with
    history for half the numbers. Answers the pop plan: (agent_id, call_id) in dial order."""
    from sqlalchemy import insert

    from callcenter.accounts import hash_password
    from callcenter.db import make_engine, upgrade
    from callcenter.models import Agent, Call, Campaign, Lead, Role, SkillGroup, User, UserRole
    from callcenter.seed import seed_base
    from crm.models import Contact, ContactPhone, ContactTag, Note, Tag

    upgrade(url)
    engine = make_engine(url)
    seed_base(engine)
    password_hash = hash_password("bench-password")
    now = time.time()
    plan: list[tuple[int, str]] = []
    with engine.begin() as c:
        role_id = c.execute(Role.__table__.select().where(Role.__table__.c.name == "agent")).one().id  # type: ignore[attr-defined]
        c.execute(
            insert(User),
            [
                {
                    "id": i,
                    "username": f"agent{i:04d}",
                    "display_name": f"Agent {i}",
                    "locale": "zh",
                    "password_hash": password_hash,
                    "is_active": True,
                    "token_version": 0,
                    "created_at": now,
                }
                for i in range(1, clients + 1)
            ],
        )
        c.execute(insert(UserRole), [{"user_id": i, "role_id": role_id} for i in range(1, clients + 1)])
        c.execute(
            insert(Agent),
            [
                {
                    "id": i,
                    "user_id": i,
                    "extension": str(10000 + i),
                    "state": "ready",
                    "state_since": now,
                    "idle_since": now,
                    "simulated": False,
                }
                for i in range(1, clients + 1)
            ],
        )
        c.execute(insert(SkillGroup), [{"id": 1, "name": "Bench", "description": ""}])
        c.execute(
            insert(Campaign),
            [
                {
                    "id": 1,
                    "name": "续保外呼 Renewals",
                    "state": "running",
                    "skill_group_id": 1,
                    "dispositions": json.dumps(["有意向", "无意向", "再联系", "号码错误"]),
                }
            ],
        )
        c.execute(insert(Tag), [{"id": 1, "name": "vip"}, {"id": 2, "name": "续保"}])
        leads, calls, contacts, phones, tags, notes = [], [], [], [], [], []
        n = 0
        for _round in range(pops_per_client):
            for agent in range(1, clients + 1):
                n += 1
                number = f"+86138{n:08d}"
                call_id = str(uuid.uuid4())
                leads.append(
                    {
                        "id": n,
                        "campaign_id": 1,
                        "row_no": n,
                        "number": number,
                        "fields": json.dumps(
                            {
                                "姓名": f"客户{n}",
                                "plan": "Gold",
                                "到期日": "2026-12-31",
                                "城市": "上海",
                                "保单号": f"P{n:08d}",
                            },
                            ensure_ascii=False,
                        ),
                        "status": "claimed",
                        "attempts": 1,
                    }
                )
                calls.append(
                    _call(
                        id=call_id,
                        lead_id=n,
                        number=number,
                        state="agent_ringing",
                        agent_id=agent,
                        created_at=now,
                        answered_at=now,
                    )
                )
                if n % 2 == 0:  # a known customer, with history
                    contacts.append(
                        {
                            "id": n,
                            "name": f"客户{n}",
                            "company": "ACME",
                            "email": "",
                            "created_at": now,
                            "updated_at": now,
                        }
                    )
                    phones.append({"contact_id": n, "number": number, "label": ""})
                    tags += [{"contact_id": n, "tag_id": 1}, {"contact_id": n, "tag_id": 2}]
                    for k in range(2):
                        old = str(uuid.uuid4())
                        at = now - 86400 * (k + 1)
                        calls.append(
                            _call(
                                id=old,
                                number=number,
                                state="ended",
                                agent_id=agent,
                                created_at=at,
                                connected_at=at,
                                ended_at=at + 95,
                                result="answered",
                                disposition="再联系",
                            )
                        )
                        notes.append(
                            {
                                "contact_id": n,
                                "author_id": agent,
                                "call_id": old,
                                "body": f"第{k + 1}次沟通：客户考虑中",
                                "created_at": now - 86400 * (k + 1),
                            }
                        )
                plan.append((agent, call_id))
        c.execute(insert(Lead), leads)
        c.execute(insert(Call), calls)
        if contacts:
            c.execute(insert(Contact), contacts)
            c.execute(insert(ContactPhone), phones)
            c.execute(insert(ContactTag), tags)
            c.execute(insert(Note), notes)
    with engine.connect() as c:
        c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return plan


def _call(**values: Any) -> dict[str, Any]:
    """A `call` row for a bulk insert (every row of one insert has the same keys)."""
    row: dict[str, Any] = {
        "campaign_id": 1,
        "lead_id": None,
        "direction": "outbound",
        "answered_at": None,
        "connected_at": None,
        "ended_at": None,
        "result": "",
        "disposition": "",
    }
    row.update(values)
    return row


def token_for(user_id: int) -> str:
    """An API token exactly as `webui.auth.issue_token` makes it (what POST /api/auth/token answers)."""
    from itsdangerous import URLSafeTimedSerializer

    from webui.auth import TOKEN_SALT

    return URLSafeTimedSerializer(SECRET, salt=TOKEN_SALT).dumps({"uid": user_id, "tv": 0})


def start_web(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "callcenter.cli", "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # start-up of another process: nothing to wait on but the port
        if proc.poll() is not None:
            raise RuntimeError(f"the web server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the web server did not start")


def check_real_login(port: int) -> None:
    """One real sign-in, so the minted tokens are known to be what the server issues."""
    body = json.dumps({"username": "agent0001", "password": "bench-password"}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/auth/token", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200 and json.load(resp)["access_token"]


# --- the dialer process ------------------------------------------------------------------------------


def run_dialer(args: argparse.Namespace) -> None:
    """Wait for "go", then connect the planned calls at `rate` per second: stamp the call, build the
    pop from the database, publish agent_state + screen_pop (with the connect time)."""
    import redis
    from sqlalchemy import update
    from sqlmodel import Session

    from callcenter.bus import Bus
    from callcenter.db import make_engine
    from callcenter.models import Call
    from callcenter.notifier import Notifier
    from callcenter.screenpop import pop_payload

    plan = json.loads(Path(args.plan).read_text())
    engine = make_engine(args.db)
    client = redis.Redis.from_url(args.redis, decode_responses=True)
    notifier = Notifier(Bus(client))
    with Session(engine) as session:  # a dialer that has been running: statements compiled, pool open
        pop_payload(session, plan[0][1])
        session.execute(update(Call).where(Call.id == "none").values(connected_at=0.0))  # type: ignore[arg-type]
        session.rollback()
    client.ping()
    gc.collect()
    gc.freeze()  # as a long-running dialer should: its start-up heap is no work for the collector
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()  # "go"
    interval = 1.0 / args.rate
    start = time.perf_counter()
    with Session(engine) as session:
        for i, (agent_id, call_id) in enumerate(plan):
            due = start + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            connect_at = time.time()  # the connect event
            session.execute(
                update(Call).where(Call.id == call_id).values(state="connected", connected_at=connect_at)  # type: ignore[arg-type]
            )
            session.commit()
            pop = pop_payload(session, call_id)
            assert pop is not None
            notifier.agent_state(
                agent_id=agent_id,
                extension=pop["extension"],
                state="on_call",
                since=connect_at,
                call_id=call_id,
                campaign_id=pop["campaign_id"],
            )
            notifier.screen_pop(
                agent_id=agent_id,
                payload={**pop, "bench_connect_at": connect_at, "bench_publish_at": time.time()},
            )
    sys.stdout.write(f"done {len(plan)} {time.perf_counter() - start:.2f}s\n")
    sys.stdout.flush()


# --- the clients -------------------------------------------------------------------------------------


class Client:
    def __init__(self, agent_id: int, expected: set[str]) -> None:
        self.agent_id = agent_id
        self.expected = expected
        self.latencies: list[float] = []
        # (dialer: connect -> publish, bus + web: publish -> pushed, socket: pushed -> received)
        self.stages: list[tuple[float, float, float]] = []
        self.connects: list[float] = []
        self.foreign: list[str] = []
        self.received: set[str] = set()
        self.crm_missing = 0
        self.done = asyncio.Event()
        if not expected:
            self.done.set()


async def run_client(client: Client, url: str, ready: asyncio.Event, counter: list[int], total: int) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, max_size=2**22, ping_interval=None, open_timeout=60) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token_for(client.agent_id)}))
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello" and hello["agent"]["agent_id"] == client.agent_id, hello
        counter[0] += 1
        if counter[0] == total:
            ready.set()
        async for raw in ws:
            now = time.time()
            msg = json.loads(raw)
            if msg["type"] != "screen_pop":
                continue
            if msg["agent_id"] != client.agent_id or msg["call_id"] not in client.expected:
                client.foreign.append(msg["call_id"])
                continue
            client.latencies.append(now - msg["bench_connect_at"])
            client.connects.append(msg["bench_connect_at"])
            pushed = msg.get("server_time", now)
            client.stages.append(
                (
                    msg["bench_publish_at"] - msg["bench_connect_at"],
                    pushed - msg["bench_publish_at"],
                    now - pushed,
                )
            )
            if not msg.get("crm"):
                client.crm_missing += 1
            client.received.add(msg["call_id"])
            if client.received == client.expected:
                client.done.set()


async def drive(
    args: argparse.Namespace, port: int, plan: list[tuple[int, str]], dialer: Any
) -> list[Client]:
    expected: dict[int, set[str]] = {}
    for agent_id, call_id in plan:
        expected.setdefault(agent_id, set()).add(call_id)
    clients = [Client(a, expected.get(a, set())) for a in range(1, args.clients + 1)]
    ready = asyncio.Event()
    counter = [0]
    url = f"ws://127.0.0.1:{port}/ws?streams=agent"
    tasks = [asyncio.create_task(run_client(c, url, ready, counter, len(clients))) for c in clients]
    waiting = asyncio.ensure_future(ready.wait())
    await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED, timeout=120)
    if not ready.is_set():
        for t in tasks:
            if t.done() and t.exception():
                raise t.exception()  # type: ignore[misc]
        raise RuntimeError(f"only {counter[0]} of {len(clients)} clients connected")
    print(
        f"{len(clients)} agent sockets authenticated; dialling {len(plan)} pops at {args.rate}/s", flush=True
    )
    gc.collect()
    gc.freeze()  # the measuring clients' own collections are not the server's latency
    if args.detail:
        print(f"go at {time.time():.3f}", flush=True)
    dialer.stdin.write(b"go\n")
    dialer.stdin.flush()
    budget = len(plan) / args.rate + 30
    await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in clients)), budget)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return clients


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 clients, a short run")
    parser.add_argument("--clients", type=int, default=None)
    parser.add_argument("--pops-per-client", type=int, default=None)
    parser.add_argument("--rate", type=float, default=None, help="connect events per second")
    parser.add_argument("--detail", action="store_true", help="also print the 15 slowest pops by stage")
    parser.add_argument("--role", default="bench", choices=["bench", "dialer"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "dialer":
        run_dialer(args)
        return
    args.clients = args.clients or (100 if args.quick else 500)
    args.pops_per_client = args.pops_per_client or (3 if args.quick else 4)
    args.rate = args.rate or 100.0

    from callcenter.redis_server import EmbeddedRedis, free_port

    tmp = Path(tempfile.mkdtemp(prefix="bench-screenpop-"))
    redis_server = EmbeddedRedis(tmp / "redis")
    web = dialer = None
    try:
        redis_server.start()
        db = f"sqlite:///{tmp / 'bench.db'}"
        t0 = time.perf_counter()
        plan = build_database(db, clients=args.clients, pops_per_client=args.pops_per_client)
        random.Random(6).shuffle(plan)
        plan_file = tmp / "plan.json"
        plan_file.write_text(json.dumps(plan))
        print(
            f"database: {args.clients} agents, {len(plan)} calls in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )

        env = dict(os.environ)
        env.update(
            {
                "CALLCENTER_MODE": "dev",
                "CALLCENTER_SECRET_KEY": SECRET,
                "CALLCENTER_DATABASE_URL": db,
                "CALLCENTER_REDIS_URL": redis_server.url,
                "CALLCENTER_DATA_DIR": str(tmp),
                "CALLCENTER_LOG_LEVEL": "WARNING",
                "PYTHONPATH": os.environ.get("BENCH_EXTRA_PATH", "") + str(ROOT),
            }
        )
        port = free_port()
        web = start_web(env, port, tmp / "web.log")
        check_real_login(port)
        dialer = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--role",
                "dialer",
                "--db",
                db,
                "--redis",
                redis_server.url,
                "--plan",
                str(plan_file),
                "--rate",
                str(args.rate),
            ],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert dialer.stdout is not None and dialer.stdout.readline().strip() == b"ready"

        try:
            import uvloop

            runner: Any = uvloop.run
        except ImportError:  # pragma: no cover
            runner = asyncio.run
        clients = runner(drive(args, port, plan, dialer))
        print(dialer.stdout.readline().decode().strip(), flush=True)
    finally:
        for proc in (dialer, web):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    latencies = sorted(x * 1000 for c in clients for x in c.latencies)
    foreign = sum(len(c.foreign) for c in clients)
    missing_crm = sum(c.crm_missing for c in clients)
    p50, p99, worst = percentile(latencies, 50), percentile(latencies, 99), latencies[-1]
    print(
        f"{platform.machine()} nproc={os.cpu_count()} python={platform.python_version()}: "
        f"{len(latencies)} pops to {len(clients)} sockets, misrouted {foreign}, "
        f"without CRM part {missing_crm}; "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {worst:.2f} ms "
        f"(goal p99 <= {GOAL_P99_MS:.0f} ms: {'met' if p99 <= GOAL_P99_MS else 'NOT met'})",
        flush=True,
    )
    stages = [c.stages for c in clients]
    for i, name in enumerate(
        ("dialer (connect -> publish)", "bus + web (publish -> pushed)", "socket (pushed -> client)")
    ):
        part = sorted(x[i] * 1000 for group in stages for x in group)
        print(
            f"  {name:<32} p50 {percentile(part, 50):6.2f} ms  p99 {percentile(part, 99):6.2f} ms  "
            f"max {part[-1]:6.2f} ms"
        )
    if args.detail:
        flat = sorted(((c_at, st) for c in clients for c_at, st in zip(c.connects, c.stages, strict=True)))
        t_first = flat[0][0]
        for c_at, st in sorted(flat, key=lambda x: -sum(x[1]))[:15]:
            print(f"  t+{c_at - t_first:6.3f}s  " + " ".join(f"{x * 1000:6.2f}" for x in st))
    if foreign or missing_crm or len(latencies) != len(plan):
        raise SystemExit("a pop went to the wrong socket, lacked its CRM part, or was lost")
    print(
        json.dumps(
            {
                "clients": len(clients),
                "pops": len(latencies),
                "p50_ms": round(p50, 2),
                "p99_ms": round(p99, 2),
                "max_ms": round(worst, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
