"""The push path: dialer -> Redis pub/sub -> this web process -> browser WebSockets.

One pattern subscription (`cc:*`) per web process, opened at start-up, fans messages out to the sockets
this process holds. Every web process subscribes, so any number of them can run behind a balancer and
a socket may land on any of them.

Who gets what (the messages of `callcenter.messages`):
- `cc:agent:<id>` goes only to sockets of the user whose agent id is <id> (the `agent` stream);
- `cc:monitor` goes only to sockets of users with the `monitor` permission (the `monitor` stream);
- `cc:chat:room:<id>` goes to that room's visitor sockets (only what `for_visitor()` lets them see), to
  the chat sockets of the agents the message names (`agent_ids`: the room's holder, a transfer's old
  and new agent), to supervisors watching that room, and (state changes only) to every chat monitor;
- `cc:chat:group:<id>` (queue, inbox) goes to the chat sockets of that group's agents, to chat
  monitors, and - as their own position and estimated wait only - to visitors queued in that group;
- `cc:chat:monitor` (agents' chat availability and load) goes to chat monitors and to that agent;
- `cc:sessions` (`callcenter.http.SESSIONS_TOPIC`) is for the hub itself: a user's password was changed,
  they were deactivated or their roles changed, or one session signed out; the sockets concerned are
  closed (4401: sign in again; 4409 after a role change: reconnect, to get the streams the user may
  now have);
- anything else (`cc:dialer`) is not for browsers and is dropped.

Visitors have their own endpoint, `/chat/ws`: authenticated by the visitor token (the
`X-Visitor-Token` header, or a first message `{"type": "auth", "token": ...}`), bound to the visitor's
room; a visitor socket only ever receives that room's messages. Its `hello` is the room, its history
and the queue place (a visitor who dropped and comes back within the grace period gets it all back).
Visitor sockets may send `typing` ({"typing": true}) and `marks` ({"delivered_seq", "read_seq"});
chat staff sockets the same with a `room_id`, and supervisors `watch` / `unwatch` a room to read it
live. Each process keeps its visitors' rooms marked connected, and closes, with a compare-and-set,
the rooms whose visitors' grace period ran out (`chat.runtime.ChatRuntime.sweep`).

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

Query parameters: `streams=agent,monitor,chat` (default: all the user may have, except the opt-in
`tasks` and `chat`), `day=<epoch seconds of
the browser's local midnight>` (for today's counters; default UTC midnight). The `tasks` stream (only
`task_state`, for the task list; users with task_manage, task_control or monitor) and the `chat`
stream (multimedia agents: their rooms, their groups' queues; supervisors: every room's state, every
queue, agents' chat load, and the rooms they watch) are sent only when asked for by name.

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
from callcenter.bus import (
    ALL_PATTERN,
    CHAT_GROUP_PREFIX,
    CHAT_MONITOR_TOPIC,
    CHAT_ROOM_PREFIX,
    MONITOR_TOPIC,
    PREFIX,
    presence_key,
)
from callcenter.http import (
    SESSIONS_TOPIC,
    AppContext,
    Requirement,
    current_principal,
    principal_from_token,
    public,
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
from chat import live as chat_live
from chat.bot.kb import warm_up as kb_warm_up
from chat.messages import ChatAgentChanged, ChatInboxAdded, ChatQueueChanged, ChatRoomChanged, RoomMessage
from chat.models import Sender
from chat.runtime import runtime_for
from chat.visitors import HEADER as VISITOR_HEADER
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
CHAT = "chat"  # chat rooms, queues and agents' chat load; opt-in (asked for by name)
AGENT_PREFIX = f"{PREFIX}agent:"
TYPING_EVERY_S = 1.0  # a socket's "typing" is passed on at most this often per room

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
    if opt_in and (_chat_agent(principal) or principal.can(Permission.MONITOR)):
        out.add(CHAT)
    return frozenset(out)


def _chat_agent(principal: Principal) -> bool:
    return principal.agent_id is not None and principal.can(Permission.MULTIMEDIA_AGENT)


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
        self.chat_groups: frozenset[int] = frozenset()  # the agent's skill groups (chat stream)
        self.watching: set[int] = set()  # rooms a supervisor reads live
        self.typed: dict[int, float] = {}

    @property
    def label(self) -> str:
        return self.principal.username

    @property
    def agent_id(self) -> int | None:
        return self.principal.agent_id if AGENT in self.streams else None

    @property
    def chat_agent_id(self) -> int | None:
        """The agent whose rooms this socket gets (chat stream, multimedia agent)."""
        return self.principal.agent_id if CHAT in self.streams and _chat_agent(self.principal) else None

    @property
    def chat_monitor(self) -> bool:
        return CHAT in self.streams and self.principal.can(Permission.MONITOR)


class VisitorConn:
    """A visitor's socket: bound to their room; gets only that room's messages and queue place."""

    def __init__(self, ws: WebSocket, *, visitor_id: int, room_id: int, group_id: int, state: str) -> None:
        self.ws = ws
        self.visitor_id = visitor_id
        self.room_id = room_id
        self.group_id = group_id
        self.state = state
        self.queue: asyncio.Queue[Item] = asyncio.Queue(QUEUE_MAX)
        self.dropped = False
        self.typed: dict[int, float] = {}

    @property
    def label(self) -> str:
        return f"visitor {self.visitor_id}"


AnyConn = Conn | VisitorConn


class Hub:
    """The process's one bus subscription and the sockets it feeds."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.region = ctx.settings.default_region
        self.by_agent: dict[int, set[Conn]] = {}
        self.monitors: set[Conn] = set()
        self.task_watchers: set[Conn] = set()  # the `tasks` stream
        self.chat_agents: dict[int, set[Conn]] = {}  # agent id -> chat sockets
        self.chat_monitors: set[Conn] = set()
        self.watchers: dict[int, set[Conn]] = {}  # room id -> supervisors reading it live
        self.visitors: dict[int, set[VisitorConn]] = {}  # room id -> the visitor's sockets
        self.conns: set[AnyConn] = set()
        self.tasks: set[asyncio.Future[Any]] = set()
        self.auth_timeout_s = AUTH_TIMEOUT_S
        self._redis: Any = None
        self._owns_redis = False
        self._pubsub: Any = None
        self._runner: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
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
        self._sweeper = self.spawn(self._chat_sweep(), "chat sweep")
        self.spawn(self._presence(), "agent presence")
        try:
            await self.db(live.warm_up, region=self.region, bare=True, hot=True)
        except Exception:  # a cold first pop is slower, not wrong
            log.exception("warming up the screen pop's CRM lookup failed")
        # The chat bot's Chinese segmenter loads its dictionary in the background (about a second).
        self.spawn(self._warm_up_chat(), "jieba warm-up")

    async def _presence(self) -> None:
        """Tell the dialer which agents have a workstation open here: a key per agent with a time to
        live, renewed while a socket of theirs is open. A ready agent whose key lapses (browser closed,
        network gone) is set not ready by the dialer, so no call goes to a screen nobody watches."""
        ttl = self.ctx.settings.agent_disconnect_s
        every = max(0.5, min(10.0, ttl / 3))
        while True:
            agents = list(self.by_agent)
            if agents:
                try:
                    pipe = self._redis.pipeline(transaction=False)
                    for agent_id in agents:
                        pipe.set(presence_key(agent_id), "1", ex=max(1, round(ttl)))
                    await pipe.execute()
                except Exception as exc:  # Redis away: the keys lapse; retried next round
                    log.warning("could not renew agent presence: %s", exc)
            await asyncio.sleep(every)

    async def _warm_up_chat(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, kb_warm_up)

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
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
        elif channel.startswith(CHAT_ROOM_PREFIX):
            self._chat_room(_int(channel[len(CHAT_ROOM_PREFIX) :]), data)
        elif channel.startswith(CHAT_GROUP_PREFIX):
            self._chat_group(_int(channel[len(CHAT_GROUP_PREFIX) :]), data)
        elif channel == CHAT_MONITOR_TOPIC:
            self._chat_monitor(data)
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
            if isinstance(conn, VisitorConn):
                continue  # a chat visitor has no account
            if (user_id is not None and conn.principal.user_id == user_id) or (
                sid is not None and conn.sid == sid
            ):
                self.unregister(conn)  # nothing more is queued for it from here on
                self.spawn(self._close(conn, code), "close revoked socket")

    # --- chat fan-out ----------------------------------------------------------------------

    def _chat_room(self, room_id: int | None, data: str) -> None:
        if room_id is None:
            return
        visitors = self.visitors.get(room_id)
        watchers = self.watchers.get(room_id)
        if not (visitors or watchers or self.chat_agents or self.chat_monitors):
            return  # no chat socket here: not even parsed
        msg = _message(data)
        if not isinstance(msg, RoomMessage):
            return
        agents = [c for a in msg.agent_ids for c in self.chat_agents.get(a, ())]
        if visitors:
            view = msg.for_visitor()
            if isinstance(msg, ChatRoomChanged):
                for visitor in visitors:
                    visitor.state, visitor.group_id = msg.new, msg.group_id
            if view is not None:
                text = _dumps(view)
                for vconn in list(visitors):
                    self._push(vconn, text)
        sent: set[Conn] = set()
        item: Item = data
        if (
            isinstance(msg, ChatRoomChanged)
            and msg.agent_id is not None
            and msg.event in ("assign", "accept", "transfer")
        ):
            item = self.spawn(self._with_room(msg, data), "chat room for its agent")
        for staff in agents:
            if staff not in sent:
                self._push(staff, item)
                sent.add(staff)
        for staff in list(watchers or ()):
            if staff not in sent:
                self._push(staff, data)
                sent.add(staff)
        if isinstance(msg, ChatRoomChanged):
            for staff in list(self.chat_monitors):
                if staff not in sent:
                    self._push(staff, data)

    async def _with_room(self, msg: ChatRoomChanged, raw: str) -> str:
        """A room given to an agent comes with its summary and recent history (no extra request)."""
        try:
            room = await self.db(_room_summary, msg.room_id)
        except Exception:
            log.exception("room summary for chat %s failed", msg.room_id)
            return raw
        return _dumps({**msg.payload(), "room": room, "server_time": time.time()})

    def _chat_group(self, group_id: int | None, data: str) -> None:
        if group_id is None:
            return
        staff = [c for conns in self.chat_agents.values() for c in conns if group_id in c.chat_groups]
        queued = [
            v
            for conns in self.visitors.values()
            for v in conns
            if v.group_id == group_id and v.state in _WAITING
        ]
        if not (staff or queued or self.chat_monitors):
            return
        msg = _message(data)
        if not isinstance(msg, ChatQueueChanged | ChatInboxAdded):
            return
        for conn in {*staff, *self.chat_monitors}:
            self._push(conn, data)
        if isinstance(msg, ChatQueueChanged):
            for vconn in queued:
                view = msg.for_visitor(vconn.room_id)
                if view is not None:
                    self._push(vconn, _dumps(view))

    def _chat_monitor(self, data: str) -> None:
        msg = _message(data)
        if not isinstance(msg, ChatAgentChanged):
            return
        for conn in {*self.chat_monitors, *self.chat_agents.get(msg.agent_id, ())}:
            self._push(conn, data)

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

    def _push(self, conn: AnyConn, item: Item) -> None:
        if conn.dropped:
            return
        try:
            conn.queue.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("socket of %s is %d messages behind; closing it", conn.label, QUEUE_MAX)
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

    def register(self, conn: AnyConn) -> None:
        self.conns.add(conn)
        if isinstance(conn, VisitorConn):
            self.visitors.setdefault(conn.room_id, set()).add(conn)
            return
        if conn.chat_agent_id is not None:
            self.chat_agents.setdefault(conn.chat_agent_id, set()).add(conn)
        if conn.chat_monitor:
            self.chat_monitors.add(conn)
        if conn.agent_id is not None:
            first = conn.agent_id not in self.by_agent
            self.by_agent.setdefault(conn.agent_id, set()).add(conn)
            if first and self._redis is not None:  # present from the first socket, not the next round
                ttl = max(1, round(self.ctx.settings.agent_disconnect_s))
                self.spawn(self._redis.set(presence_key(conn.agent_id), "1", ex=ttl), "presence")
        if MONITOR in conn.streams:
            self.monitors.add(conn)
        if TASKS in conn.streams:
            self.task_watchers.add(conn)

    def unregister(self, conn: AnyConn) -> None:
        self.conns.discard(conn)
        if isinstance(conn, VisitorConn):
            left = self.visitors.get(conn.room_id)
            if left is not None:
                left.discard(conn)
                if not left:
                    del self.visitors[conn.room_id]
                    # The last socket of this visitor here: the grace period starts now (another
                    # process holding a socket of theirs keeps refreshing the room).
                    self.spawn(self.db(_visitor_gone, conn.room_id, time.time()), "visitor gone")
            return
        self.chat_monitors.discard(conn)
        for room_id in conn.watching:
            watching = self.watchers.get(room_id)
            if watching is not None:
                watching.discard(conn)
                if not watching:
                    del self.watchers[room_id]
        if conn.chat_agent_id is not None:
            chat = self.chat_agents.get(conn.chat_agent_id)
            if chat is not None:
                chat.discard(conn)
                if not chat:
                    del self.chat_agents[conn.chat_agent_id]
        self.monitors.discard(conn)
        self.task_watchers.discard(conn)
        if conn.agent_id is not None:
            group = self.by_agent.get(conn.agent_id)
            if group is not None:
                group.discard(conn)
                if not group:
                    del self.by_agent[conn.agent_id]

    async def _hello(self, conn: AnyConn) -> str:
        if isinstance(conn, VisitorConn):
            return _dumps(
                await self.db(
                    chat_live.visitor_hello, room_id=conn.room_id, settings=self.ctx.settings, now=time.time()
                )
            )
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
        if CHAT in conn.streams:
            data["chat"] = await self.db(
                chat_live.staff_hello,
                principal=conn.principal,
                agent=conn.chat_agent_id is not None,
                monitor=conn.chat_monitor,
                settings=self.ctx.settings,
                now=time.time(),
            )
            groups = data["chat"].get("agent", {}).get("groups", [])
            conn.chat_groups = frozenset(int(g) for g in groups)
        return _dumps(data)

    async def serve(self, conn: AnyConn) -> None:
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

    async def _write(self, conn: AnyConn) -> None:
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

    async def _read(self, conn: AnyConn) -> None:
        try:
            while True:
                text = await conn.ws.receive_text()
                msg = _decode(text)
                if msg and msg["type"] == "ping":
                    self._push(conn, _dumps({"type": "pong", "server_time": time.time()}))
                elif msg and msg["type"] in ("typing", "marks", "watch", "unwatch"):
                    await self._chat_input(conn, msg)
        except _GONE_OR_BINARY:
            return

    async def _chat_input(self, conn: AnyConn, msg: dict[str, Any]) -> None:
        """What a chat socket sends: typing (passed on, never stored), delivered / read marks, and a
        supervisor's watch / unwatch of a room. Anything about a room the sender is not in is dropped."""
        agent_id: int | None = None
        if isinstance(conn, VisitorConn):
            room_id, sender = conn.room_id, Sender.VISITOR
        else:
            if CHAT not in conn.streams:
                return
            asked = _int(msg.get("room_id"))
            if asked is None:
                return
            room_id, sender, agent_id = asked, Sender.AGENT, conn.chat_agent_id
            if msg["type"] in ("watch", "unwatch"):
                await self._watch(conn, room_id, msg["type"] == "watch")
                return
        out: BusMessage | None = None
        if msg["type"] == "typing":
            typing = bool(msg.get("typing", True))
            now = time.time()
            if typing and now - conn.typed.get(room_id, 0.0) < TYPING_EVERY_S:
                return
            conn.typed[room_id] = now if typing else 0.0
            out = await self.db(
                chat_live.socket_typing,
                room_id=room_id,
                sender=sender,
                agent_id=agent_id,
                typing=typing,
                now=now,
            )
        elif msg["type"] == "marks":
            out = await self.db(
                chat_live.socket_marks,
                room_id=room_id,
                sender=sender,
                agent_id=agent_id,
                delivered=_int(msg.get("delivered_seq")),
                read=_int(msg.get("read_seq")),
            )
        if out is not None:
            data = out.encode()
            for topic in out.topics():
                await self._redis.publish(topic, data)

    async def _watch(self, conn: Conn, room_id: int, on: bool) -> None:
        if not conn.chat_monitor:
            return
        if not on:
            conn.watching.discard(room_id)
            self.watchers.get(room_id, set()).discard(conn)
            return
        if await self.db(chat_live.watchable, room_id=room_id):
            conn.watching.add(room_id)
            self.watchers.setdefault(room_id, set()).add(conn)

    async def _chat_sweep(self) -> None:
        """Every `chat_sweep_s`: keep this process's visitors' rooms marked connected, close the rooms
        whose visitors' grace ran out (one process wins each), route the queues (a safety net)."""
        rt = runtime_for(self.ctx)
        while True:
            await asyncio.sleep(self.ctx.settings.chat_sweep_s)  # a timer: the grace period is time
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self._pool, partial(rt.sweep, now=time.time(), connected_rooms=list(self.visitors))
                )
            except Exception:
                log.exception("chat sweep failed")

    async def _close(self, conn: AnyConn, code: int) -> None:
        conn.dropped = True
        ws = conn.ws
        if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
            try:
                await conn.ws.close(code)
            except Exception:
                log.debug("close of a socket failed", exc_info=True)


