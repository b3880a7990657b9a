"""Every message that crosses the bus, in both directions, as one typed model each: the producer builds
it, `encode` writes it, the consumer gets it back from `decode`, and tests use the same classes.

Dialer -> web (the notifier publishes them; `webui.ws` fans them out to browsers):
- `AgentStateChanged`  agent + monitor topics
- `ScreenPop`          agent topic; the web adds `crm` (contact, history) and `server_time`
- `PreviewOffer`       agent topic; a lead offered in preview mode (the pop's fields)
- `AgentCallEnded`     agent topic; the web adds the agent's `counters` for today
- `TaskStateChanged`   monitor topic (and the task list's `tasks` stream)
- `TaskStats`          monitor topic; also kept under `stats_key(id)` for 10 s
- `GatewayStatus`      monitor topic; also kept under `gateway_status_key(gateway)`

Web -> dialer (on the dialer topic, through `webui.dialer_client.DialerClient`; the runner has one
handler per type): `AgentChanged`, `TaskChanged`, `PreviewDial`, `PreviewSkip`, `SpyRequest`. A request
with a `request_id` is answered by one `Reply` pushed on the list `reply_key(request_id)`.

Other packages (chat) declare their own messages as subclasses of `BusMessage` in their own module; a
subclass registers its `type` so `decode` knows it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from callcenter.bus import DIALER_TOPIC, MONITOR_TOPIC, agent_topic

REPLY_PREFIX = "cc:reply:"
REPLY_TTL_S = 30


def reply_key(request_id: str) -> str:
    """The Redis list a request's `Reply` is pushed on."""
    return f"{REPLY_PREFIX}{request_id}"


def stats_key(campaign_id: int) -> str:
    """Where a task's latest `TaskStats` is kept for the snapshot API (10 s)."""
    return f"cc:stats:{campaign_id}"


_TYPES: dict[str, type[BusMessage]] = {}


class BusMessage(BaseModel):
    """A message on the bus: JSON with a `type` field naming its class."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    TYPE: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.TYPE:
            known = _TYPES.get(cls.TYPE)
            if known is not None and known.__qualname__ != cls.__qualname__:
                raise TypeError(f"bus message type {cls.TYPE!r} is already {known.__name__}")
            _TYPES[cls.TYPE] = cls

    def topics(self) -> tuple[str, ...]:
        """The bus topics this message is published on."""
        raise NotImplementedError

    def payload(self) -> dict[str, Any]:
        return {"type": self.TYPE, **self.model_dump(mode="json")}

    def encode(self) -> str:
        return json.dumps(self.payload(), separators=(",", ":"), ensure_ascii=False)


def decode(raw: str | bytes | Mapping[str, Any]) -> BusMessage:
    """The typed message for `raw` (JSON text or an already parsed object); ValueError when it is not
    JSON, has no `type`, names an unknown type or fails its model's validation."""
    data = json.loads(raw) if isinstance(raw, str | bytes) else raw
    if not isinstance(data, Mapping):
        raise ValueError("bus message is not a JSON object")
    cls = _TYPES.get(str(data.get("type")))
    if cls is None:
        raise ValueError(f"unknown bus message type {data.get('type')!r}")
    return cls.model_validate(data)


# --- dialer -> web ---------------------------------------------------------------------------------


class AgentStateChanged(BusMessage):
    TYPE: ClassVar[str] = "agent_state"
    agent_id: int
    extension: str = ""
    state: str
    since: float
    call_id: str | None = None
    campaign_id: int | None = None
    reason: str | None = None  # why the dialer (or the web) moved the agent: "missed_call" ...

    @classmethod
    def of_agent(cls, agent: Any) -> AgentStateChanged:
        """From an `Agent` row (`models.Agent`), as the web reads it."""
        return cls(
            agent_id=agent.id,
            extension=agent.extension,
            state=agent.state,
            since=agent.state_since,
            call_id=agent.call_id,
            campaign_id=agent.campaign_id,
            reason=agent.state_reason,
        )

    def topics(self) -> tuple[str, ...]:
        return (agent_topic(self.agent_id), MONITOR_TOPIC)


class ScreenPop(BusMessage):
    """The customer on a call that just connected to an agent (DOMAIN: screen pop)."""

    TYPE: ClassVar[str] = "screen_pop"
    call_id: str
    agent_id: int
    extension: str | None = None
    direction: str = "outbound"  # outbound | manual | preview
    number: str
    campaign_id: int | None = None
    campaign_name: str = ""
    lead_id: int | None = None
    lead_fields: dict[str, Any] = Field(default_factory=dict)  # the list's own columns, in their order
    dispositions: list[str] = Field(default_factory=list)
    connected_at: float | None = None
    # Added by the web process on the way to the browser:
    crm: dict[str, Any] | None = None  # contact, earlier calls and notes (crm.services.pop_context)
    server_time: float | None = None

    def topics(self) -> tuple[str, ...]:
        return (agent_topic(self.agent_id),)


