"""The dialer process: the async shell around `DialerCore`.

It starts the gateways, feeds their events and a tick (at most one second apart, sooner when a
timer is due) to the core inside one database transaction per batch, then sends the commands the
core returned. The bus messages the core's `Notifier` makes during a batch are queued in a Redis
pipeline and go out in one round trip once the batch's transaction has committed (none if it rolled
back), so the web never hears of a state the database does not have. Requests from the web arrive on
the `dialer` bus topic (one handler each); replies go back on a per-request Redis list.

What it rides out:
- a gateway that cannot be built (a bad row) or reached is marked down and retried with backoff; its
  tasks wait, the others run; its calls from before are checked once it is up (`reconcile`);
- a database outage: the batch rolls back, nothing is placed, gateway events are kept in memory; once
  the database answers again the core is rebuilt from it and the kept events are replayed;
- a Redis outage: publishing fails quietly (the database has the truth), the request subscription
  reconnects with backoff;
- a bug in the core: the batch rolls back and the core is rebuilt from the database and the PBX.
Several dialers may share one database: each has a unique id, beats every tick, holds leases on the
skill groups it paces, and takes over the calls of a dialer that stopped beating.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import random
import secrets
import signal
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import Engine

from callcenter.bus import DIALER_TOPIC, Bus
from callcenter.clock import LoopScheduler
from callcenter.config import GatewayKind, Settings
from callcenter.engine.commands import Command, ConnectAgent, Hangup, Originate, PlayAndHangup
from callcenter.engine.dialer import DEAD_AFTER_S, DialerCore
from callcenter.engine.events import GatewayDraining, GatewayEvent, GatewayLink, ManualCallStarted, SpyMode
from callcenter.engine.sqlstore import SqlStore
from callcenter.engine.store import AgentRow
from callcenter.errors import DomainError
from callcenter.gateways.base import Gateway, GatewayError, GatewayUnavailable
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
TAKEOVER_EVERY_S = 5.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
# The web waits a few seconds for a reply: the subscription is retried often enough to be back in time.
LISTEN_BACKOFF_MAX_S = 2.0
# What a database that went away raises (connection refused, server closed the connection, ...).
DATABASE_DOWN = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError)


def default_dialer_id() -> str:
    """Unique per process unless set: two dialers must never share an id (they would share calls)."""
    return os.environ.get("CALLCENTER_DIALER_ID") or (
        f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    )


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


@dataclass
class GatewaySlot:
    """One PBX this dialer drives: its driver (None when it could not be built, see `error`)."""

    key: str
    name: str
    originates_per_s: float
    driver: Gateway | None
    error: str = ""
    started: bool = False
    reconciled: bool = False
    first_try: asyncio.Event = field(default_factory=asyncio.Event)


def build_gateways(settings: Settings, engine: Engine, scheduler: LoopScheduler) -> dict[str, GatewaySlot]:
    """The default gateway from settings plus one per enabled gateway row. A row that cannot be
    turned into a driver (a bad template, an unknown kind) gives a slot without one: it is shown as
    down with the reason, and the other gateways run."""
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

    def slot(key: str, name: str, rate: float, kind: str, conf: Callable[[], Settings]) -> GatewaySlot:
        try:
            return GatewaySlot(key, name, rate, make(kind, conf()))
        except Exception as exc:  # any fault of one row's values: that gateway is down, not the dialer
            reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            log.error("gateway %s (%s) cannot be used: %s", name, key, reason)
            return GatewaySlot(key, name, rate, None, error=reason)

    slots = {
        "default": slot(
            "default", "default", settings.gateway_originates_per_s, settings.gateway.value, lambda: settings
        )
    }
    with Session(engine) as session:
        for row in session.exec(select(GatewayRow).where(col(GatewayRow.enabled).is_(True))):
            key = f"gw{row.id}"
            conf = functools.partial(settings_for_row, settings, row)
            slots[key] = slot(key, row.name, row.originates_per_s, row.kind, conf)
    return slots


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DialerRunner:
    def __init__(
        self,
        engine: Engine,
        gateways: Mapping[str, Gateway | GatewaySlot],
        *,
        redis: Any = None,
        aredis: Any = None,
        dialer_id: str | None = None,
        clock: Callable[[], float] = time.time,
        command_timeout_s: float = 5.0,
        originates_per_s: float = 10.0,
        region: str = "CN",
    ) -> None:
        self.engine = engine
        self.region = region
        self.slots: dict[str, GatewaySlot] = {
            key: gw if isinstance(gw, GatewaySlot) else GatewaySlot(key, key, originates_per_s, gw)
            for key, gw in gateways.items()
        }
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
        self.links: list[tuple[str, GatewayLink | GatewayDraining]] = []
        # One handler per request type (the mirror of the notifier): each runs inside the batch and
        # returns the reply, or None for requests nobody waits on.
        self._handlers: dict[type[DialerRequest], Callable[[Any, float], Reply | None]] = {
            AgentChanged: self._agent_changed,
            TaskChanged: self._agent_changed,
            PreviewDial: self._preview_dial,
            PreviewSkip: self._preview_skip,
        }
        self._commands: list[Command] = []
        self.wake = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.ready = asyncio.Event()
        self.database_up = True

    @property
    def gateways(self) -> dict[str, Gateway]:
        """The drivers that could be built, by key."""
        return {key: s.driver for key, s in self.slots.items() if s.driver is not None}

    def _new_core(self) -> DialerCore:
        from callcenter.gateways.simulated import SimulatedGateway

        def wrap_sampler(agent: AgentRow) -> float | None:
            gw = self.gateways.get("default")
            return gw.sample_wrap_up() if agent.simulated and isinstance(gw, SimulatedGateway) else None

        from callcenter.leads import normalise_one

        core = DialerCore(
            self.store,
            notifier=self.notifier,
            wrap_sampler=wrap_sampler,
            normalise=functools.partial(normalise_one, region=self.region),
        )
        core.set_gateways({key: (s.name, s.originates_per_s) for key, s in self.slots.items()})
        for slot in self.slots.values():
            if not slot.started:  # nothing is placed through it until its link reports up
                core.gateway(slot.key).link(False, slot.error or "not connected yet")
        return core

    # --- batches and the bus ----------------------------------------------------------------------

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
        except Exception as exc:  # the database has the truth; the web catches up from the next stats
            log.warning("could not publish %d bus messages: %s", len(outbox), exc)
            outbox.reset()

    def _emit(self, event: GatewayEvent) -> None:
        self.events.append(event)
        self.wake.set()

    def _emitter(self, key: str) -> Callable[[GatewayEvent], None]:
        """The sink for one gateway: its link and drain events are tagged with the gateway's key."""

        def emit(event: GatewayEvent) -> None:
            if isinstance(event, GatewayLink | GatewayDraining):
                self.links.append((key, event))
                self.wake.set()
            elif isinstance(event, ManualCallStarted):
                self._emit(dataclasses.replace(event, gateway=key))
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

    # --- gateways ---------------------------------------------------------------------------------

    async def _keep_started(self, slot: GatewaySlot) -> None:
        """Start a gateway's driver, retrying with backoff until it is up (the driver reconnects by
        itself after that). A slot with no driver is reported down, once."""
        if slot.driver is None:
            self._gateway_down(slot, f"cannot be used: {slot.error}")
            slot.first_try.set()
            return
        delay = BACKOFF_FIRST_S
        while True:
            try:
                await slot.driver.start(self._emitter(slot.key))
            except (GatewayError, OSError, TimeoutError) as exc:
                self._gateway_down(slot, f"cannot connect: {exc}")
                slot.first_try.set()
                await asyncio.sleep(delay * random.uniform(0.8, 1.0))
                delay = min(BACKOFF_MAX_S, delay * 2)
                continue
            slot.started = True
            slot.first_try.set()
            log.info("gateway %s started (%s)", slot.key, type(slot.driver).__name__)
            self.wake.set()
            return

    def _gateway_down(self, slot: GatewaySlot, detail: str) -> None:
        """Tell the core (no calls through it) by the same path as a link event."""
        log.warning("gateway %s (%s) is down: %s", slot.name, slot.key, detail)
        self.links.append((slot.key, GatewayLink(False, self.clock(), detail)))
        self.wake.set()

    async def _reconcile(self, slot: GatewaySlot) -> list[Command]:
        """Check the calls the core loaded for this gateway against what the PBX has now."""
        driver = slot.driver
        if driver is None or not slot.started:
            return []
        try:
            active = await asyncio.wait_for(driver.active_calls(), self.command_timeout_s)
        except (GatewayError, TimeoutError) as exc:
            log.warning("gateway %s: cannot list active calls (%s); will retry", slot.key, exc)
            return []
        adopted: set[str] = set()
        for call in active:
            if call.call_id:
                try:
                    if await asyncio.wait_for(driver.adopt(call.call_id), self.command_timeout_s):
                        adopted.add(call.call_id)
                except (GatewayError, TimeoutError) as exc:
                    log.warning("gateway %s: could not adopt %s: %s", slot.key, call.call_id, exc)
        with self._batch():
            commands = self.core.reconcile(slot.key, active, adopted.__contains__, self.clock())
        slot.reconciled = True
        return commands

    async def _reconcile_ready(self) -> list[Command]:
        commands: list[Command] = []
        for slot in self.slots.values():
            if slot.started and not slot.reconciled:
                commands += await self._reconcile(slot)
        return commands

    # --- (re)building the core ----------------------------------------------------------------------

    async def _restart_core(self, replay: list[GatewayEvent]) -> list[Command]:
        """Build the core from the database, replay `replay`, then check every gateway that is up."""
        self.core = self._new_core()
        for slot in self.slots.values():
            slot.reconciled = False
        with self._batch():
            now = self.clock()
            commands = self.core.start(now, replay)
            if self.notifier is not None:  # every gateway's state, for the pages (up ones too)
                for key in self.slots:
                    self.notifier.publish(self.core.gateway(key).status(now))
        return commands + await self._reconcile_ready()

    async def _database_outage(self, stop: asyncio.Event, error: Exception) -> None:
        """Wait, with backoff, until the database answers again. Gateway events keep arriving and are
        kept; nothing is placed meanwhile (pacing needs the database)."""
        self.database_up = False
        log.error("database unavailable (%s); following calls in memory until it is back", error)
        delay = BACKOFF_FIRST_S
        while not stop.is_set():
            await asyncio.sleep(delay * random.uniform(0.8, 1.0))
            try:
                with self.engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            except (*DATABASE_DOWN, sa_exc.DBAPIError) as exc:
                log.warning("database still unavailable: %s", str(exc).splitlines()[0][:200])
                delay = min(BACKOFF_MAX_S / 3, delay * 2)
                continue
            log.warning("database is back; rebuilding from it and replaying %d events", len(self.events))
            self.database_up = True
            return

    async def _take_over_dead(self) -> list[Command]:
        """Follow the calls of dialers that stopped (cleanly or by dying) with calls still open."""
        now = self.clock()
        host = socket.gethostname()
        with self._batch():
            rows = self.store.dialers()
        dead = [
            d["id"]
            for d in rows
            if d["id"] != self.store.dialer_id
            and (
                d["stopped_at"] is not None
                or d["heartbeat_at"] < now - DEAD_AFTER_S
                or (d["host"] == host and not _pid_alive(int(d["pid"])))
            )
        ]
        if not dead:
            return []
        with self._batch():
            gateways = self.core.take_over(dead, now)
        if gateways:
            log.warning("took over the calls of stopped dialers %s", ", ".join(dead))
        commands: list[Command] = []
        for key in gateways:
            slot = self.slots.get(key)
            if slot is not None:
                slot.reconciled = False
                commands += await self._reconcile(slot)
        return commands

    # --- the loop -----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        with self._batch():
            self.store.register_dialer(host=socket.gethostname(), pid=os.getpid(), now=self.clock())
        for slot in self.slots.values():
            self._spawn(self._keep_started(slot), f"gateway-{slot.key}")
        # The first connection attempt of each gateway, so the first reconcile covers every one that is
        # reachable; those that are not are reconciled when they come up.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(s.first_try.wait() for s in self.slots.values())),
                self.command_timeout_s * 2,
            )
        await self.send(await self._restart_core([]))
        await self.send(await self._take_over_dead())
        if self.aredis is not None:
            self._spawn(self._listen(stop), "dialer-bus")
        self.ready.set()
        next_tick = next_stats = next_takeover = 0.0
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
            replies: list[tuple[DialerRequest, Reply | None]] = []
            try:
                with self._batch():
                    commands: list[Command] = []
                    for key, link in links:
                        commands += self.core.gateway_changed(key, link, now)
                    commands += self.core.handle(events, now) if events else []
                    replies = [self._request(r, now, commands) for r in requests]
                    if now >= next_tick or (self.core.next_wake() or now + 1) <= now:
                        commands += self.core.tick(now)
                        self.store.beat(now)
                        next_tick = now + TICK_S
            except DATABASE_DOWN as exc:
                self.events[:0] = events  # kept, in order, for the replay
                for request in requests:
                    await self._reply(
                        request, Reply(ok=False, status=503, error="the database is unavailable")
                    )
                await self._database_outage(stop, exc)
                if stop.is_set():
                    break
                replay, self.events = self.events, []
                try:
                    commands, replies = await self._restart_core(replay), []
                except DATABASE_DOWN as again:  # it went away again at once: wait again
                    self.events[:0] = replay
                    log.warning("database failed again while rebuilding: %s", again)
                    continue
            except Exception:
                log.exception("dialer batch failed; rebuilding from the database and the PBX")
                try:
                    commands, replies = await self._restart_core([]), []
                except DATABASE_DOWN as exc:
                    await self._database_outage(stop, exc)
                    continue
            for request, reply in replies:
                await self._reply(request, reply)
            if any(link.up for _, link in links if isinstance(link, GatewayLink)):
                commands += await self._reconcile_ready()
            await self.send(commands)
            if now >= next_takeover:
                next_takeover = now + TAKEOVER_EVERY_S
                with contextlib.suppress(*DATABASE_DOWN):
                    await self.send(await self._take_over_dead())
            if now >= next_stats and self.notifier is not None:
                next_stats = now + 1.0
                for cid in list(self.core.tasks):
                    snap = self.core.snapshot(cid, now)
                    if snap is not None:
                        self.notifier.publish(TaskStats.model_validate(snap))
                self._publish()

    # --- requests from the web ----------------------------------------------------------------------

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
        try:
            self.redis.lpush(key, reply.model_dump_json())
            self.redis.expire(key, REPLY_TTL_S)
        except Exception as exc:  # Redis is away: the web's wait times out and says so
            log.warning("could not reply to %s: %s", type(request).__name__, exc)

    async def _spy(self, req: SpyRequest) -> None:
        gw = self.gateways.get(req.gateway or "default")
        try:
            if gw is None:
                raise GatewayUnavailable(f"gateway {req.gateway} is not available")
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

    async def _listen(self, stop: asyncio.Event) -> None:
        """The dialer topic, for as long as the dialer runs: a lost Redis link is reconnected with
        backoff and the subscription renewed (requests published meanwhile are lost; the web's wait
        for their reply times out and says so)."""
        delay = BACKOFF_FIRST_S
        while not stop.is_set():
            pubsub = self.aredis.pubsub()
            try:
                await pubsub.subscribe(DIALER_TOPIC)
                log.info("listening for web requests on %s", DIALER_TOPIC)
                delay = BACKOFF_FIRST_S
                async for msg in pubsub.listen():
                    if msg.get("type") != "message":
                        continue
                    self._on_request(msg["data"])
                raise ConnectionError("the subscription ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("dialer topic lost (%s); resubscribing in %.1f s", exc, delay)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay * random.uniform(0.8, 1.0))
            delay = min(LISTEN_BACKOFF_MAX_S, delay * 2)

    def _on_request(self, data: Any) -> None:
        try:
            req = decode(data)
        except ValueError as exc:
            log.warning("ignored a bad request on the dialer topic: %s", exc)
            return
        if isinstance(req, SpyRequest):  # waits on the PBX: outside the batch
            self._spawn(self._spy(req), "spy")
        elif isinstance(req, DialerRequest):
            self.requests.append(req)
            self.wake.set()

    # --- commands -----------------------------------------------------------------------------------

    async def send(self, commands: list[Command]) -> None:
        if not commands:
            return
        results = await asyncio.gather(*(self._send_one(c) for c in commands), return_exceptions=True)
        failed = [(c, r) for c, r in zip(commands, results, strict=True) if isinstance(r, Exception)]
        if failed:
            now = self.clock()
            try:
                with self._batch():
                    more = self.core.commands_failed(failed, now)
            except DATABASE_DOWN as exc:  # settled from the database and the PBX once it is back
                log.warning("could not record %d failed commands: %s", len(failed), exc)
                return
            await self.send(more)

    async def _send_one(self, command: Command) -> None:
        gw = self.gateways.get(command.gateway)
        if gw is None:
            raise GatewayUnavailable(f"gateway {command.gateway!r} is not available in this dialer")
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
        try:  # a clean stop: other dialers may take its calls and groups at once
            with self._batch():
                self.store.stop_dialer(self.clock())
        except Exception as exc:
            log.warning("could not record the dialer's stop: %s", exc)


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
            originates_per_s=settings.gateway_originates_per_s,
            region=settings.default_region,
        )
        log.info("dialer %s running", runner.store.dialer_id)
        try:
            await runner.run(stop)
        finally:
            await runner.close()
            engine.dispose()

    asyncio.run(main())
