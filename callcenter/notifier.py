"""The one way the dialer (and the web's own state changes) put messages on the bus: typed messages
from `callcenter.messages`, each published on the topics it names. Nothing else writes bus messages."""

from __future__ import annotations

from typing import Any

from callcenter.bus import Bus
from callcenter.messages import BusMessage, GatewayStatus, TaskStats, gateway_status_key, stats_key


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
        return [redis.publish(topic, data) for topic in message.topics()]
