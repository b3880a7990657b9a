"""Routing: to the room's group only, multimedia agents available for chat, least busy then longest idle,
up to each agent's capacity; the queue place and wait estimate; several processes routing at once."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import redis
from sqlalchemy import func, select
from sqlmodel import Session, col

from callcenter.db import make_engine, session_scope
from chat import assign, services
from chat.models import HELD_STATES, ChatParticipant, ChatRoom, RoomState
from chat.routing import Candidate, estimate_wait, pick, rank
from tests.chat.conftest import World


def test_least_busy_then_longest_idle_then_lowest_id() -> None:
    assert pick([Candidate(1, 1, 3, 10.0), Candidate(2, 0, 3, 50.0)]) == 2
    assert pick([Candidate(1, 1, 3, 10.0), Candidate(2, 1, 3, 5.0)]) == 2
    assert pick([Candidate(2, 1, 3, 5.0), Candidate(1, 1, 3, 5.0)]) == 1
    assert pick([Candidate(1, 3, 3, 0.0)]) is None
    assert [c.agent_id for c in rank([Candidate(1, 2, 2, 0.0), Candidate(2, 0, 1, 9.0)])] == [2]


def test_wait_estimate_uses_recent_handle_times_and_free_slots() -> None:
    full = [Candidate(1, 2, 2, 0.0), Candidate(2, 2, 2, 0.0)]
    assert estimate_wait(1, candidates=full, handle_s=120.0) == 30.0
    assert estimate_wait(1, candidates=[Candidate(1, 1, 2, 0.0)], handle_s=120.0) == 0.0
    assert estimate_wait(3, candidates=full, handle_s=None) is None
    assert estimate_wait(3, candidates=[], handle_s=60.0) is None


def test_rooms_go_to_the_least_busy_agent_up_to_capacity(world: World) -> None:
    world.group("sales")
    ann = world.agent("ann", ["sales"], capacity=2)
    bob = world.agent("bob", ["sales"], capacity=1)
    rooms = [world.visit("sales", name=f"v{i}")[0] for i in range(4)]
    holders = [world.room(r).agent_id for r in rooms]
    # ann became available first (longest idle), then each room to the least busy agent.
    assert holders[:3] == [ann, bob, ann]
    assert holders[3] is None and world.room(rooms[3]).state == RoomState.QUEUED.value
    with Session(world.engine) as session:
        assert assign.loads(session, [ann, bob]) == {ann: 2, bob: 1}
        queue = assign.queue_message(
            session, group_id=world.groups["sales"], settings=world.rt.settings, now=world.clock
        )
    assert [e.room_id for e in queue.rooms] == [rooms[3]] and queue.free == 0 and queue.capacity == 3
    notes = [m for m in world.history(rooms[0]) if m["kind"] == "notice"]
    assert notes[-1]["content"] == {"code": "joined", "agent_name": "ann"}


def test_a_freed_slot_takes_the_oldest_waiting_room(world: World) -> None:
    world.group("sales")
    ann = world.agent("ann", ["sales"], capacity=1)
    first, _ = world.visit("sales")
    second, _ = world.visit("sales")
    third, _ = world.visit("sales")
    assert world.room(first).agent_id == ann and world.room(second).agent_id is None
    out = services.Outbox()
    with session_scope(world.engine) as session:
        services.end(
            session,
            room_id=first,
            event=services.RoomEvent.RESOLVE,
            actor="ann",
            agent_id=ann,
            now=world.tick(),
            out=out,
        )
    world.rt.settle(out, now=world.clock)
    assert world.room(first).state == RoomState.COMPLETED.value
    assert world.room(second).agent_id == ann and world.room(third).agent_id is None


def test_an_agent_never_gets_a_room_of_another_group(world: World) -> None:
    world.group("sales")
    world.group("support")
    ann = world.agent("ann", ["sales"])
    room, _ = world.visit("support")
    assert world.room(room).agent_id is None
    with Session(world.engine) as session:
        found = assign.candidates(session, group_id=world.groups["support"], route_during_call=True)
    assert ann not in [c.agent_id for c in found]
    carl = world.agent("carl", ["support"])
    world.rt.route_group(world.groups["support"], now=world.tick(), out=services.Outbox())
    assert world.room(room).agent_id == carl


def test_unavailable_agents_and_agents_without_multimedia_get_nothing(world: World) -> None:
    world.group("sales")
    world.agent("sup", ["sales"], roles=["supervisor"])  # no multimedia_agent permission
    ann = world.agent("ann", ["sales"])
    world.set_agent("ann", available=False)
    room, _ = world.visit("sales")
    assert world.room(room).agent_id is None
    world.set_agent("ann", available=True)
    world.rt.route_group(world.groups["sales"], now=world.tick(), out=services.Outbox())
    assert world.room(room).agent_id == ann


def test_queue_position_and_estimate_from_recent_handle_times(world: World) -> None:
    world.group("sales")
    ann = world.agent("ann", ["sales"], capacity=1)
    served, _ = world.visit("sales")
    out = services.Outbox()
    world.tick(300)
    with session_scope(world.engine) as session:
        services.end(
            session,
            room_id=served,
            event=services.RoomEvent.RESOLVE,
            actor="ann",
            agent_id=ann,
            now=world.clock,
            out=out,
        )
    world.set_agent("ann", available=False)
    world.rt.settle(out, now=world.clock)
    world.set_agent("ann", available=True)
    busy, _ = world.visit("sales")
    waiting = [world.visit("sales", name=f"w{i}")[0] for i in range(2)]
    assert world.room(busy).agent_id == ann
    with Session(world.engine) as session:
        queue = assign.queue_message(
            session, group_id=world.groups["sales"], settings=world.rt.settings, now=world.clock
        )
    assert queue.handle_s is not None and 290 <= queue.handle_s <= 310
    second = queue.for_visitor(waiting[1])
    assert second is not None and second["position"] == 2 and second["eta_s"] == 2 * queue.handle_s
    assert "visitor_name" not in str(second)


def test_concurrent_routing_on_postgres_never_exceeds_capacity(
    pg_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Eight threads, each its own connection (as several web processes), route the same 30 rooms to
    4 agents of capacity 3 at once: 12 rooms given, each to one agent, nobody above 3."""
    from tests.chat.conftest import _world

    engine = make_engine(pg_url)
    world = _world(engine, redis_client, tmp_path)
    world.group("sales")
    for name in ("a1", "a2", "a3", "a4"):
        world.agent(name, ["sales"], capacity=3)
        world.set_agent(name, available=False)
    rooms = [world.visit("sales", name=f"v{i}")[0] for i in range(30)]
    for name in ("a1", "a2", "a3", "a4"):
        world.set_agent(name, available=True)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []
    given: list[int] = []

    def router(order: list[int]) -> None:
        try:
            barrier.wait()
            for room_id in order:
                with Session(engine, expire_on_commit=False) as session:
                    move = assign.route_room(
                        session, room_id=room_id, now=world.clock, settings=world.rt.settings
                    )
                    session.commit()
                if move is not None:
                    given.append(room_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=router, args=(rooms[i:] + rooms[:i],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(given) == len(set(given)) == 12
    with Session(engine) as session:
        held = Counter(
            session.scalars(select(col(ChatRoom.agent_id)).where(col(ChatRoom.state).in_(HELD_STATES)))
        )
        joined = session.execute(select(func.count()).select_from(ChatParticipant)).scalar()
    assert sorted(held.values()) == [3, 3, 3, 3] and joined == 12
    engine.dispose()