class PreviewOffer(ScreenPop):
    """A lead offered to an agent in preview mode: dial it or skip it."""

    TYPE: ClassVar[str] = "preview"
    direction: str = "preview"


class AgentCallEnded(BusMessage):
    TYPE: ClassVar[str] = "call_ended"
    agent_id: int
    call_id: str
    result: str
    at: float
    counters: dict[str, Any] | None = None  # added by the web: the agent's counters for today
    server_time: float | None = None

    def topics(self) -> tuple[str, ...]:
        return (agent_topic(self.agent_id),)


class TaskStateChanged(BusMessage):
    TYPE: ClassVar[str] = "task_state"
    campaign_id: int
    name: str = ""
    old: str
    new: str
    by: str = ""
    at: float

    def topics(self) -> tuple[str, ...]:
        return (MONITOR_TOPIC,)


class TaskStats(BusMessage):
    """A task's live counters (`callcenter.stats.Counters`) with its state, published every second."""

    TYPE: ClassVar[str] = "task_stats"
    campaign_id: int
    dialled: int = 0
    ringing: int = 0
    answered: int = 0
    connected: int = 0
    abandoned: int = 0
    machine: int = 0
    failed_by_cause: dict[str, int] = Field(default_factory=dict)
    leads_left: int = 0
    lines_per_agent: float = 0.0
    abandon_rolling_pct: float = 0.0
    abandon_pct: float = 0.0
    state: str = ""
    name: str = ""
    pacing_mode: str = ""
    at: float = 0.0

    def topics(self) -> tuple[str, ...]:
        return (MONITOR_TOPIC,)


class GatewayState(StrEnum):
    UP = "up"  # calls are placed through it
    DEGRADED = "degraded"  # it refused calls (throttle, capacity): backing off until `retry_at`
    DRAINING = "draining"  # it announced a shutdown: nothing new until its link came back
    DOWN = "down"  # no link (or it could not be built: a bad gateway row)
    DISABLED = "disabled"  # switched off by an admin


class GatewayStatus(BusMessage):
    """A gateway's health as the dialer sees it; the latest is also kept under
    `gateway_status_key(gateway)` for pages that load later. Tasks on a gateway that is not up wait."""

    TYPE: ClassVar[str] = "gateway_status"
    gateway: str  # "default" or "gw<row id>"
    name: str = ""
    state: GatewayState
    detail: str = ""
    retry_at: float | None = None
    at: float

    def topics(self) -> tuple[str, ...]:
        return (MONITOR_TOPIC,)


def gateway_status_key(gateway: str) -> str:
    return f"cc:gateway:{gateway}"


# --- web -> dialer -----------------------------------------------------------------------------------


class DialerRequest(BusMessage):
    """A request to the dialer; with a `request_id` it is answered by one `Reply`."""

    request_id: str = ""

    def topics(self) -> tuple[str, ...]:
        return (DIALER_TOPIC,)


class AgentChanged(DialerRequest):
    """An agent's row was changed outside the dialer (any state change made on the web)."""

    TYPE: ClassVar[str] = "agent_changed"
    agent_id: int


class TaskChanged(DialerRequest):
    """A task was started, paused, resumed, stopped, edited or deleted on the web."""

    TYPE: ClassVar[str] = "task_changed"
    campaign_id: int | None = None


class PreviewDial(DialerRequest):
    TYPE: ClassVar[str] = "preview_dial"
    call_id: str
    agent_id: int


class PreviewSkip(DialerRequest):
    TYPE: ClassVar[str] = "preview_skip"
    call_id: str
    agent_id: int


class SpyRequest(DialerRequest):
    """Ring the supervisor's phone into an agent's call: listen, whisper or barge."""

    TYPE: ClassVar[str] = "spy"
    target_extension: str
    supervisor_extension: str
    mode: str
    gateway: str = "default"


class Reply(BaseModel):
    """The dialer's answer to a request: `ok`, or the refusal with an HTTP-like `status`."""

    model_config = ConfigDict(frozen=True)
    ok: bool
    error: str = ""
    status: int = 409  # of a refusal: what the web answers (409 conflict, 404, 422 ...)
    spy_id: str | None = None
