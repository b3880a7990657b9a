"""Administration API: users, roles, skill groups, agents (SIP extensions) and gateways.

Every field here that reaches a PBX - in a command to it (AMI, ESL) or in the configuration rendered
for it (sip-config, freeswitch) - is checked where it is entered, against what that place can hold: a
CR or LF would end an AMI or ESL command and start another, a quote or brace would end a value in a
config file or open ESL variables, `&` dials a second channel, and a dial template is a Python format
string (`{number.__class__}` reaches attributes). Users' names end up as caller names in the PBX's
config; skill group names are kept as plain too, for the same destinations.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import AfterValidator, BaseModel, Field
from sqlalchemy import delete, select
from sqlmodel import Session

from callcenter import accounts
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


def _template(placeholder: str) -> AfterValidator:
    """A dial string template: `placeholder` once, around it only what a channel name holds."""

    def check(value: str) -> str:
        if value and (value.count(placeholder) != 1 or not _DIAL.fullmatch(value.replace(placeholder, ""))):
            raise ValueError(
                f"must hold {placeholder} once and otherwise only letters, digits and _ / @ . : + -"
            )
        return value

    return AfterValidator(check)


_DIAL = re.compile(r"[A-Za-z0-9_/@.:+-]*")
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
GatewayName = Annotated[str, _matching(r"[A-Za-z0-9_.-]{1,64}", "letters, digits and _ . - only")]
Host = Annotated[
    str,
    _matching(
        r"|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]",
        "a host name or an IP address ([...] for IPv6)",
    ),
]
PbxUser = Annotated[str, _matching(r"[A-Za-z0-9_.@-]{0,64}", "letters, digits and _ . @ - only")]


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
    name: GatewayName
    kind: GatewayKind
    host: Host = ""
    port: int = Field(0, ge=0, le=65535)
    username: PbxUser = ""
    secret_env: str = Field("", max_length=64, pattern=r"^[A-Z0-9_]*$")
    dial_template: Annotated[str, _template("{number}")] = Field("", max_length=255)
    agent_template: Annotated[str, _template("{extension}")] = Field("", max_length=255)
    enabled: bool = True


class GatewayPublic(GatewayCreate):
    id: int


def _user_public(session: Session, user: User) -> UserPublic:
    roles = (
        session.execute(
            select(Role.name).join(UserRole, UserRole.role_id == Role.id).where(UserRole.user_id == user.id)
        )
        .scalars()
        .all()
    )
    agent = session.execute(select(Agent).where(Agent.user_id == user.id)).scalar_one_or_none()
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
            session.execute(select(RolePermission.permission).where(RolePermission.role_id == role.id))
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
        session.execute(select(AgentSkill.agent_id).where(AgentSkill.skill_group_id == group.id))
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
        if session.execute(select(SkillGroup).where(SkillGroup.name == name)).first():
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
        session.execute(delete(AgentSkill).where(AgentSkill.skill_group_id == group_id))
        session.add_all(AgentSkill(agent_id=a, skill_group_id=group_id) for a in wanted)
    session.flush()
    return _group_public(session, group)


def _agent_public(session: Session, agent: Agent) -> AgentPublic:
    user = session.get(User, agent.user_id)
    groups = (
        session.execute(select(AgentSkill.skill_group_id).where(AgentSkill.agent_id == agent.id))
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
        taken = session.execute(select(Agent).where(Agent.extension == body.extension)).first()
        if taken:
            raise Conflict(f"extension {body.extension} is already assigned", field="extension")
        agent.extension = body.extension
        session.add(agent)
    if body.skill_group_ids is not None:
        accounts.set_agent_skills(session, agent_id=agent_id, skill_group_ids=body.skill_group_ids)
    session.flush()
    return _agent_public(session, agent)


@router.get("/gateways")
def list_gateways(session: Session = Depends(get_session)) -> list[GatewayPublic]:
    rows = session.execute(select(GatewayRow).order_by(GatewayRow.name)).scalars().all()
    return [GatewayPublic.model_validate(r, from_attributes=True) for r in rows]


@router.post("/gateways", status_code=201)
def create_gateway(body: GatewayCreate, session: Session = Depends(get_session)) -> GatewayPublic:
    if session.execute(select(GatewayRow).where(GatewayRow.name == body.name)).first():
        raise Conflict(f"gateway {body.name!r} exists", field="name")
    row = GatewayRow(**body.model_dump(mode="json"))
    session.add(row)
    session.flush()
    return GatewayPublic.model_validate(row, from_attributes=True)
