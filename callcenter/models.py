"""Core tables. Times are float seconds since the epoch (UTC), taken from an injected clock, so the
same rows are written in real time and in a simulation. Enum columns are stored as their string values.

Entity roles follow the house pattern where an API exposes the entity: `XBase` (shared fields),
`XCreate` (input), `X(table=True)` (the row), `XPublic` (output).
"""

from __future__ import annotations

import time
from enum import StrEnum

from sqlalchemy import Index
from sqlmodel import Field, SQLModel


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
    display_name: str = Field("", max_length=128)
    locale: str = Field("en", max_length=8)


class User(UserBase, table=True):
    __tablename__ = "users"  # "user" is reserved in PostgreSQL
    id: int | None = Field(default=None, primary_key=True)
    password_hash: str
    is_active: bool = True
    # Bumped on password change or forced logout: every session cookie and API token carries the
    # version it was issued under, so bumping it revokes them all at once.
    token_version: int = 0
    created_at: float = Field(default_factory=now)


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
    host: str = Field("", max_length=255)
    port: int = 0
    username: str = Field("", max_length=64)
    secret_env: str = Field("", max_length=64)
    dial_template: str = Field("", max_length=255)
    agent_template: str = Field("", max_length=255)
    enabled: bool = True


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


class Campaign(SQLModel, table=True):
    """An outbound task (拨号计划 / 外呼任务). The list and the skill group never change after creation."""

    __tablename__ = "campaign"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, index=True)
    state: str = Field(default=CampaignState.INITIALIZING.value, max_length=16, index=True)
    skill_group_id: int = Field(foreign_key="skill_group.id")
    gateway_id: int | None = Field(default=None, foreign_key="gateway.id")
    max_concurrency: int = 10
    agent_ratio: float = 1.0
    pacing_mode: str = Field(default=PacingMode.RATIO.value, max_length=16)
    abandon_target_pct: float = 3.0
    predictive_min_agents: int = 10
    caller_id: str = Field("", max_length=32)
    caller_name: str = Field("", max_length=64)
    recording: bool = False
    amd: bool = False
    ring_timeout_s: int = 25
    wrap_up_s: int = 30
    # Calling window in the lead's own time zone ("HH:MM"); `timezone` is used for leads whose
    # number gives no zone.
    window_start: str = Field("08:00", max_length=5)
    window_end: str = Field("21:00", max_length=5)
    window_days: str = Field("0123456", max_length=7)  # Monday=0 ... Sunday=6
    timezone: str = Field("Asia/Shanghai", max_length=64)
    max_attempts: int = 3
    # JSON object {result: delay seconds}; a result not listed is never retried.
    retry_delays: str = Field(
        default='{"busy": 600, "no_answer": 1800, "congestion": 1800, "failed": 3600, "lost": 300}'
    )
    # The message abandoned calls hear: abandon.wav in sip-config/sounds or freeswitch/sounds.
    abandon_sound: str = Field("abandon", max_length=128)
    dispositions: str = Field(default='["interested", "not interested", "call back", "wrong number"]')
    list_filename: str = Field("", max_length=255)
    created_by: str = Field("", max_length=64)
    created_at: float = Field(default_factory=now)
    started_at: float | None = None
    finished_at: float | None = None
    # Import progress (the list is imported by an rq job while the task is initializing).
    import_job_id: str = Field("", max_length=64)
    import_total: int = 0
    import_done: int = 0
    import_ok: int = 0
    import_rejected: int = 0
    import_rows_per_s: float = 0.0
    import_error: str = ""


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
    tz: str = Field("", max_length=64)
    fields: str = "{}"
    status: str = Field(default=LeadStatus.PENDING.value, max_length=10)
    attempts: int = 0
    next_at: float = 0.0
    claimed_by: str = Field("", max_length=64)
    claimed_at: float | None = None
    last_result: str = Field("", max_length=20)
    last_call_id: str = Field("", max_length=64)


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
    source: str = Field("", max_length=64)
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
    direction: str = Field("outbound", max_length=8)  # outbound | manual
    state: str = Field(default=CallState.DIALING.value, max_length=16)
    attempt: int = 1
    dialer_id: str = Field("", max_length=64)
    gateway: str = Field("", max_length=64)
    agent_id: int | None = Field(default=None, foreign_key="agent.id")
    created_at: float = Field(default_factory=now)
    ringing_at: float | None = None
    answered_at: float | None = None
    answer_kind: str = Field("", max_length=8)
    agent_at: float | None = None  # an agent was reserved and asked to pick up
    connected_at: float | None = None
    ended_at: float | None = None
    result: str = Field("", max_length=16)
    cause: int = 0
    detail: str = ""
    disposition: str = Field("", max_length=64)
