"""The event bus: Redis pub/sub between the dialer, the web processes and workers.

Topics are strings built only here, so a reader finds every channel in one screen:
- `agent:<agent_id>`  messages for one agent's workstation (screen pop, state, call end)
- `monitor`           supervisor data (task counters, agent grid, calls)
- `dialer`            requests to the dialer (agent state changed, task started, spy)
- `chat:room:<id>`    everything about one chat room: messages, state, typing, read marks
                      (the hub sends each to the room's visitor, its agents and supervisors watching)
- `chat:group:<id>`   a skill group's chat queue and inbox (its agents, supervisors, queued visitors)
- `chat:monitor`      agents' chat availability and load (supervisors, and the agent themself)
Messages are JSON objects with a `type` field, one class each in `callcenter.messages`.
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
CHAT_ROOM_PREFIX = f"{PREFIX}chat:room:"
CHAT_GROUP_PREFIX = f"{PREFIX}chat:group:"
CHAT_MONITOR_TOPIC = f"{PREFIX}chat:monitor"


def chat_room_topic(room_id: int) -> str:
    return f"{CHAT_ROOM_PREFIX}{room_id}"


def chat_group_topic(skill_group_id: int) -> str:
    return f"{CHAT_GROUP_PREFIX}{skill_group_id}"


ALL_PATTERN = f"{PREFIX}*"


def encode(message_type: str, payload: Mapping[str, Any]) -> str:
    """Raw JSON of a message (for tests that need a malformed or partial one; code uses messages)."""
    return json.dumps({"type": message_type, **payload}, separators=(",", ":"), default=str)


class Bus:
    """A Redis client to publish on: sync `redis.Redis`, async `redis.asyncio.Redis` or a pipeline."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
