"""The one way the dialer (and the web's own state changes) put messages on the bus: typed messages
from `callcenter.messages`, each published on the topics it names. Nothing else writes bus messages."""

from __future__ import annotations

from typing import Any

from callcenter.bus import Bus
from callcenter.messages import (
    SPIES_KEY,
    BusMessage,
    GatewayStatus,
    SpySession,
    TaskStats,
    gateway_status_key,
    stats_key,
)


class Notifier:
    """Publishes on the bus. `bus.redis` may be a client, an async client or a pipeline; `publish`
    returns what its publish calls returned (awaitables for an async client)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def publish(self, message: BusMessage) -> list[Any]:
        data = message.encode()
        redis = self.bus.redis
        if isinstance(message, TaskStats):  # the snapshot API reads the latest one for 10 s
            redis.set(stats_key(message.campaign_id), data, ex=10)
        elif isinstance(message, GatewayStatus):  # pages opened later show the latest
            redis.set(gateway_status_key(message.gateway), data, ex=86400)
        elif isinstance(message, SpySession):  # monitors opened later see who listens to whom
            if message.ended_at is None:
                redis.hset(SPIES_KEY, message.spy_id, data)
            else:
                redis.hdel(SPIES_KEY, message.spy_id)
        return [redis.publish(topic, data) for topic in message.topics()]
