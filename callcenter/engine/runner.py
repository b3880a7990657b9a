"""The dialer process: the async shell around `DialerCore`.

It starts the gateways, feeds their events and a tick (at most one second apart, sooner when a
timer is due) to the core inside one database transaction per batch, then sends the commands the
core returned. The bus messages the core's `Notifier` makes during a batch are queued in a Redis
pipeline and go out in one round trip once the batch's transaction has committed (none if it rolled
back), so the web never hears of a state the database does not have. Requests from the web (agent
state changes, task changes, preview clicks, spy) arrive on the `dialer` bus topic; replies go back
on a per-request Redis list.

If the core raises, the batch's transaction rolls back and the core is rebuilt from the database and
the PBX's channel list, exactly as after a restart: nothing lives only in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy.engine import Engine

from callcenter.bus import DIALER_TOPIC, Bus
from callcenter.clock import LoopScheduler
from callcenter.config import GatewayKind, Settings
from callcenter.engine.commands import Command, ConnectAgent, Hangup, Originate, PlayAndHangup
from callcenter.engine.dialer import DialerCore
from callcenter.engine.events import GatewayEvent, GatewayLink, SpyMode
from callcenter.engine.sqlstore import SqlStore
from callcenter.engine.store import AgentRow
from callcenter.errors import DomainError
from callcenter.gateways.base import Gateway, GatewayError
from callcenter.messages import (
    REPLY_TTL_S,
    AgentChanged,
    DialerRequest,
    PreviewDial,
    PreviewSkip,
    Reply,
    SpyRequest,
    TaskChanged,
    TaskStats,
    decode,
    reply_key,
)
from callcenter.notifier import Notifier

log = logging.getLogger(__name__)
TICK_S = 1.0


def default_dialer_id() -> str:
    return os.environ.get("CALLCENTER_DIALER_ID") or f"{socket.gethostname()}-dialer"


def settings_for_row(settings: Settings, row: Any) -> Settings:
    """Settings with a gateway row's address, user, secret and dial templates in place of the
    defaults, so every driver is built by its `from_settings`. The secret comes only from the
    CALLCENTER_GATEWAY_SECRET_* variable the row names (`gateway_admin.gateway_secret`): a row never
    logs in with the default gateway's secret, nor with any other variable (raises Invalid)."""
    from pydantic import SecretStr

    from callcenter.gateway_admin import gateway_secret

    prefix = {GatewayKind.ASTERISK.value: "ami", GatewayKind.FREESWITCH.value: "esl"}.get(row.kind)
    if prefix is None:
        return settings
    secret = SecretStr(gateway_secret(row))
    update: dict[str, Any] = {
        f"{prefix}_host": row.host or None,
        f"{prefix}_port": row.port or None,
        f"{prefix}_dial_template": row.dial_template or None,
        f"{prefix}_agent_template": row.agent_template or None,
    }
    if prefix == "ami":
        update["ami_username"] = row.username or None
        update["ami_secret"] = secret
    else:
        update["esl_password"] = secret
    return settings.model_copy(update={k: v for k, v in update.items() if v is not None})


def build_gateways(settings: Settings, engine: Engine, scheduler: LoopScheduler) -> dict[str, Gateway]:
    """The default gateway from settings plus one per enabled gateway row."""
    from sqlmodel import Session, col, select

    from callcenter.models import GatewayRow

    def make(kind: str, conf: Settings) -> Gateway:
        if kind == GatewayKind.SIMULATED:
            from callcenter.gateways.simulated import SimulatedGateway, demo_profile, load_script

            scale = settings.sim_time_scale
            script = load_script(settings.sim_script) if settings.sim_script else None
            return SimulatedGateway(scheduler, demo_profile(time_scale=scale), script, time_scale=scale)
        if kind == GatewayKind.ASTERISK:
            from callcenter.gateways.asterisk import AsteriskGateway

            return AsteriskGateway.from_settings(conf)
        if kind == GatewayKind.FREESWITCH:
            from callcenter.gateways.freeswitch import FreeswitchGateway

            return FreeswitchGateway.from_settings(conf)
        raise ValueError(f"unknown gateway kind {kind!r}")

    gateways = {"default": make(settings.gateway.value, settings)}
    with Session(engine) as session:
        for row in session.exec(select(GatewayRow).where(col(GatewayRow.enabled).is_(True))):
            gateways[f"gw{row.id}"] = make(row.kind, settings_for_row(settings, row))
    return gateways


