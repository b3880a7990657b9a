"""The event bus: Redis pub/sub between the dialer, the web processes and workers.

Topics are strings built only here, so a reader finds every channel in one screen:
- `agent:<agent_id>`  messages for one agent's workstation (screen pop, state, call end)
- `monitor`           supervisor data (task counters, agent grid, calls)
- `dialer`            requests to the dialer (agent state changed, task started, spy)
Messages are JSON objects with a `type` field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

PREFIX = "cc:"


def agent_topic(agent_id: int) -> str:
    return f"{PREFIX}agent:{agent_id}"


MONITOR_TOPIC = f"{PREFIX}monitor"
DIALER_TOPIC = f"{PREFIX}dialer"
ALL_PATTERN = f"{PREFIX}*"


def encode(message_type: str, payload: Mapping[str, Any]) -> str:
    return json.dumps({"type": message_type, **payload}, separators=(",", ":"), default=str)


def decode(raw: str | bytes) -> dict[str, Any]:
    data = json.loads(raw)
    if not isinstance(data, dict) or "type" not in data:
        raise ValueError("bus message without a type")
    return data


class Bus:
    """Publishes on Redis. Works with a sync `redis.Redis` or an async `redis.asyncio.Redis`."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    def publish(self, topic: str, message_type: str, payload: Mapping[str, Any]) -> Any:
        return self.redis.publish(topic, encode(message_type, payload))
