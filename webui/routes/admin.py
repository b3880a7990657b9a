"""Administration API: users, roles, skill groups, agents (SIP extensions) and gateways.

Every field here that reaches a PBX - in a command to it (AMI, ESL) or in the configuration rendered
for it (sip-config, freeswitch) - is checked where it is entered, against what that place can hold: a
CR or LF would end an AMI or ESL command and start another, a quote or brace would end a value in a
config file or open ESL variables. Gateways' fields are checked by `gateway_admin.check_fields`;
users' names end up as caller names in the PBX's config; skill group names are kept as plain too.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import delete, select
from sqlmodel import Session, col

from callcenter import accounts, gateway_admin
from callcenter import agents as agent_states
from callcenter.config import GatewayKind
from callcenter.errors import Conflict, NotFound
from callcenter.http import RevokeReason, get_ctx, get_session, publish_revocation, require
from callcenter.messages import AgentStateChanged
from callcenter.models import (
    Agent,
    AgentSkill,
    AgentState,
    GatewayRow,
    Permission,
    Role,
    RolePermission,
    SkillGroup,
    User,
    UserRole,
)
from callcenter.notifier import Notifier
from webui.dialer_client import dialer

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/admin", dependencies=[require(Permission.ADMIN)])


def _matching(pattern: str, what: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(what)
        return value

    return AfterValidator(check)


Login = Annotated[str, _matching(r"[\w.@-]{1,64}", "letters, digits and _ . @ - only")]
# As the FreeSWITCH directory and the Asterisk config can hold it (callcenter.pbxconfig).
PersonName = Annotated[
    str,
    _matching(
        r"[^\x00-\x1f\x7f<>&\"',{}\[\];|\\]{0,64}",
        "at most 64 characters, none of < > & \" ' , { } [ ] ; | \\",
    ),
]
GroupName = Annotated[
    str, _matching(r"[\w .()-]{1,64}", "letters, digits, spaces and _ . ( ) - only, at most 64")
]


class UserCreate(BaseModel):
    username: Login
    password: str = Field(min_length=8, max_length=256)
    display_name: PersonName = ""
    roles: list[str] = Field(default_factory=list)
    locale: str = Field("en", pattern="^(en|zh)$")


class UserUpdate(BaseModel):
    display_name: PersonName | None = None
    roles: list[str] | None = None
    is_active: bool | None = None
    password: str | None = Field(None, min_length=8, max_length=256)
    locale: str | None = Field(None, pattern="^(en|zh)$")


class UserPublic(BaseModel):
    id: int
    username: str
    display_name: str
    is_active: bool
    locale: str
    roles: list[str]
    extension: str | None


class RolePublic(BaseModel):
    id: int
    name: str
    description: str
    builtin: bool
    permissions: list[str]


class SkillGroupCreate(BaseModel):
    name: GroupName
    description: str = Field("", max_length=500)


class SkillGroupUpdate(BaseModel):
    name: GroupName | None = None
    description: str | None = Field(None, max_length=500)
    agent_ids: list[int] | None = None  # replaces the group's members


class SkillGroupPublic(BaseModel):
    id: int
    name: str
    description: str
    agent_ids: list[int]


class AgentCreate(BaseModel):
    user_id: int
    extension: str = Field(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z_]+$")
    skill_group_ids: list[int] = Field(default_factory=list)


class AgentUpdate(BaseModel):
    extension: str | None = Field(None, min_length=1, max_length=32, pattern=r"^[0-9A-Za-z_]+$")
    skill_group_ids: list[int] | None = None


class AgentPublic(BaseModel):
    id: int
    user_id: int
    username: str
    extension: str
    state: str
    skill_group_ids: list[int]
    simulated: bool


class GatewayCreate(BaseModel):
    """A PBX the dialer drives. Every field that reaches the PBX is checked again by
    `gateway_admin.check_fields` (host, port, user, templates, the secret's variable)."""

    name: str = Field(min_length=1, max_length=64)
    kind: GatewayKind
    host: str = Field("", max_length=255)
    port: int = Field(0, ge=0, le=65535)
    username: str = Field("", max_length=64)
    secret_env: str = Field("", max_length=64)
    dial_template: str = Field("", max_length=255)
    agent_template: str = Field("", max_length=255)
    enabled: bool = True
    originates_per_s: float = Field(10.0, gt=0, le=1000)


class GatewayUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=64)
    host: str | None = Field(None, max_length=255)
    port: int | None = Field(None, ge=0, le=65535)
    username: str | None = Field(None, max_length=64)
    secret_env: str | None = Field(None, max_length=64)
    dial_template: str | None = Field(None, max_length=255)
    agent_template: str | None = Field(None, max_length=255)
    enabled: bool | None = None
    originates_per_s: float | None = Field(None, gt=0, le=1000)


