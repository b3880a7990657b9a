"""The chat module's process-wide parts and what happens after a commit.

`ChatRuntime` holds the engine, Redis, settings, the knowledge cache and the channel adapters; the web
app makes one (`webui.app` keeps it on the app context) and tests make their own. `settle(outbox)` is
the one place the side effects of a committed change happen, in this order: publish the bus
messages, send the messages bound for Telegram / WeChat visitors, route the queues that changed (each
room in a transaction of its own) and publish them, let the bot answer the visitor messages of rooms
still queued, publish the agents whose load changed. Whatever that produces settles the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from callcenter.bus import Bus
from callcenter.config import Settings
from callcenter.http import AppContext
from callcenter.notifier import Notifier
from chat import assign, grace, services
from chat.bot import runner
from chat.bot.admin import KnowledgeCache
from chat.bot.engine import Knowledge
from chat.channels.base import ChannelAdapter, adapters_for, outgoing
from chat.models import ChatMessage, ChatRoom, ChatVisitor
from chat.services import Outbox

log = logging.getLogger(__name__)
MAX_ROUNDS = 8  # settle rounds (a bot answer that resolves, then routes ...): bounded


class ChatRuntime:
    def __init__(
        self,
        *,
        engine: Engine,
        redis: Any,
        settings: Settings,
        channels: dict[str, ChannelAdapter] | None = None,
    ) -> None:
        self.engine = engine
        self.redis = redis
        self.settings = settings
        self.kb = KnowledgeCache()
        self.channels = channels if channels is not None else adapters_for(settings, redis)

    def notifier(self) -> Notifier:
        return Notifier(Bus(self.redis))

    def knowledge(self, session: Session, group_id: int) -> Knowledge:
        config = services.group_config(session, group_id)
        threshold = config.bot_threshold if config else 0.5
        return self.kb.get(session, group_id, threshold)

    # --- after a commit ----------------------------------------------------------------------

    def settle(self, out: Outbox, *, now: float | None = None) -> None:
        pending = out
        for _ in range(MAX_ROUNDS):
            if not (pending.messages or pending.deliver or pending.bot or pending.groups or pending.agents):
                return
            now = time.time() if now is None else now
            nxt = Outbox()
            notifier = self.notifier()
            for message in pending.messages:
                notifier.publish(message)
            for message_id in pending.deliver:
                self.deliver(message_id)
            # Route first: a visitor an agent can take at once gets the agent, not the bot.
            for group_id in sorted(pending.groups):
                self.route_group(group_id, now=now, out=nxt)
            for room_id, message_id in pending.bot:
                self.run_bot(room_id, message_id, now, nxt)
            with Session(self.engine) as session:
                for agent_id in sorted(pending.agents | nxt.agents):
                    notifier.publish(assign.agent_message(session, agent_id=agent_id, now=now))
            nxt.agents.clear()
            for message in list(nxt.messages):  # publish queue moves before the next round's queues
                notifier.publish(message)
            nxt.messages.clear()
            pending = nxt
            now = None
        log.warning("chat settle stopped after %d rounds", MAX_ROUNDS)

    def run_bot(self, room_id: int, message_id: int, now: float, out: Outbox) -> None:
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                runner.run(
                    session,
                    room_id=room_id,
                    message_id=message_id,
                    now=now,
                    settings=self.settings,
                    knowledge=self.knowledge,
                    out=out,
                )
                session.commit()
            except Exception:
                session.rollback()
                log.exception("the chat bot failed on room %s", room_id)

    def route_group(self, group_id: int, *, now: float, out: Outbox) -> int:
        """Give the group's waiting rooms to its agents, oldest first, until nobody is free; then
        publish the queue. Answers how many rooms were given."""
        given = 0
        while True:
            with Session(self.engine, expire_on_commit=False) as session:
                waiting = assign.waiting_rooms(session, group_id=group_id, limit=50)
            if not waiting:
                break
            stuck = False
            for room_id in waiting:
                with Session(self.engine, expire_on_commit=False) as session:
                    move = assign.route_room(session, room_id=room_id, now=now, settings=self.settings)
                    if move is None:
                        session.rollback()
                        stuck = True
                        break
                    room_out = Outbox()
                    services.announce(session, move=move, out=room_out)
                    session.commit()
                notifier = self.notifier()
                for message in room_out.messages:
                    notifier.publish(message)
                for message_id in room_out.deliver:
                    self.deliver(message_id)
                out.agents |= room_out.agents
                given += 1
            if stuck:
                break
        with Session(self.engine) as session:
            self.notifier().publish(
                assign.queue_message(session, group_id=group_id, settings=self.settings, now=now)
            )
        return given

    def deliver(self, message_id: int) -> None:
        """Send one message out through its room's channel (Telegram, WeChat); failures are logged."""
        with Session(self.engine) as session:
            msg = session.get(ChatMessage, message_id)
            room = session.get(ChatRoom, msg.room_id) if msg is not None else None
            visitor = session.get(ChatVisitor, room.visitor_id) if room is not None else None
            if msg is None or room is None or visitor is None:
                return
            adapter = self.channels.get(room.channel)
            if adapter is None:
                log.warning("no %s adapter configured: message %s not delivered", room.channel, message_id)
                return
            message = outgoing(session, msg, data_dir=self.settings.data_dir)
            user_id = visitor.external_id
        try:
            adapter.send(user_id, message)
        except Exception:
            log.exception("sending message %s through %s failed", message_id, adapter.name)

    # --- the sweep every web process runs ----------------------------------------------------

    def sweep(self, *, now: float, connected_rooms: Sequence[int] = ()) -> list[int]:
        """Refresh the rooms whose visitors are connected here, close the rooms whose visitors' grace
        ran out (compare-and-set: one process wins each), and route every queue that has a room
        waiting (a safety net under the event-driven routing). Answers the rooms closed."""
        out = Outbox()
        with Session(self.engine, expire_on_commit=False) as session:
            grace.heartbeat(session, room_ids=connected_rooms, now=now)
            session.commit()
        with Session(self.engine, expire_on_commit=False) as session:
            closed = grace.expire_grace(session, now=now, grace_s=self.settings.chat_grace_s, out=out)
            session.commit()
        with Session(self.engine) as session:
            groups = session.scalars(
                select(col(ChatRoom.skill_group_id))
                .distinct()
                .where(col(ChatRoom.state).in_(assign.WAITING), col(ChatRoom.agent_id).is_(None))
            )
            out.groups |= {int(g) for g in groups}
        self.settle(out, now=now)
        return closed


def runtime_for(ctx: AppContext) -> ChatRuntime:
    """The process's chat runtime: made on first use from the app context and kept on it."""
    rt = ctx.extras.get("chat")
    if rt is None:
        rt = ctx.extras["chat"] = ChatRuntime(engine=ctx.engine, redis=ctx.redis, settings=ctx.settings)
    assert isinstance(rt, ChatRuntime)
    return rt
