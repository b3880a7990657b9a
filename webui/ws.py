"""The push path: dialer -> Redis pub/sub -> this web process -> browser WebSockets.

One pattern subscription (`cc:*`) per web process, opened at start-up, fans messages out to the sockets
this process holds. Every web process subscribes, so any number of them can run behind a balancer and
a socket may land on any of them.

Who gets what (the messages of `callcenter.messages`):
- `cc:agent:<id>` goes only to sockets of the user whose agent id is <id> (the `agent` stream);
- `cc:monitor` goes only to sockets of users with the `monitor` permission (the `monitor` stream);
- `cc:sessions` (`callcenter.http.SESSIONS_TOPIC`) is for the hub itself: a user's password was changed,
  they were deactivated or their roles changed, or one session signed out; the sockets concerned are
  closed (4401: sign in again; 4409 after a role change: reconnect, to get the streams the user may
  now have);
- anything else (`cc:dialer`) is not for browsers and is dropped.

What is added on the way (one read per message, only when this process has a socket that wants it):
- `screen_pop` (and `preview`, which has the same fields) gets `crm`: the contact found by phone (or a
  new one pre-filled from the lead), earlier calls and notes (`crm.services.pop_context`);
- `call_ended` gets `counters`: the agent's counters for today;
- `agent_state` on the monitor stream gets the grid row fields (name, number, campaign_name).
Every other message is forwarded as the exact text Redis delivered. A message that needs a read is
queued as a future, so each socket still receives its messages in bus order.

Authentication, in this order:
1. the session cookie (`cc_session`) of the signed-in browser; the `Origin`, when sent, must be this
   host, so another site cannot open a socket with the user's cookie;
2. an `Authorization: Bearer <token>` header (a token from `POST /api/auth/token`);
3. otherwise the socket is accepted and its first message must be `{"type": "auth", "token": "<token>"}`
   within `AUTH_TIMEOUT_S` (for clients that cannot set headers). Tokens are never taken from the query
   string: it ends up in access logs.
A socket that does not authenticate is closed with code 4401; one asking only for streams it may not
have, with 4403.

Query parameters: `streams=agent,monitor` (default: all the user may have), `day=<epoch seconds of
the browser's local midnight>` (for today's counters; default UTC midnight). The `tasks` stream (only
`task_state`, for the task list; users with task_manage, task_control or monitor) is sent only when
asked for by name.

The first message on every socket is `hello` (see `webui.live.hello`): the current agent state, today's
counters and - when the agent is on a call or in wrap-up - the rebuilt pop, or the lead offered in
preview mode; the agents grid and every running or paused task with its latest counters for a
monitor. After a lost Redis link the subscriber reconnects and every socket gets a fresh `hello`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, WebSocket
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from callcenter.accounts import Principal
from callcenter.bus import ALL_PATTERN, MONITOR_TOPIC, PREFIX
from callcenter.http import (
    SESSIONS_TOPIC,
    AppContext,
    Requirement,
    current_principal,
    principal_from_token,
)
from callcenter.messages import (
    AgentCallEnded,
    AgentStateChanged,
    BusMessage,
    ScreenPop,
    TaskStateChanged,
    decode,
)
from callcenter.models import Permission
from webui import live

log = logging.getLogger(__name__)

AUTH_TIMEOUT_S = 5.0
QUEUE_MAX = 500  # messages waiting for one socket; a client this far behind is dropped and reconnects
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_SLOW = 4408
CLOSE_PERMISSIONS_CHANGED = 4409
CLOSE_RESTART = 1012

AGENT = "agent"
MONITOR = "monitor"
TASKS = "tasks"  # task_state only, for the task list; opt-in (asked for by name)
TASK_VIEWERS = (Permission.TASK_MANAGE, Permission.TASK_CONTROL, Permission.MONITOR)
AGENT_PREFIX = f"{PREFIX}agent:"

Item = str | asyncio.Future[str | None]


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)


def _log_failure(what: str) -> Callable[[asyncio.Future[Any]], None]:
    def done(task: asyncio.Future[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", what, exc_info=task.exception())

    return done


def permitted_streams(principal: Principal, *, opt_in: bool = False) -> frozenset[str]:
    """The streams a user may have; `opt_in` adds those a socket gets only by asking for them."""
    out = set()
    if principal.agent_id is not None and principal.can(Permission.WORKSTATION):
        out.add(AGENT)
    if principal.can(Permission.MONITOR):
        out.add(MONITOR)
    if opt_in and any(principal.can(p) for p in TASK_VIEWERS):
        out.add(TASKS)
    return frozenset(out)


def _day_start(raw: str | None, now: float) -> float:
    utc_midnight = now - now % 86400
    try:
        value = float(raw) if raw else utc_midnight
    except ValueError:
        return utc_midnight
    # A local midnight is within a day and a half of now whatever the time zone.
    return value if now - 36 * 3600 <= value <= now else utc_midnight


class Conn:
    """One socket: who it is, which streams it gets, and its outgoing queue."""

    def __init__(
        self,
        ws: WebSocket,
        principal: Principal,
        streams: frozenset[str],
        day_start: float,
        sid: str | None = None,
    ) -> None:
        self.ws = ws
        self.principal = principal
        self.streams = streams
        self.day_start = day_start
        self.sid = sid  # the browser session it was opened with (None: a token)
        self.queue: asyncio.Queue[Item] = asyncio.Queue(QUEUE_MAX)
        self.dropped = False

    @property
    def agent_id(self) -> int | None:
        return self.principal.agent_id if AGENT in self.streams else None


class Hub:
    """The process's one bus subscription and the sockets it feeds."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.region = ctx.settings.default_region
        self.by_agent: dict[int, set[Conn]] = {}
        self.monitors: set[Conn] = set()
        self.task_watchers: set[Conn] = set()  # the `tasks` stream
        self.conns: set[Conn] = set()
        self.tasks: set[asyncio.Future[Any]] = set()
        self.auth_timeout_s = AUTH_TIMEOUT_S
        self._redis: Any = None
        self._owns_redis = False
        self._pubsub: Any = None
        self._runner: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ws-db")
        self.inline_hot_reads = ctx.engine.dialect.name == "sqlite"

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe (and wait for Redis to confirm) before the app serves its first request, so no
        message published after start-up is missed."""
        if self.ctx.aredis is not None:
            self._redis = self.ctx.aredis
        else:
            import redis.asyncio as aredis

            self._redis = aredis.Redis.from_url(self.ctx.settings.redis_url, decode_responses=True)
            self._owns_redis = True
        await self._subscribe()
        self._runner = self.spawn(self._run(), "bus subscriber")
        try:
            await self.db(live.warm_up, region=self.region, bare=True, hot=True)
        except Exception:  # a cold first pop is slower, not wrong
            log.exception("warming up the screen pop's CRM lookup failed")

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
        for conn in list(self.conns):
            await self._close(conn, CLOSE_RESTART)
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self._drop_pubsub()
        if self._owns_redis:
            await self._redis.aclose()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """A task we keep a reference to (until it ends) and whose failure is logged."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(_log_failure(what))
        return task

    async def db(
        self, fn: Callable[..., Any], /, *args: Any, bare: bool = False, hot: bool = False, **kwargs: Any
    ) -> Any:
        """Run a `webui.live` read (`bare`: on a connection, no ORM session). Reads run on the hub's
        thread pool, except the hot path's (`hot`) on SQLite: those are in-process, indexed and well
        under a millisecond, less than the hop to a thread and back costs under load."""
        runner = live.in_connection if bare else live.in_session
        call = partial(runner, self.ctx.engine, fn, *args, **kwargs)
        if hot and self.inline_hot_reads:
            return call()
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    # --- the subscription -------------------------------------------------------------------

    async def _subscribe(self) -> None:
        await self._drop_pubsub()
        self._pubsub = self._redis.pubsub()
        await self._pubsub.psubscribe(ALL_PATTERN)
        # Wait for the confirmation: once it is here, Redis delivers everything published after.
        while True:
            msg = await self._pubsub.get_message(timeout=5.0)
            if msg is None:
                raise ConnectionError("Redis did not confirm the subscription")
            if msg["type"] == "psubscribe":
                break

    async def _drop_pubsub(self) -> None:
        if self._pubsub is not None:
            try:
                await self._pubsub.aclose()
            except Exception:  # the link may already be gone
                log.debug("closing the old subscription failed", exc_info=True)
            self._pubsub = None

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                if self._pubsub is None:
                    await self._subscribe()
                    log.warning("bus subscription restored; resending state to %d sockets", len(self.conns))
                    for conn in list(self.conns):
                        self._push(conn, self.spawn(self._hello(conn), "hello after resubscribe"))
                backoff = 0.2
                async for msg in self._pubsub.listen():
                    if msg["type"] == "pmessage":
                        self.dispatch(msg["channel"], msg["data"])
                raise ConnectionError("the subscription ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, ConnectionError | RedisConnectionError):
                    log.warning("bus subscription lost (%s); retrying in %.1fs", exc, backoff)
                else:
                    log.exception("bus subscription failed; retrying in %.1fs", backoff)
                await self._drop_pubsub()
                await asyncio.sleep(backoff)  # a retry delay after a failure, not a poll
                backoff = min(backoff * 2, 5.0)

    # --- fan-out ----------------------------------------------------------------------------

    def dispatch(self, channel: str, data: str) -> None:
        """Route one bus message to the sockets it is for (synchronous: never waits)."""
        if channel.startswith(AGENT_PREFIX):
            try:
                agent_id = int(channel[len(AGENT_PREFIX) :])
            except ValueError:
                return
            conns = self.by_agent.get(agent_id)
            if conns:
                self._to_agent(conns, data)
        elif channel == MONITOR_TOPIC and (self.monitors or self.task_watchers):
            self._to_monitors(data)
        elif channel == SESSIONS_TOPIC:
            self._revoke(data)

    def _revoke(self, data: str) -> None:
        """Close the sockets of a user whose account changed, or of a session that signed out."""
        msg = _decode(data)
        if msg is None or msg["type"] != "revoke":
            return
        user_id, sid = msg.get("user_id"), msg.get("sid")
        code = CLOSE_PERMISSIONS_CHANGED if msg.get("reason") == "roles" else CLOSE_UNAUTHENTICATED
        for conn in list(self.conns):
            if (user_id is not None and conn.principal.user_id == user_id) or (
                sid is not None and conn.sid == sid
            ):
                self.unregister(conn)  # nothing more is queued for it from here on
                self.spawn(self._close(conn, code), "close revoked socket")

    def _to_agent(self, conns: set[Conn], data: str) -> None:
        msg = _message(data)
        if msg is None:
            return
        if isinstance(msg, ScreenPop):  # and PreviewOffer: the customer, before or during the call
            item: Item = self.spawn(self._enrich_pop(msg, data), "screen pop enrichment")
            for conn in list(conns):
                self._push(conn, item)
        elif isinstance(msg, AgentCallEnded):
            by_day: dict[float, Item] = {}
            for conn in list(conns):
                if conn.day_start not in by_day:
                    by_day[conn.day_start] = self.spawn(
                        self._with_counters(msg, data, conn.day_start), "call end counters"
                    )
                self._push(conn, by_day[conn.day_start])
        else:
            for conn in list(conns):
                self._push(conn, data)

    def _to_monitors(self, data: str) -> None:
        msg = _message(data)
        if msg is None:
            return
        item: Item = data
        if isinstance(msg, AgentStateChanged):
            item = self.spawn(self._with_grid_row(msg, data), "grid row")
        for conn in list(self.monitors):
            self._push(conn, item)
        if isinstance(msg, TaskStateChanged):
            for conn in list(self.task_watchers):
                if conn not in self.monitors:
                    self._push(conn, data)

    def _push(self, conn: Conn, item: Item) -> None:
        if conn.dropped:
            return
        try:
            conn.queue.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("socket of %s is %d messages behind; closing it", conn.principal.username, QUEUE_MAX)
            conn.dropped = True
            self.spawn(self._close(conn, CLOSE_TOO_SLOW), "close slow socket")

    async def _enrich_pop(self, pop: ScreenPop, raw: str) -> str:
        try:
            crm = await self.db(live.pop_crm, pop, region=self.region, bare=True, hot=True)
        except Exception:
            # A pop without the CRM part beats no pop: the agent still sees the caller and the task.
            log.exception("CRM lookup for screen pop %s failed", pop.call_id)
            return raw
        return pop.model_copy(update={"crm": crm, "server_time": time.time()}).encode()

    async def _with_counters(self, msg: AgentCallEnded, raw: str, day_start: float) -> str:
        try:
            counters = await self.db(live.today_counters, agent_id=msg.agent_id, since=day_start)
        except Exception:
            log.exception("counters after call end failed")
            return raw
        return msg.model_copy(update={"counters": counters, "server_time": time.time()}).encode()

    async def _with_grid_row(self, msg: AgentStateChanged, raw: str) -> str:
        """The monitor's grid row: the agent's name, number and task with the new state."""
        try:
            row = await self.db(live.grid_row, msg.agent_id)
        except Exception:
            log.exception("grid row for agent %s failed", msg.agent_id)
            return raw
        return _dumps({**(row or {}), **msg.payload(), "server_time": time.time()})

    # --- sockets ----------------------------------------------------------------------------

    def register(self, conn: Conn) -> None:
        self.conns.add(conn)
        if conn.agent_id is not None:
            self.by_agent.setdefault(conn.agent_id, set()).add(conn)
        if MONITOR in conn.streams:
            self.monitors.add(conn)
        if TASKS in conn.streams:
            self.task_watchers.add(conn)

    def unregister(self, conn: Conn) -> None:
        self.conns.discard(conn)
        self.monitors.discard(conn)
        self.task_watchers.discard(conn)
        if conn.agent_id is not None:
            group = self.by_agent.get(conn.agent_id)
            if group is not None:
                group.discard(conn)
                if not group:
                    del self.by_agent[conn.agent_id]

    async def _hello(self, conn: Conn) -> str:
        data = await self.db(
            live.hello,
            principal=conn.principal,
            streams=conn.streams,
            day_start=conn.day_start,
            region=self.region,
            now=time.time(),
            redis=self.ctx.redis,
            default_gateway=self.ctx.settings.gateway.value,
        )
        return _dumps(data)

    async def serve(self, conn: Conn) -> None:
        """Send `hello`, then the queue, until either side closes. Messages published while `hello`
        is being read wait in the queue and follow it; the browser ignores anything older than what
        it has (an `agent_state` whose `since` is older than the one shown)."""
        self.register(conn)
        try:
            await conn.ws.send_text(await self._hello(conn))
            writer = self.spawn(self._write(conn), "socket writer")
            reader = self.spawn(self._read(conn), "socket reader")
            await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
            writer.cancel()
            reader.cancel()
        finally:
            self.unregister(conn)

    async def _write(self, conn: Conn) -> None:
        send = conn.ws.send_text
        queue = conn.queue
        try:
            while True:
                item = await queue.get()
                text = item if isinstance(item, str) else await item
                if text is not None:
                    await send(text)
        except _GONE:
            return

    async def _read(self, conn: Conn) -> None:
        try:
            while True:
                text = await conn.ws.receive_text()
                msg = _decode(text)
                if msg and msg["type"] == "ping":
                    self._push(conn, _dumps({"type": "pong", "server_time": time.time()}))
        except (*_GONE, KeyError):  # KeyError: a binary frame, which this protocol has not
            return

    async def _close(self, conn: Conn, code: int) -> None:
        conn.dropped = True
        ws = conn.ws
        if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
            try:
                await conn.ws.close(code)
            except Exception:
                log.debug("close of a socket failed", exc_info=True)


# What a send or receive raises once the other side is gone.
_GONE: tuple[type[BaseException], ...] = (WebSocketDisconnect, RuntimeError, OSError)


def _decode(data: str) -> dict[str, Any] | None:
    """A browser's message (ping, auth): a JSON object with a type, or None."""
    try:
        msg = json.loads(data)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) and isinstance(msg.get("type"), str) else None