class GatewayPublic(GatewayCreate):
    """A gateway as pages see it: its secret never, only whether the variable it names is set."""

    id: int
    key: str  # the dialer's name for it ("gw<id>"), as in GatewayStatus
    secret_set: bool
    status: dict[str, Any] | None = None  # the latest GatewayStatus


class GatewayTest(BaseModel):
    ok: bool
    detail: str


def _user_public(session: Session, user: User) -> UserPublic:
    roles = (
        session.execute(
            select(col(Role.name))
            .join(UserRole, col(UserRole.role_id) == col(Role.id))
            .where(col(UserRole.user_id) == user.id)
        )
        .scalars()
        .all()
    )
    agent = session.execute(select(Agent).where(col(Agent.user_id) == user.id)).scalar_one_or_none()
    assert user.id is not None
    return UserPublic(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        is_active=user.is_active,
        locale=user.locale,
        roles=sorted(roles),
        extension=agent.extension if agent else None,
    )


@router.get("/users")
def list_users(session: Session = Depends(get_session)) -> list[UserPublic]:
    users = session.execute(select(User).order_by(User.username)).scalars().all()
    return [_user_public(session, u) for u in users]


@router.post("/users", status_code=201)
def create_user(body: UserCreate, session: Session = Depends(get_session)) -> UserPublic:
    user = accounts.create_user(
        session,
        username=body.username,
        password=body.password,
        roles=body.roles,
        display_name=body.display_name,
        locale=body.locale,
    )
    return _user_public(session, user)


