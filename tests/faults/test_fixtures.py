"""The fault fixtures themselves: Redis and PostgreSQL go down and come back on the same port with
their data, and what a client sees meanwhile."""

from __future__ import annotations

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from callcenter.db import make_engine
from tests.faults.conftest import Postgres, RedisServer


def test_redis_comes_back_on_its_port_with_its_data(redis_server: RedisServer) -> None:
    client = redis_server.client()
    client.set("kept", "1")
    port = redis_server.port
    with redis_server.down(), pytest.raises(redis.ConnectionError):
        client.get("kept")
    assert redis_server.port == port and client.get("kept") == "1"  # redis-py reconnects
    client.set("acknowledged", "2")
    redis_server.kill()
    assert not redis_server.running()
    redis_server.start()
    assert client.get("acknowledged") == "2"


def test_postgres_restarts_on_its_port_with_its_data(pg: Postgres) -> None:
    engine = make_engine(pg.url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE kept (n int)"))
        conn.execute(text("INSERT INTO kept VALUES (1)"))
    held = engine.connect()
    pg.restart()
    with pytest.raises(OperationalError):
        held.execute(text("SELECT 1"))  # the connection held across the restart is gone
    held.close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM kept")).scalar() == 1
    with pg.down(mode="immediate"), pytest.raises(OperationalError), engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM kept")).scalar() == 1
    engine.dispose()