def _message(data: str) -> BusMessage | None:
    """A bus message, typed; None (logged) when it is not one we know."""
    try:
        return decode(data)
    except ValueError as exc:
        log.warning("dropped a bus message: %s", exc)
        return None


# --- the endpoint ---------------------------------------------------------------------------------


class SocketRequirement(Requirement):
    """`require()` for the socket: any signed-in user. The cookie or bearer header is read here; a
    socket without either may still authenticate with its first message, so this never refuses."""

    def __init__(self) -> None:
        super().__init__(())

    def __call__(self, websocket: WebSocket) -> Principal | None:  # type: ignore[override]
        return current_principal(websocket)

    def __repr__(self) -> str:
        return "require(signed in: cookie, bearer header or first message)"


def _cross_site(ws: WebSocket) -> bool:
    """A browser sends `Origin`; a cookie-authenticated socket must come from a page of this host."""
    origin = ws.headers.get("origin")
    if not origin or "authorization" in ws.headers:
        return False
    return urlsplit(origin).netloc != ws.headers.get("host", "")


async def _first_message_auth(ws: WebSocket, timeout: float) -> Principal | None:
    try:
        text = await asyncio.wait_for(ws.receive_text(), timeout)
    except (TimeoutError, WebSocketDisconnect, RuntimeError):
        return None
    msg = _decode(text)
    token = msg.get("token") if msg and msg["type"] == "auth" else None
    if not isinstance(token, str) or not token:
        return None
    return await asyncio.to_thread(principal_from_token, ws, token)