@router.patch("/users/{user_id}")
def update_user(
    user_id: int, body: UserUpdate, request: Request, session: Session = Depends(get_session)
) -> UserPublic:
    """Edit a user. A password change or a deactivation ends their sessions and closes their sockets
    (in every web process); a role change closes their sockets so they reconnect with what they may
    now have. An agent who is deactivated or loses the agent permission is set offline and the
    dialer told, so no customer is routed to them."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("no such user")
    before = accounts.load_principal(session, user_id)
    reason: RevokeReason | None = None
    if body.display_name is not None:
        user.display_name = body.display_name
    if body.locale is not None:
        user.locale = body.locale
    if body.is_active is not None:
        if user.is_active and not body.is_active:
            reason = "deactivated"
        user.is_active = body.is_active
        user.token_version += 1
    session.add(user)
    if body.roles is not None:
        accounts.set_user_roles(session, user_id=user_id, roles=body.roles)
        if reason is None and before is not None and set(body.roles) != set(before.roles):
            reason = "roles"
    if body.password is not None:
        accounts.set_password(session, user_id=user_id, password=body.password)
        if reason != "deactivated":
            reason = "password"
    session.flush()
    after = accounts.load_principal(session, user_id)
    withdrawn = _withdrawn_agent(before, after)
    moved = _set_offline(session, withdrawn) if withdrawn is not None else None
    session.commit()  # before telling anyone: a reconnecting socket or the dialer reads the new rows
    redis = get_ctx(request).redis
    if reason is not None:
        publish_revocation(redis, user_id=user_id, reason=reason)
    if moved is not None:
        Notifier(get_ctx(request).bus).publish(AgentStateChanged.of_agent(moved))
    if withdrawn is not None:
        dialer(request).agent_changed(withdrawn)
    return _user_public(session, user)


def _withdrawn_agent(before: accounts.Principal | None, after: accounts.Principal | None) -> int | None:
    """The agent id of a user who could take calls before this change and cannot now."""
    if before is None or before.agent_id is None or not before.can(Permission.CALLCENTER_AGENT):
        return None
    if after is not None and after.can(Permission.CALLCENTER_AGENT):
        return None
    return before.agent_id


def _set_offline(session: Session, agent_id: int) -> Agent | None:
    """Log an agent off through the agent state table; None when they are on a call (the dialer is
    told all the same, and a user who is inactive cannot set themselves ready again)."""
    agent = session.get(Agent, agent_id)
    if agent is None or agent.state == AgentState.OFFLINE.value:
        return None
    try:
        agent_states.apply(session, agent_id=agent_id, event=agent_states.AgentEvent.LOGOUT, now=time.time())
    except agent_states.InvalidTransition:
        log.warning("agent %s withdrawn while %s: left for the dialer to end the call", agent_id, agent.state)
        return None
    session.refresh(agent)
    return agent


@router.get("/roles")
def list_roles(session: Session = Depends(get_session)) -> list[RolePublic]:
    out = []
    for role in session.execute(select(Role).order_by(Role.name)).scalars():
        perms = (
            session.execute(
                select(col(RolePermission.permission)).where(col(RolePermission.role_id) == role.id)
            )
            .scalars()
            .all()
        )
        assert role.id is not None
        out.append(
            RolePublic(
                id=role.id,
                name=role.name,
                description=role.description,
                builtin=role.builtin,
                permissions=sorted(perms),
            )
        )
    return out


@router.get("/permissions")
def list_permissions() -> list[dict[str, str]]:
    from callcenter.models import PERMISSION_LABELS

    return [{"code": p.value, "description": PERMISSION_LABELS[p]} for p in Permission]


def _group_public(session: Session, group: SkillGroup) -> SkillGroupPublic:
    ids = (
        session.execute(select(col(AgentSkill.agent_id)).where(col(AgentSkill.skill_group_id) == group.id))
        .scalars()
        .all()
    )
    assert group.id is not None
    return SkillGroupPublic(
        id=group.id, name=group.name, description=group.description, agent_ids=sorted(ids)
    )


@router.get("/skill-groups")
def list_skill_groups(session: Session = Depends(get_session)) -> list[SkillGroupPublic]:
    groups = session.execute(select(SkillGroup).order_by(SkillGroup.name)).scalars().all()
    return [_group_public(session, g) for g in groups]


@router.post("/skill-groups", status_code=201)
def create_skill_group(body: SkillGroupCreate, session: Session = Depends(get_session)) -> SkillGroupPublic:
    group = accounts.create_skill_group(session, name=body.name, description=body.description)
    return _group_public(session, group)


@router.patch("/skill-groups/{group_id}")
def update_skill_group(
    group_id: int, body: SkillGroupUpdate, session: Session = Depends(get_session)
) -> SkillGroupPublic:
    group = session.get(SkillGroup, group_id)
    if group is None:
        raise NotFound("no such skill group")
    if body.name is not None and body.name.strip() != group.name:
        name = body.name.strip()
        if session.execute(select(SkillGroup).where(col(SkillGroup.name) == name)).first():
            raise Conflict(f"skill group {name!r} exists", field="name")
        group.name = name
    if body.description is not None:
        group.description = body.description
    session.add(group)
    if body.agent_ids is not None:
        wanted = list(dict.fromkeys(body.agent_ids))
        for agent_id in wanted:
            if session.get(Agent, agent_id) is None:
                raise NotFound(f"no agent {agent_id}", field="agent_ids")
        session.execute(delete(AgentSkill).where(col(AgentSkill.skill_group_id) == group_id))
        session.add_all(AgentSkill(agent_id=a, skill_group_id=group_id) for a in wanted)
    session.flush()
    return _group_public(session, group)


def _agent_public(session: Session, agent: Agent) -> AgentPublic:
    user = session.get(User, agent.user_id)
    groups = (
        session.execute(select(col(AgentSkill.skill_group_id)).where(col(AgentSkill.agent_id) == agent.id))
        .scalars()
        .all()
    )
    assert agent.id is not None
    return AgentPublic(
        id=agent.id,
        user_id=agent.user_id,
        username=user.username if user else "?",
        extension=agent.extension,
        state=agent.state,
        skill_group_ids=sorted(groups),
        simulated=agent.simulated,
    )


@router.get("/agents")
def list_agents(session: Session = Depends(get_session)) -> list[AgentPublic]:
    agents = session.execute(select(Agent).order_by(Agent.extension)).scalars().all()
    return [_agent_public(session, a) for a in agents]


@router.post("/agents", status_code=201)
def create_agent(body: AgentCreate, session: Session = Depends(get_session)) -> AgentPublic:
    agent = accounts.create_agent(
        session, user_id=body.user_id, extension=body.extension, skill_group_ids=body.skill_group_ids
    )
    return _agent_public(session, agent)


@router.patch("/agents/{agent_id}")
def update_agent(agent_id: int, body: AgentUpdate, session: Session = Depends(get_session)) -> AgentPublic:
    agent = session.get(Agent, agent_id)
    if agent is None:
        raise NotFound("no such agent")
    if body.extension is not None and body.extension != agent.extension:
        taken = session.execute(select(Agent).where(col(Agent.extension) == body.extension)).first()
        if taken:
            raise Conflict(f"extension {body.extension} is already assigned", field="extension")
        agent.extension = body.extension
        session.add(agent)
    if body.skill_group_ids is not None:
        accounts.set_agent_skills(session, agent_id=agent_id, skill_group_ids=body.skill_group_ids)
    session.flush()
    return _agent_public(session, agent)


def _gateway_public(row: GatewayRow, statuses: dict[str, dict[str, Any]]) -> GatewayPublic:
    assert row.id is not None
    key = gateway_admin.gateway_key(row.id)
    data = row.model_dump(exclude={"id"})
    return GatewayPublic(
        **data,
        id=row.id,
        key=key,
        secret_set=gateway_admin.secret_is_set(row),
        status=statuses.get(key),
    )


def gateways_public(session: Session, redis: Any) -> list[GatewayPublic]:
    rows = session.execute(select(GatewayRow).order_by(GatewayRow.name)).scalars().all()
    statuses = gateway_admin.latest_statuses(redis, [gateway_admin.gateway_key(r.id) for r in rows])
    return [_gateway_public(r, statuses) for r in rows]


@router.get("/gateways")
def list_gateways(request: Request, session: Session = Depends(get_session)) -> list[GatewayPublic]:
    return gateways_public(session, get_ctx(request).redis)


@router.post("/gateways", status_code=201)
def create_gateway(
    body: GatewayCreate, request: Request, session: Session = Depends(get_session)
) -> GatewayPublic:
    row = gateway_admin.create_gateway(session, fields=body.model_dump(mode="json"))
    return _gateway_public(row, {})


@router.patch("/gateways/{gateway_id}")
def update_gateway(
    gateway_id: int, body: GatewayUpdate, request: Request, session: Session = Depends(get_session)
) -> GatewayPublic:
    changes = body.model_dump(exclude_unset=True, mode="json")
    row = gateway_admin.update_gateway(session, gateway_id, changes=changes)
    assert row.id is not None
    key = gateway_admin.gateway_key(row.id)
    return _gateway_public(row, gateway_admin.latest_statuses(get_ctx(request).redis, [key]))


@router.post("/gateways/{gateway_id}/test")
async def test_gateway(gateway_id: int, request: Request) -> GatewayTest:
    """Log in to the gateway's AMI or event socket from this web process (a few seconds at most)
    and say what happened. Sends nothing else."""
    from sqlmodel import Session as SyncSession

    ctx = get_ctx(request)
    with SyncSession(ctx.engine) as session:
        row = session.get(GatewayRow, gateway_id)
        if row is None:
            raise NotFound("no such gateway")
        session.expunge(row)
    result = await gateway_admin.probe(row, ctx.settings, timeout_s=min(3.0, ctx.settings.gateway_timeout_s))
    return GatewayTest(ok=result.ok, detail=result.detail)