# What a send or receive raises once the other side is gone.
_GONE: tuple[type[BaseException], ...] = (WebSocketDisconnect, RuntimeError, OSError)
# ... and what a receive raises on a binary frame (KeyError), which this protocol has not.
_GONE_OR_BINARY: tuple[type[BaseException], ...] = (*_GONE, KeyError)


def _decode(data: str) -> dict[str, Any] | None:
    """A browser's message (ping, auth): a JSON object with a type, or None."""
    try:
        msg = json.loads(data)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) and isinstance(msg.get("type"), str) else None


_WAITING = frozenset({"queued", "transferred"})


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _room_summary(session: Any, room_id: int) -> dict[str, Any]:
    from chat import services

    return chat_live.room_summary(session, services.load_room(session, room_id))


def _visitor_gone(session: Any, room_id: int, now: float) -> None:
    from chat import grace

    grace.heartbeat(session, room_ids=[room_id], now=now)
    session.commit()


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


@router.websocket("/chat/ws")
async def visitor_socket(websocket: WebSocket, _public: None = public()) -> None:
    """A visitor's socket: authenticated by their token (header, else the first message)."""
    hub: Hub = websocket.app.state.hub
    await websocket.accept()
    token = websocket.headers.get(VISITOR_HEADER)
    if not token:
        try:
            text = await asyncio.wait_for(websocket.receive_text(), hub.auth_timeout_s)
        except (TimeoutError, WebSocketDisconnect, RuntimeError):
            text = ""
        msg = _decode(text)
        token = msg.get("token") if msg and msg["type"] == "auth" else None
    found = (
        await hub.db(chat_live.visitor_of_token, token, settings=hub.ctx.settings)
        if isinstance(token, str) and token
        else None
    )
    if found is None:
        await websocket.close(CLOSE_UNAUTHENTICATED, "send the visitor token")
        return
    visitor_id, room_id, group_id, state = found
    conn = VisitorConn(websocket, visitor_id=visitor_id, room_id=room_id, group_id=group_id, state=state)
    try:
        await hub.serve(conn)
    except WebSocketDisconnect:
        pass
    finally:
        await hub._close(conn, 1000)


def install(app: FastAPI) -> None:
    """Add `/ws` and `/chat/ws` and start / stop the process's hub with the app."""
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
