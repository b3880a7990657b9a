"""Core tables. Times are float seconds since the epoch (UTC), taken from an injected clock, so the
same rows are written in real time and in a simulation. Enum columns are stored as their string values.

Entity roles follow the house pattern where an API exposes the entity: `XBase` (shared fields),
`XCreate` (input), `X(table=True)` (the row), `XPublic` (output).
"""

from __future__ import annotations

import json
import re
import time
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator
from pydantic import Field as PydanticField
from sqlalchemy import Index
from sqlalchemy.types import TypeDecorator
from sqlmodel import AutoString, Field, SQLModel
from sqlmodel._compat import SQLModelConfig

from callcenter.errors import DomainError


def now() -> float:
    return time.time()


class Permission(StrEnum):
    """Permission codes. The first three are the seed's own (坐席工作台, 多媒体坐席, 呼叫中心坐席)."""

    WORKSTATION = "workstation"  # agent workstation: status, screen pop, dispositions
    MULTIMEDIA_AGENT = "multimedia_agent"  # may take web chats
    CALLCENTER_AGENT = "callcenter_agent"  # has a SIP extension and takes calls
    CRM = "crm"  # read and write contacts, tags, notes
    TASK_MANAGE = "task_manage"  # create / edit / delete tasks, upload lists, DNC
    TASK_CONTROL = "task_control"  # start / pause / resume / stop tasks
    MONITOR = "monitor"  # live monitor, agent grid, listen / whisper / barge
    ADMIN = "admin"  # users, roles, skill groups, extensions, gateways


PERMISSION_LABELS: dict[Permission, str] = {
    Permission.WORKSTATION: "Agent workstation (坐席工作台)",
    Permission.MULTIMEDIA_AGENT: "Multimedia agent: takes web chats (多媒体坐席)",
    Permission.CALLCENTER_AGENT: "Call center agent: SIP extension, takes calls (呼叫中心坐席)",
    Permission.CRM: "Customer records",
    Permission.TASK_MANAGE: "Create and edit outbound tasks",
    Permission.TASK_CONTROL: "Start, pause and stop outbound tasks",
    Permission.MONITOR: "Live monitor and call listening",
    Permission.ADMIN: "Administration: users, roles, skill groups, extensions, gateways",
}

BUILTIN_ROLES: dict[str, frozenset[Permission]] = {
    "admin": frozenset(Permission),
    "supervisor": frozenset(
        {Permission.TASK_CONTROL, Permission.MONITOR, Permission.CRM, Permission.WORKSTATION}
    ),
    "agent": frozenset(
        {
            Permission.WORKSTATION,
            Permission.CALLCENTER_AGENT,
            Permission.MULTIMEDIA_AGENT,
            Permission.CRM,
        }
    ),
}


# --- accounts -------------------------------------------------------------------------------


class PermissionRow(SQLModel, table=True):
    __tablename__ = "permission"
    code: str = Field(primary_key=True, max_length=64)
    description: str = ""


class Role(SQLModel, table=True):
    __tablename__ = "role"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64)
    description: str = ""
    builtin: bool = False


class RolePermission(SQLModel, table=True):
    __tablename__ = "role_permission"
    role_id: int = Field(foreign_key="role.id", primary_key=True, ondelete="CASCADE")
    permission: str = Field(foreign_key="permission.code", primary_key=True, max_length=64)


class UserBase(SQLModel):
    username: str = Field(unique=True, index=True, min_length=1, max_length=64)
    display_name: str = Field(default="", max_length=128)
    locale: str = Field(default="en", max_length=8)


class User(UserBase, table=True):
    __tablename__ = "users"  # "user" is reserved in PostgreSQL
    id: int | None = Field(default=None, primary_key=True)
    password_hash: str
    is_active: bool = True
    # Bumped on password change or forced logout: every session cookie and API token carries the
    # version it was issued under, so bumping it revokes them all at once.
    token_version: int = 0
    created_at: float = Field(default_factory=now)
    # The phone a supervisor listens in from (an extension or a number), saved on their account.
    my_phone: str = Field(default="", max_length=32)


class UserRole(SQLModel, table=True):
    __tablename__ = "user_role"
    user_id: int = Field(foreign_key="users.id", primary_key=True, ondelete="CASCADE")
    role_id: int = Field(foreign_key="role.id", primary_key=True, ondelete="CASCADE")


# --- agents and skill groups ------------------------------------------------------------------