router = APIRouter()


@router.websocket("/ws")
async def socket(websocket: WebSocket, principal: Principal | None = Depends(SocketRequirement())) -> None:
    hub: Hub = websocket.app.state.hub
    # A socket opened with the session cookie is closed when that session signs out.
    sid = websocket.session.get("sid") if principal and "authorization" not in websocket.headers else None
    if principal is not None and _cross_site(websocket):
        await websocket.close(CLOSE_FORBIDDEN)  # before accept: the handshake is refused (403)
        return
    await websocket.accept()
    if principal is None:
        # Credentials that were sent and failed (a revoked token, a stale cookie) are final.
        claimed = "authorization" in websocket.headers or "uid" in websocket.session
        principal = None if claimed else await _first_message_auth(websocket, hub.auth_timeout_s)
        if principal is None:
            await websocket.close(CLOSE_UNAUTHENTICATED, "sign in first")
            return
    asked = websocket.query_params.get("streams")
    allowed = permitted_streams(principal, opt_in=bool(asked))
    streams = allowed & frozenset(asked.split(",")) if asked else allowed
    if not streams:
        await websocket.close(CLOSE_FORBIDDEN, "nothing on this socket for this user")
        return
    day = _day_start(websocket.query_params.get("day"), time.time())
    conn = Conn(websocket, principal, streams, day, sid=sid if isinstance(sid, str) else None)
    try:
        await hub.serve(conn)
    except WebSocketDisconnect:
        pass
    finally:
        await hub._close(conn, 1000)


def install(app: FastAPI) -> None:
    """Add `/ws` and start / stop the process's hub with the app."""
    app.include_router(router)

    async def start(app: FastAPI) -> None:
        app.state.hub = Hub(app.state.ctx)
        await app.state.hub.start()

    async def stop(app: FastAPI) -> None:
        hub: Hub | None = getattr(app.state, "hub", None)
        if hub is not None:
            await hub.stop()

    hooks: list[Callable[[FastAPI], Awaitable[None]]] = app.state.startup_hooks
    hooks.append(start)
    app.state.shutdown_hooks.append(stop)
