"""Base rows every installation needs (permissions, built-in roles) and the demo data set."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from callcenter import accounts
from callcenter.config import Settings
from callcenter.db import session_scope
from callcenter.models import SkillGroup, User

DEMO_LOGINS: dict[str, tuple[str, str]] = {
    "admin": ("admin", "admin-demo"),
    "supervisor": ("supervisor", "supervisor-demo"),
    "agent": ("agent1", "agent-demo"),
}
DEMO_AGENTS = [("agent1", "1001"), ("agent2", "1002"), ("agent3", "1003")]


def seed_base(engine: Engine) -> None:
    with session_scope(engine) as session:
        accounts.seed_roles(session)


def seed_demo(engine: Engine, settings: Settings) -> None:
    """Idempotent: an admin, a supervisor, agents with extensions 1001-1003 in skill group Sales."""
    seed_base(engine)
    with session_scope(engine) as session:

        def ensure_user(username: str, password: str, roles: list[str], display: str) -> User:
            user = session.exec(select(User).where(col(User.username) == username)).first()
            if user is None:
                user = accounts.create_user(
                    session, username=username, password=password, roles=roles, display_name=display
                )
            return user

        ensure_user(*DEMO_LOGINS["admin"], ["admin"], "Admin")
        ensure_user(*DEMO_LOGINS["supervisor"], ["supervisor"], "Supervisor")
        group = session.exec(select(SkillGroup).where(col(SkillGroup.name) == "Sales")).first()
        if group is None:
            group = accounts.create_skill_group(session, name="Sales", description="销售 demo group")
        for username, ext in DEMO_AGENTS:
            user = ensure_user(username, DEMO_LOGINS["agent"][1], ["agent"], f"Agent {ext}")
            from callcenter.models import Agent

            if session.exec(select(Agent).where(col(Agent.user_id) == user.id)).first() is None:
                assert user.id is not None and group.id is not None
                accounts.create_agent(session, user_id=user.id, extension=ext, skill_group_ids=[group.id])