class SkillGroup(SQLModel, table=True):
    __tablename__ = "skill_group"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64)
    description: str = ""
    # The dialer that paces this group's tasks and routes to its agents, until `lease_until`: with
    # several dialers on one database, a group's agents are never counted or reserved by two.
    dialer_id: str | None = Field(default=None, max_length=64)
    lease_until: float | None = None


class Dialer(SQLModel, table=True):
    """A dialer process: it beats every second; one silent for long is dead and others take over."""

    __tablename__ = "dialer"
    id: str = Field(primary_key=True, max_length=64)
    host: str = Field(default="", max_length=255)
    pid: int = 0
    started_at: float = Field(default_factory=now)
    heartbeat_at: float = Field(default_factory=now)
    stopped_at: float | None = None


class AgentState(StrEnum):
    OFFLINE = "offline"
    READY = "ready"
    RESERVED = "reserved"  # a call is being connected to this agent
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"  # after-call work
    NOT_READY = "not_ready"
    AWAY = "away"


class Agent(SQLModel, table=True):
    """A user who takes calls: their SIP extension and where they are in the agent state table."""

    __tablename__ = "agent"
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", unique=True, ondelete="CASCADE")
    extension: str = Field(unique=True, index=True, max_length=32)
    state: str = Field(default=AgentState.OFFLINE.value, index=True, max_length=16)
    state_since: float = Field(default_factory=now)
    # Why the dialer put the agent in this state ("missed_call"); None when they chose it themselves.
    state_reason: str | None = Field(default=None, max_length=32)
    # When the agent last became ready: routing picks the ready agent who has waited longest.
    idle_since: float = Field(default_factory=now)
    call_id: str | None = Field(default=None, max_length=64)
    campaign_id: int | None = None
    # Simulated agents (demo, benchmarks) are driven by the simulated PBX, not by a person.
    simulated: bool = False
    # Where a call started by hand from not ready (or away) returns after its wrap-up: the agent
    # dialled out on purpose, not to be handed campaign calls (None: back to ready).
    after_wrap: str | None = Field(default=None, max_length=16)
    # Seconds the agent added to this wrap-up with "extend" (cleared on every state change).
    wrap_extra_s: float = 0.0


class AgentSkill(SQLModel, table=True):
    __tablename__ = "agent_skill"
    agent_id: int = Field(foreign_key="agent.id", primary_key=True, ondelete="CASCADE")
    skill_group_id: int = Field(foreign_key="skill_group.id", primary_key=True, ondelete="CASCADE")


# --- gateways ---------------------------------------------------------------------------------


class GatewayRow(SQLModel, table=True):
    """A PBX the dialer drives. Secrets are not stored here: `secret_env` names the environment
    variable that holds the password, so the database can be shared and backed up without it."""

    __tablename__ = "gateway"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64)
    kind: str = Field(max_length=16)  # GatewayKind value
    host: str = Field(default="", max_length=255)
    port: int = 0
    username: str = Field(default="", max_length=64)
    secret_env: str = Field(default="", max_length=64)
    dial_template: str = Field(default="", max_length=255)
    agent_template: str = Field(default="", max_length=255)
    enabled: bool = True
    # The dialer never sends more new calls than this per second through this PBX (a token bucket):
    # below the PBX's own limit (FreeSWITCH sessions-per-second), which the rendered config matches.
    originates_per_s: float = Field(default=10.0, sa_column_kwargs={"server_default": "10"})


# --- outbound tasks (campaigns), leads, calls ----------------------------------------------------


class CampaignState(StrEnum):
    INITIALIZING = "initializing"  # the list is being imported
    STOPPED = "stopped"
    RUNNING = "running"
    PAUSED = "paused"
    DELETED = "deleted"


class PacingMode(StrEnum):
    RATIO = "ratio"  # the seed's rule: min(max concurrency, floor(ready x ratio))
    PROGRESSIVE = "progressive"  # ratio 1
    PREVIEW = "preview"  # the agent sees the lead first and clicks to dial
    PREDICTIVE = "predictive"  # lines per agent from measured answer rate, talk time, abandon


class JsonText(TypeDecorator[Any]):
    """A JSON value (object or list) kept as text: the column stays a plain string column on every
    database, and the row gives back the value. A string is taken as JSON text already (raw inserts)."""

    impl = AutoString
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        if value is None or isinstance(value, str):
            return value
        return json.dumps(value, ensure_ascii=False)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        try:
            return json.loads(value)
        except ValueError:  # a hand-edited row: the raw text, which readers treat as "no value"
            return value


# --- task settings, declared once: the row, what an admin creates, what may be edited, what the API
# shows and what the dialer reads all derive from `CampaignBase` (constraints live in these types).

