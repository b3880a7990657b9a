"""Everything the core tells the web processes goes through here: one method per message, and nothing
else builds bus messages. Payloads are plain JSON; the field lists below are the contract the web
push path (webui/ws.py) and the browser code rely on.

Topics (see `callcenter.bus`): `agent:<id>` reaches that agent's workstation only; `monitor` reaches
supervisors (monitor permission) only.

- `agent_state`   agent + monitor  {agent_id, extension, state, since, call_id, campaign_id}
- `screen_pop`    agent            {call_id, agent_id, extension, direction ("outbound"|"manual"), number,
                                    campaign_id, campaign_name, lead_id, lead_fields, dispositions,
                                    connected_at}
                                   The web process adds the CRM part (contact, earlier calls, notes)
                                   before pushing it to the browser.
- `preview`       agent            the `screen_pop` fields of a lead offered in preview mode (direction
                                   "preview"); the agent dials it (`POST /api/agent/preview/<call_id>/dial`)
                                   or skips it
- `call_ended`    agent            {call_id, agent_id, result, at}
- `task_state`    monitor          {campaign_id, name, old, new, by, at}
- `task_stats`    monitor          {campaign_id, ... `callcenter.stats.Counters.as_dict()`, state, name,
                                   pacing_mode, at}; also kept under `stats_key(id)` for 10 s
- `gateway_link`  monitor          {gateway, up, detail, at}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from callcenter.bus import MONITOR_TOPIC, Bus, agent_topic


def stats_key(campaign_id: int) -> str:
    return f"cc:stats:{campaign_id}"


class Notifier:
    """Publishes core events on the bus. `bus.redis` may be sync or async; methods return what the
    client's publish returns (an awaitable for an async client)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def agent_state(
        self,
        *,
        agent_id: int,
        extension: str,
        state: str,
        since: float,
        call_id: str | None,
        campaign_id: int | None,
        reason: str | None = None,
    ) -> list[Any]:
        payload = {
            "agent_id": agent_id,
            "extension": extension,
            "state": state,
            "since": since,
            "call_id": call_id,
            "campaign_id": campaign_id,
            "reason": reason,  # why the dialer moved the agent, when it did: "missed_call"
        }
        return [
            self.bus.publish(agent_topic(agent_id), "agent_state", payload),
            self.bus.publish(MONITOR_TOPIC, "agent_state", payload),
        ]

    def screen_pop(self, *, agent_id: int, payload: Mapping[str, Any]) -> Any:
        return self.bus.publish(agent_topic(agent_id), "screen_pop", {**payload, "agent_id": agent_id})

    def preview(self, *, agent_id: int, payload: Mapping[str, Any]) -> Any:
        return self.bus.publish(
            agent_topic(agent_id), "preview", {**payload, "agent_id": agent_id, "direction": "preview"}
        )

    def call_ended(self, *, agent_id: int, call_id: str, result: str, at: float) -> Any:
        return self.bus.publish(
            agent_topic(agent_id),
            "call_ended",
            {"agent_id": agent_id, "call_id": call_id, "result": result, "at": at},
        )

    def task_state(self, *, campaign_id: int, name: str, old: str, new: str, by: str, at: float) -> Any:
        return self.bus.publish(
            MONITOR_TOPIC,
            "task_state",
            {"campaign_id": campaign_id, "name": name, "old": old, "new": new, "by": by, "at": at},
        )

    def task_stats(self, stats: Mapping[str, Any]) -> Any:
        """Publish a task's live counters and keep them readable by the snapshot API for 10 s."""
        from callcenter.bus import encode

        self.bus.redis.set(stats_key(int(stats["campaign_id"])), encode("task_stats", stats), ex=10)
        return self.bus.publish(MONITOR_TOPIC, "task_stats", stats)

    def gateway_link(self, *, gateway: str, up: bool, detail: str, at: float) -> Any:
        return self.bus.publish(
            MONITOR_TOPIC, "gateway_link", {"gateway": gateway, "up": up, "detail": detail, "at": at}
        )
