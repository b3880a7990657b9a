"""Core tables. Times are float seconds since the epoch (UTC), taken from an injected clock, so the
same rows are written in real time and in a simulation. Enum columns are stored as their string values.

Entity roles follow the house pattern where an API exposes the entity: `XBase` (shared fields),
`XCreate` (input), `X(table=True)` (the row), `XPublic` (output).
"""

from __future__ import annotations

import time
from enum import StrEnum

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