DEFAULT_RETRY_DELAYS: dict[str, float] = {
    "busy": 600,
    "no_answer": 1800,
    "congestion": 1800,
    "failed": 3600,
    "lost": 300,
}
DEFAULT_DISPOSITIONS: list[str] = ["interested", "not interested", "call back", "wrong number"]
_CALLER_NAME_UNSAFE = re.compile(r"[\x00-\x1f\x7f\"<>\\{}\[\],'^|;=$]")


def _pacing_mode(value: str) -> str:
    try:
        return PacingMode(value).value
    except ValueError:
        raise ValueError(f"pacing mode must be one of {', '.join(m.value for m in PacingMode)}") from None


def _caller_id(value: str) -> str:
    if value and not re.fullmatch(r"\+?[0-9]{2,20}", value):
        raise ValueError("caller ID must be 2-20 digits with an optional leading +")
    return value


def _caller_name(value: str) -> str:
    # Asterisk puts it inside "..." of a CallerID header, FreeSWITCH inside {...} of an originate:
    # a quote, a bracket or a separator would break every originate of the task (refused for ever).
    bad = _CALLER_NAME_UNSAFE.search(value)
    if bad:
        raise ValueError(f"caller name must not contain {bad.group(0)!r} or control characters")
    return value


def _retry_delays(value: Any) -> dict[str, float]:
    from callcenter.policy import RetryPolicy  # policy imports these models

    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("retry delays must be a JSON object {result: seconds}") from None
    try:
        return dict(RetryPolicy.parse(1, json.dumps(value)).delays)
    except DomainError as exc:
        raise ValueError(exc.message) from None