class DialerRunner:
    def __init__(
        self,
        engine: Engine,
        gateways: dict[str, Gateway],
        *,
        redis: Any = None,
        aredis: Any = None,
        dialer_id: str | None = None,
        clock: Callable[[], float] = time.time,
        command_timeout_s: float = 5.0,
    ) -> None:
        self.engine = engine
        self.gateways = gateways
        self.redis = redis
        self.aredis = aredis
        self.clock = clock
        self.command_timeout_s = command_timeout_s
        self.store = SqlStore(engine, dialer_id or default_dialer_id())
        # The core publishes into this pipeline; `_batch` sends it after the commit.
        self._outbox = redis.pipeline(transaction=False) if redis is not None else None
        self.notifier = Notifier(Bus(self._outbox)) if self._outbox is not None else None
        self.core = self._new_core()
        self.events: list[GatewayEvent] = []
        self.requests: list[DialerRequest] = []
        # One handler per request type (the mirror of the notifier): each runs inside the batch and
        # returns the reply, or None for requests nobody waits on.
        self._handlers: dict[type[DialerRequest], Callable[[Any, float], Reply | None]] = {
            AgentChanged: self._agent_changed,
            TaskChanged: self._agent_changed,
            PreviewDial: self._preview_dial,
            PreviewSkip: self._preview_skip,
        }
        self._commands: list[Command] = []
        self.links: list[tuple[str, GatewayLink]] = []
        self.wake = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.ready = asyncio.Event()

    def _new_core(self) -> DialerCore:
        from callcenter.gateways.simulated import SimulatedGateway

        def wrap_sampler(agent: AgentRow) -> float | None:
            gw = self.gateways.get("default")
            return gw.sample_wrap_up() if agent.simulated and isinstance(gw, SimulatedGateway) else None

        return DialerCore(self.store, notifier=self.notifier, wrap_sampler=wrap_sampler)

    @contextlib.contextmanager
    def _batch(self) -> Iterator[None]:
        """One store transaction for a batch of core work; the bus messages queued meanwhile are sent
        after it has committed, and dropped if it rolled back."""
        try:
            with self.store.transaction():
                yield
        except BaseException:
            if self._outbox is not None:
                self._outbox.reset()
            raise
        self._publish()

    def _publish(self) -> None:
        """Send the queued bus messages, in one round trip."""
        outbox = self._outbox
        if outbox is None or not len(outbox):
            return
        try:
            outbox.execute()
        except Exception:  # the database has the truth; the web catches up from the next task_stats
            log.exception("could not publish %d bus messages", len(outbox))
            outbox.reset()

    def _emit(self, event: GatewayEvent) -> None:
        self.events.append(event)
        self.wake.set()

    def _emitter(self, key: str) -> Callable[[GatewayEvent], None]:
        """The sink for one gateway: link changes are tagged with the gateway they concern."""

        def emit(event: GatewayEvent) -> None:
            if isinstance(event, GatewayLink):
                self.links.append((key, event))
                self.wake.set()
            else:
                self._emit(event)

        return emit

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self.tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("dialer task %s failed", name, exc_info=t.exception())

        task.add_done_callback(done)

    async def _resync(self) -> list[Command]:
        """(Re)build the core's view from the database and the PBX's active calls."""
        active: dict[str, Any] = {}
        for key, gw in self.gateways.items():
            try:
                active[key] = await asyncio.wait_for(gw.active_calls(), self.command_timeout_s)
            except (GatewayError, TimeoutError) as exc:
                log.warning("gateway %s: cannot list active calls (%s); its open calls end as lost", key, exc)
                active[key] = []
        adopted: dict[tuple[str, str], bool] = {}
        for key, calls in active.items():
            for call in calls:
                if call.call_id:
                    try:
                        adopted[(key, call.call_id)] = await asyncio.wait_for(
                            self.gateways[key].adopt(call.call_id), self.command_timeout_s
                        )
                    except (GatewayError, TimeoutError):
                        adopted[(key, call.call_id)] = False
        with self._batch():
            commands = self.core.start(active, lambda key, cid: adopted.get((key, cid), False), self.clock())
        return commands

    async def run(self, stop: asyncio.Event) -> None:
        for key, gw in self.gateways.items():
            await gw.start(self._emitter(key))
            log.info("gateway %s started (%s)", key, type(gw).__name__)
        await self.send(await self._resync())
        if self.aredis is not None:
            self._spawn(self._listen(), "dialer-bus")
        self.ready.set()
        next_tick = 0.0
        next_stats = 0.0
        while not stop.is_set():
            now = self.clock()
            due = min(next_tick, self.core.next_wake() or next_tick)
            if not self.events and not self.requests and not self.links and due > now:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=min(TICK_S, due - now))
                now = self.clock()
            events, self.events = self.events, []
            requests, self.requests = self.requests, []
            links, self.links = self.links, []
            try:
                with self._batch():
                    commands = []
                    for key, link in links:
                        commands += self.core.link_changed(key, link.up, link.detail, now)
                    commands += self.core.handle(events, now) if events else []
                    replies = [self._request(r, now, commands) for r in requests]
                    if now >= next_tick or (self.core.next_wake() or now + 1) <= now:
                        commands += self.core.tick(now)
                        next_tick = now + TICK_S
            except Exception:
                log.exception("dialer batch failed; rebuilding from the database and the PBX")
                self.core = self._new_core()
                commands, replies = await self._resync(), []
            for request, reply in replies:
                await self._reply(request, reply)
            await self.send(commands)
            if now >= next_stats and self.notifier is not None:
                next_stats = now + 1.0
                for cid in list(self.core.tasks):
                    snap = self.core.snapshot(cid, now)
                    if snap is not None:
                        self.notifier.publish(TaskStats.model_validate(snap))
                self._publish()

    def _request(
        self, req: DialerRequest, now: float, commands: list[Command]
    ) -> tuple[DialerRequest, Reply | None]:
        """Run one web request inside the current batch; the core's commands join `commands`."""
        handler = self._handlers.get(type(req))
        if handler is None:
            return req, None
        self._commands = commands
        try:
            return req, handler(req, now)
        except DomainError as exc:
            return req, Reply(ok=False, error=exc.message, status=exc.status)

    def _agent_changed(self, req: AgentChanged | TaskChanged, now: float) -> None:
        self._commands += self.core.agent_changed(now)

    def _preview_dial(self, req: PreviewDial, now: float) -> Reply:
        self._commands += self.core.preview_dial(req.call_id, req.agent_id, now)
        return Reply(ok=True)

    def _preview_skip(self, req: PreviewSkip, now: float) -> Reply:
        self._commands += self.core.preview_skip(req.call_id, req.agent_id, now)
        return Reply(ok=True)

    async def _reply(self, request: DialerRequest, reply: Reply | None) -> None:
        if reply is None or not request.request_id or self.redis is None:
            return
        key = reply_key(request.request_id)
        self.redis.lpush(key, reply.model_dump_json())
        self.redis.expire(key, REPLY_TTL_S)

    async def _spy(self, req: SpyRequest) -> None:
        gw = self.gateways.get(req.gateway or "default")
        try:
            if gw is None:
                raise GatewayError(f"no gateway {req.gateway}")
            spy_id = await asyncio.wait_for(
                gw.spy(
                    target_extension=req.target_extension,
                    supervisor_extension=req.supervisor_extension,
                    mode=SpyMode(req.mode),
                ),
                self.command_timeout_s,
            )
            reply = Reply(ok=True, spy_id=spy_id)
        except (GatewayError, DomainError, TimeoutError, ValueError) as exc:
            reply = Reply(ok=False, error=getattr(exc, "message", None) or str(exc) or type(exc).__name__)
        await self._reply(req, reply)

    async def _listen(self) -> None:
        pubsub = self.aredis.pubsub()
        await pubsub.subscribe(DIALER_TOPIC)
        try:
            async for msg in pubsub.listen():
                if msg.get("type") != "message":
                    continue
                try:
                    req = decode(msg["data"])
                except ValueError as exc:
                    log.warning("ignored a bad request on the dialer topic: %s", exc)
                    continue
                if isinstance(req, SpyRequest):  # waits on the PBX: outside the batch
                    self._spawn(self._spy(req), "spy")
                elif isinstance(req, DialerRequest):
                    self.requests.append(req)
                    self.wake.set()
        finally:
            await pubsub.aclose()

    async def send(self, commands: list[Command]) -> None:
        if not commands:
            return
        results = await asyncio.gather(*(self._send_one(c) for c in commands), return_exceptions=True)
        failed = [(c, r) for c, r in zip(commands, results, strict=True) if isinstance(r, Exception)]
        if failed:
            now = self.clock()
            with self._batch():
                more = self.core.commands_failed(failed, now)
            await self.send(more)

    async def _send_one(self, command: Command) -> None:
        gw = self.gateways.get(command.gateway)
        if gw is None:
            raise GatewayError(f"no gateway {command.gateway!r} in this dialer")
        if isinstance(command, Originate):
            coro = gw.originate(command.request)
        elif isinstance(command, ConnectAgent):
            coro = gw.connect_agent(command.call_id, command.extension)
        elif isinstance(command, PlayAndHangup):
            coro = gw.play_and_hangup(command.call_id, command.sound)
        elif isinstance(command, Hangup):
            coro = gw.hangup(command.call_id)
        await asyncio.wait_for(coro, self.command_timeout_s)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for gw in self.gateways.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(gw.close(), self.command_timeout_s)


def run_dialer(settings: Settings, *, dialer_id: str | None = None) -> None:
    """`callcenter dialer`: run until SIGTERM / SIGINT."""
    import redis
    import redis.asyncio as aredis

    from callcenter.db import make_engine

    async def main() -> None:
        engine = make_engine(settings.effective_database_url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        scheduler = LoopScheduler(loop)
        runner = DialerRunner(
            engine,
            build_gateways(settings, engine, scheduler),
            redis=redis.Redis.from_url(settings.redis_url, decode_responses=True),
            aredis=aredis.Redis.from_url(settings.redis_url, decode_responses=True),
            dialer_id=dialer_id,
            command_timeout_s=settings.gateway_timeout_s,
        )
        log.info("dialer %s running", runner.store.dialer_id)
        try:
            await runner.run(stop)
        finally:
            await runner.close()
            engine.dispose()

    asyncio.run(main())
