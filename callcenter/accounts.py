"""Users, roles and permissions: password hashing, authentication, role seeding and login throttling.

Domain errors here know nothing of HTTP; the web layer maps them to status codes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete
from sqlmodel import Session, col, select

from callcenter.errors import Conflict, NotFound
from callcenter.models import (
    BUILTIN_ROLES,
    PERMISSION_LABELS,
    Agent,
    AgentSkill,
    Campaign,
    Permission,
    PermissionRow,
    Role,
    RolePermission,
    SkillGroup,
    User,
    UserRole,
)

_hasher = PasswordHasher()
# Verified against when the username is unknown, so a wrong user and a wrong password cost the same
# time and an attacker cannot enumerate accounts by timing.
_DUMMY_HASH = _hasher.hash("no-such-user-dummy-password")


def row_id(row: Role | User | Agent | SkillGroup | Campaign) -> int:
    """The primary key of a flushed row (SQLModel types it optional until the INSERT)."""
    assert row.id is not None, f"{type(row).__name__} is not flushed"
    return row.id


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class Principal:
    """Who is asking: the user and the permissions granted through their roles."""

    user_id: int
    username: str
    display_name: str
    token_version: int
    roles: frozenset[str]
    permissions: frozenset[Permission]
    agent_id: int | None = None
    extension: str | None = None
    locale: str = "en"

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions


def seed_roles(session: Session) -> None:
    """Create the permission rows and the built-in roles (idempotent)."""
    for perm in Permission:
        if session.get(PermissionRow, perm.value) is None:
            session.add(PermissionRow(code=perm.value, description=PERMISSION_LABELS[perm]))
    session.flush()
    for name, perms in BUILTIN_ROLES.items():
        role = session.exec(select(Role).where(col(Role.name) == name)).first()
        if role is None:
            role = Role(name=name, description=f"built-in {name} role", builtin=True)
            session.add(role)
            session.flush()
        have = set(
            session.exec(select(RolePermission.permission).where(col(RolePermission.role_id) == role.id))
        )
        for perm in perms:
            if perm.value not in have:
                session.add(RolePermission(role_id=row_id(role), permission=perm.value))
    session.flush()


def role_ids(session: Session, names: Iterable[str]) -> list[int]:
    names = list(names)
    rows = session.exec(select(Role).where(col(Role.name).in_(names))).all()
    found = {r.name: row_id(r) for r in rows}
    missing = [n for n in names if n not in found]
    if missing:
        raise NotFound(f"unknown role(s): {', '.join(missing)}", field="roles")
    return [found[n] for n in names]


def create_user(
    session: Session,
    *,
    username: str,
    password: str,
    roles: Iterable[str] = (),
    display_name: str = "",
    locale: str = "en",
) -> User:
    """Create a user with the given role names. Raises `Conflict` when the username is taken."""
    username = username.strip()
    if not username:
        raise Conflict("username must not be empty", field="username")
    if len(password) < 8:
        raise Conflict("password must have at least 8 characters", field="password")
    if session.exec(select(User).where(col(User.username) == username)).first() is not None:
        raise Conflict(f"username {username!r} is taken", field="username")
    ids = role_ids(session, roles)
    user = User(
        username=username,
        display_name=display_name or username,
        locale=locale,
        password_hash=hash_password(password),
    )
    session.add(user)
    session.flush()
    for rid in ids:
        session.add(UserRole(user_id=row_id(user), role_id=rid))
    session.flush()
    return user


def set_user_roles(session: Session, *, user_id: int, roles: Iterable[str]) -> None:
    ids = role_ids(session, roles)
    session.execute(delete(UserRole).where(col(UserRole.user_id) == user_id))
    for rid in ids:
        session.add(UserRole(user_id=user_id, role_id=rid))
    session.flush()


def set_password(session: Session, *, user_id: int, password: str) -> None:
    """Change a password and revoke every session and token issued before."""
    if len(password) < 8:
        raise Conflict("password must have at least 8 characters", field="password")
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("no such user")
    user.password_hash = hash_password(password)
    user.token_version += 1
    session.add(user)
    session.flush()


def authenticate(session: Session, *, username: str, password: str) -> User | None:
    """The active user with this username and password, or None; constant work for unknown users."""
    user = session.exec(select(User).where(col(User.username) == username.strip())).first()
    if user is None or not user.is_active:
        verify_password(_DUMMY_HASH, password)
        return None
    if not verify_password(user.password_hash, password):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
        session.add(user)
    return user


def load_principal(session: Session, user_id: int) -> Principal | None:
    """The principal for an active user id, or None."""
    user = session.get(User, user_id)
    if user is None or not user.is_active:
        return None
    rows = session.exec(
        select(Role.name, RolePermission.permission)
        .join(UserRole, col(UserRole.role_id) == col(Role.id))
        .outerjoin(RolePermission, col(RolePermission.role_id) == col(Role.id))
        .where(col(UserRole.user_id) == user_id)
    ).all()
    roles = frozenset(r for r, _ in rows)
    perms = frozenset(Permission(p) for _, p in rows if p is not None and p in Permission._value2member_map_)
    agent = session.exec(select(Agent).where(col(Agent.user_id) == user_id)).first()
    assert user.id is not None
    return Principal(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        token_version=user.token_version,
        roles=roles,
        permissions=perms,
        agent_id=agent.id if agent else None,
        extension=agent.extension if agent else None,
        locale=user.locale,
    )


def create_skill_group(session: Session, *, name: str, description: str = "") -> SkillGroup:
    name = name.strip()
    if not name:
        raise Conflict("name must not be empty", field="name")
    if session.exec(select(SkillGroup).where(col(SkillGroup.name) == name)).first() is not None:
        raise Conflict(f"skill group {name!r} exists", field="name")
    group = SkillGroup(name=name, description=description)
    session.add(group)
    session.flush()
    return group


def create_agent(
    session: Session,
    *,
    user_id: int,
    extension: str,
    skill_group_ids: Iterable[int] = (),
    simulated: bool = False,
) -> Agent:
    """Bind a SIP extension to a user and put them in skill groups."""
    from callcenter.validation import validate_extension

    extension = validate_extension(extension)
    if session.get(User, user_id) is None:
        raise NotFound("no such user", field="user_id")
    if session.exec(select(Agent).where(col(Agent.extension) == extension)).first() is not None:
        raise Conflict(f"extension {extension} is already assigned", field="extension")
    if session.exec(select(Agent).where(col(Agent.user_id) == user_id)).first() is not None:
        raise Conflict("this user already has an extension", field="user_id")
    agent = Agent(user_id=user_id, extension=extension, simulated=simulated)
    session.add(agent)
    session.flush()
    set_agent_skills(session, agent_id=row_id(agent), skill_group_ids=skill_group_ids)
    return agent


def set_agent_skills(session: Session, *, agent_id: int, skill_group_ids: Iterable[int]) -> None:
    ids = list(dict.fromkeys(skill_group_ids))
    for gid in ids:
        if session.get(SkillGroup, gid) is None:
            raise NotFound(f"no skill group {gid}", field="skill_group_ids")
    session.execute(delete(AgentSkill).where(col(AgentSkill.agent_id) == agent_id))
    for gid in ids:
        session.add(AgentSkill(agent_id=agent_id, skill_group_id=gid))
    session.flush()