def _dispositions(value: Any) -> list[str]:
    """A list, a JSON list, or one outcome per line; blank ones dropped, at most 50 of 64 characters."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]  # one form field (a textarea): its text
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise ValueError("outcomes: not a JSON list") from None
        else:
            value = text.splitlines()
    if not isinstance(value, list):
        raise ValueError("outcomes must be a list")
    items = [str(v).strip() for v in value if str(v).strip()]
    if any(len(i) > 64 for i in items):
        raise ValueError("an outcome is at most 64 characters")
    return items[:50] or list(DEFAULT_DISPOSITIONS)


MaxConcurrency = Annotated[int, PydanticField(gt=0, le=10_000)]
AgentRatio = Annotated[float, PydanticField(gt=0, le=20)]
PacingModeName = Annotated[str, AfterValidator(_pacing_mode)]
AbandonTargetPct = Annotated[float, PydanticField(gt=0, le=100)]
PredictiveMinAgents = Annotated[int, PydanticField(ge=1, le=1000)]
HHMM = Annotated[str, PydanticField(pattern=r"^([01][0-9]|2[0-4]):[0-5][0-9]$")]


class CampaignBase(SQLModel):
    """An outbound task's settings (拨号计划 / 外呼任务). The list and the skill group never change after
    creation; only the pacing settings (`CampaignUpdate`) may be edited, and only when not running."""

    name: str = Field(min_length=1, max_length=128, index=True)
    skill_group_id: int = Field(foreign_key="skill_group.id")
    gateway_id: int | None = Field(default=None, foreign_key="gateway.id")
    max_concurrency: MaxConcurrency = 10
    agent_ratio: AgentRatio = 1.0
    pacing_mode: PacingModeName = Field(default=PacingMode.RATIO.value, max_length=16)
    abandon_target_pct: AbandonTargetPct = 3.0
    predictive_min_agents: PredictiveMinAgents = 10
    caller_id: Annotated[str, AfterValidator(_caller_id)] = Field(default="", max_length=32)
    caller_name: Annotated[str, AfterValidator(_caller_name)] = Field(default="", max_length=64)
    recording: bool = False
    amd: bool = False
    ring_timeout_s: int = Field(default=25, ge=15, le=120)  # DOMAIN: ring at least 15 s
    wrap_up_s: int = Field(default=30, ge=0, le=3600)
    # True: an agent whose call outcome is not saved stays in wrap-up when its time is over (until they
    # save it or choose Ready); False: wrap-up ends on time, saved or not.
    wrap_up_hold: bool = True
    # Calling window in the lead's own time zone ("HH:MM"); `timezone` is used for leads whose
    # number gives no zone.
    window_start: HHMM = Field(default="08:00", max_length=5)
    window_end: HHMM = Field(default="21:00", max_length=5)
    window_days: str = Field(default="0123456", max_length=7, regex=r"^[0-6]{1,7}$")  # Monday=0 ... Sunday=6
    timezone: str = Field(default="Asia/Shanghai", max_length=64)
    max_attempts: int = Field(default=3, ge=1, le=20)
    # {result: delay seconds}; a result not listed is never retried.
    retry_delays: Annotated[dict[str, float], BeforeValidator(_retry_delays)] = Field(
        default_factory=lambda: dict(DEFAULT_RETRY_DELAYS), sa_type=JsonText
    )
    # The message abandoned calls hear: abandon.wav in sip-config/sounds or freeswitch/sounds.
    abandon_sound: str = Field(default="abandon", max_length=128, regex=r"^[A-Za-z0-9_/-]{1,128}$")
    dispositions: Annotated[list[str], BeforeValidator(_dispositions)] = Field(
        default_factory=lambda: list(DEFAULT_DISPOSITIONS), sa_type=JsonText
    )


class Campaign(CampaignBase, table=True):
    __tablename__ = "campaign"
    id: int | None = Field(default=None, primary_key=True)
    state: str = Field(default=CampaignState.INITIALIZING.value, max_length=16, index=True)
    list_filename: str = Field(default="", max_length=255)
    created_by: str = Field(default="", max_length=64)
    created_at: float = Field(default_factory=now)
    started_at: float | None = None
    finished_at: float | None = None
    # Import progress (the list is imported by an rq job while the task is initializing).
    import_job_id: str = Field(default="", max_length=64)
    import_total: int = 0
    import_done: int = 0
    import_ok: int = 0
    import_rejected: int = 0
    import_rows_per_s: float = 0.0
    import_error: str = ""


class CampaignCreate(CampaignBase):
    """What an admin fills in to create a task (its list is uploaded beside it). The calling window
    is checked as a whole by `campaigns.create` (`policy.validate_window`)."""

    list_filename: str = Field(default="", max_length=255)


class CampaignUpdate(SQLModel):
    """The settings an edit may change: pacing only, and only while the task is not running."""

    model_config = SQLModelConfig(extra="forbid")
    max_concurrency: MaxConcurrency | None = None
    agent_ratio: AgentRatio | None = None
    pacing_mode: PacingModeName | None = None
    abandon_target_pct: AbandonTargetPct | None = None
    predictive_min_agents: PredictiveMinAgents | None = None


class CampaignAudit(SQLModel, table=True):
    """One row per state change of a task: who, when, from, to."""

    __tablename__ = "campaign_audit"
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    at: float = Field(default_factory=now)
    actor: str = Field(max_length=64)
    old: str = Field(max_length=16)
    new: str = Field(max_length=16)
    note: str = ""


class LeadStatus(StrEnum):
    PENDING = "pending"  # waiting to be dialled at or after next_at
    CLAIMED = "claimed"  # a dialer took it and is placing the call
    DONE = "done"  # no more attempts: answered, out of attempts, or not retried
    DNC = "dnc"  # found on the do-not-call list at dial time


class Lead(SQLModel, table=True):
    """One number of a task's list, with the other columns of its row kept in `fields` (JSON)."""

    __tablename__ = "lead"
    __table_args__ = (Index("ix_lead_claim", "campaign_id", "status", "next_at"),)
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    row_no: int = 0
    number: str = Field(max_length=20, index=True)
    tz: str = Field(default="", max_length=64)
    fields: str = "{}"
    status: str = Field(default=LeadStatus.PENDING.value, max_length=10)
    attempts: int = 0
    next_at: float = 0.0
    claimed_by: str = Field(default="", max_length=64)
    claimed_at: float | None = None
    last_result: str = Field(default="", max_length=20)
    last_call_id: str = Field(default="", max_length=64)


class ImportIssue(SQLModel, table=True):
    """A list row that was not imported, and why (downloadable as the import report)."""

    __tablename__ = "import_issue"
    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    row_no: int
    raw_number: str = ""
    reason: str = Field(max_length=16)  # invalid, duplicate, dnc, empty
    detail: str = ""


class DncEntry(SQLModel, table=True):
    """The do-not-call list, checked at import and again before every dial."""

    __tablename__ = "dnc"
    number: str = Field(primary_key=True, max_length=20)
    added_at: float = Field(default_factory=now)
    source: str = Field(default="", max_length=64)
    note: str = ""


class CallState(StrEnum):
    PREVIEW = "preview"  # preview mode: shown to its agent, not dialled yet
    DIALING = "dialing"
    RINGING = "ringing"
    ANSWERED = "answered"  # a person (or machine) answered; waiting for an agent
    AGENT_RINGING = "agent_ringing"  # an agent was reserved and their phone is being connected
    CONNECTED = "connected"
    ABANDONING = "abandoning"  # no agent in time: the abandon message plays, the PBX hangs up after
    HANGING_UP = "hanging_up"  # we asked the PBX to hang up (pause/stop while ringing, a machine)
    ENDED = "ended"


class CallResult(StrEnum):
    """The result of one attempt (DOMAIN: leads and attempts)."""

    ANSWERED = "answered"  # a person answered and was connected to an agent
    MACHINE = "machine"  # an answering machine (AMD verdict)
    ABANDONED = "abandoned"  # a person answered and no agent was connected within 2 s
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    CONGESTION = "congestion"  # the network or carrier had no room (Q.850 34, SIP 503)
    FAILED = "failed"  # invalid number, unreachable, rejected
    CANCELLED = "cancelled"  # hung up by us before answer (pause / stop)
    SKIPPED = "skipped"  # a previewed lead the agent passed on: never dialled
    DNC = "dnc"  # on the do-not-call list at dial time: not dialled
    LOST = "lost"  # the gateway lost the call (link drop, dialer restart)
    NOT_DIALLED = "not_dialled"  # the gateway was unavailable: nothing was sent
    REFUSED = "refused"  # the PBX refused it before trying the line (shutdown, throttle): a gateway fault


class Call(SQLModel, table=True):
    """One attempt (or one manual call), with a timestamp for each stage."""

    __tablename__ = "call"
    __table_args__ = (
        Index("ix_call_campaign_state", "campaign_id", "state"),
        Index("ix_call_agent", "agent_id"),
    )
    id: str = Field(primary_key=True, max_length=64)
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id")
    lead_id: int | None = Field(default=None, foreign_key="lead.id")
    number: str = Field(max_length=20, index=True)
    direction: str = Field(default="outbound", max_length=8)  # outbound | manual
    state: str = Field(default=CallState.DIALING.value, max_length=16)
    attempt: int = 1
    dialer_id: str = Field(default="", max_length=64)
    gateway: str = Field(default="", max_length=64)
    agent_id: int | None = Field(default=None, foreign_key="agent.id")
    created_at: float = Field(default_factory=now)
    ringing_at: float | None = None
    answered_at: float | None = None
    answer_kind: str = Field(default="", max_length=8)
    agent_at: float | None = None  # an agent was reserved and asked to pick up
    connected_at: float | None = None
    ended_at: float | None = None
    result: str = Field(default="", max_length=16)
    cause: int = 0
    detail: str = ""
    disposition: str = Field(default="", max_length=64)


class CallEvent(SQLModel, table=True):
    """One step of a call's life, in time order: what the PBX reported and what the dialer did (the
    ladder support reads to answer "what happened to this call")."""

    __tablename__ = "call_event"
    __table_args__ = (Index("ix_call_event_call", "call_id", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    call_id: str = Field(max_length=64)
    at: float
    kind: str = Field(max_length=32)  # originate, ringing, answered, agent, connected, abandon, ended ...
    detail: str = Field(default="", max_length=500)


class AgentStateLog(SQLModel, table=True):
    """Every agent state change: reports add up the time in each state and the not-ready reasons."""

    __tablename__ = "agent_state_log"
    __table_args__ = (Index("ix_agent_state_log_agent", "agent_id", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    agent_id: int
    at: float
    state: str = Field(max_length=16)
    reason: str | None = Field(default=None, max_length=32)
    call_id: str | None = Field(default=None, max_length=64)


class CallDraft(SQLModel, table=True):
    """What an agent typed on a call's panel and has not saved yet (contact fields, tags, outcome,
    note), kept per call so a reload, another browser or the next pop never loses it. `settled_at` is
    set when the outcome is saved (or the agent discards it): the wrap-up hold looks at it."""

    __tablename__ = "call_draft"
    __table_args__ = (Index("ix_call_draft_agent", "agent_id", "settled_at"),)
    call_id: str = Field(primary_key=True, max_length=64)
    agent_id: int
    body: dict[str, Any] = Field(default_factory=dict, sa_type=JsonText)
    updated_at: float = Field(default_factory=now)
    settled_at: float | None = None


class NotReadyReason(SQLModel, table=True):
    """A not-ready reason an admin added to the built-in ones (break, lunch, training)."""

    __tablename__ = "not_ready_reason"
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(unique=True, max_length=32, regex=r"^[a-z0-9_]{1,32}$")
    label: str = Field(max_length=64)
