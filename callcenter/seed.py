"""Base rows every installation needs (permissions, built-in roles) and the demo data set."""

from __future__ import annotations

import random
import time
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from callcenter import accounts
from callcenter import campaigns as campaign_table
from callcenter.config import Settings
from callcenter.db import session_scope
from callcenter.models import Agent, AgentState, Campaign, CampaignCreate, PacingMode, SkillGroup, User

DEMO_LOGINS: dict[str, tuple[str, str]] = {
    "admin": ("admin", "admin-demo"),
    "supervisor": ("supervisor", "supervisor-demo"),
    "agent": ("agent1", "agent-demo"),
}
DEMO_AGENTS = [("agent1", "1001"), ("agent2", "1002"), ("agent3", "1003")]
DEMO_SIMULATED_AGENTS = 12  # extensions 2001-2012: enough for predictive pacing (10 or more agents)
DEMO_TASK = "Demo: policy renewals (simulated PBX)"
DEMO_LEADS = 500


def seed_base(engine: Engine) -> None:
    with session_scope(engine) as session:
        accounts.seed_roles(session)


def seed_demo(engine: Engine, settings: Settings) -> None:
    """Idempotent. An admin, a supervisor, agents 1001-1003 and simulated agents 2001-2012 in skill group
    Sales, and a running task of 500 numbers on the simulated PBX (the human agents get its calls too
    when they go ready)."""
    seed_base(engine)
    with session_scope(engine) as session:

        def ensure_user(username: str, password: str, roles: list[str], display: str) -> User:
            user = session.exec(select(User).where(col(User.username) == username)).first()
            if user is None:
                user = accounts.create_user(
                    session, username=username, password=password, roles=roles, display_name=display
                )
            return user

        def ensure_agent(user: User, extension: str, group_id: int, simulated: bool) -> None:
            if session.exec(select(Agent).where(col(Agent.user_id) == user.id)).first() is None:
                accounts.create_agent(
                    session,
                    user_id=accounts.row_id(user),
                    extension=extension,
                    skill_group_ids=[group_id],
                    simulated=simulated,
                )

        ensure_user(*DEMO_LOGINS["admin"], ["admin"], "Admin")
        ensure_user(*DEMO_LOGINS["supervisor"], ["supervisor"], "Supervisor")
        group = session.exec(select(SkillGroup).where(col(SkillGroup.name) == "Sales")).first()
        if group is None:
            group = accounts.create_skill_group(session, name="Sales", description="销售 demo group")
        group_id = accounts.row_id(group)
        for username, ext in DEMO_AGENTS:
            ensure_agent(
                ensure_user(username, DEMO_LOGINS["agent"][1], ["agent"], f"Agent {ext}"),
                ext,
                group_id,
                simulated=False,
            )
        for i in range(1, DEMO_SIMULATED_AGENTS + 1):
            ext = f"{2000 + i}"
            user = ensure_user(
                f"sim{ext}", f"simulated-{ext}-{random.random()}", [], f"Simulated agent {ext}"
            )
            ensure_agent(user, ext, group_id, simulated=True)
        # Simulated agents take calls from the start (and again after a demo restart).
        session.execute(
            update(Agent)
            .where(
                col(Agent.simulated).is_(True),
                col(Agent.state).in_(
                    [AgentState.OFFLINE.value, AgentState.NOT_READY.value, AgentState.AWAY.value]
                ),
            )
            .values(state=AgentState.READY.value, state_since=time.time(), idle_since=time.time())
        )
        exists = session.exec(select(Campaign).where(col(Campaign.name) == DEMO_TASK)).first()
    if exists is None:
        _demo_task(engine, settings, group_id)


def _demo_task(engine: Engine, settings: Settings, group_id: int) -> None:
    """Create the demo task through the normal path: a CSV list, the importer, then start."""
    from callcenter.leads import Normaliser, finish_import, import_list

    rng = random.Random(7)
    valid = Normaliser("CN")
    numbers: list[str] = []
    while len(numbers) < DEMO_LEADS:  # valid, distinct Chinese mobile numbers, so all 500 import
        number = f"1{rng.choice('3589')}{rng.randint(0, 9)}{rng.randint(0, 99_999_999):08d}"
        if not isinstance(valid(number), str) and number not in numbers:
            numbers.append(number)
    surnames = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
    plans = ["Gold", "Silver", "Platinum", "Family"]
    cities = ["上海", "北京", "广州", "深圳", "杭州", "成都", "南京", "武汉"]
    path = Path(settings.data_dir) / "demo-list.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig") as f:
        f.write("姓名,手机,城市,保单,到期日\n")
        for i, number in enumerate(numbers):
            f.write(
                f"{rng.choice(surnames)}{'先生' if i % 2 else '女士'},{number},{rng.choice(cities)},"
                f"{rng.choice(plans)},2027-0{1 + i % 9}-{10 + i % 18}\n"
            )
    now = time.time()
    with session_scope(engine) as session:
        campaign = campaign_table.create(
            session,
            spec=CampaignCreate(
                name=DEMO_TASK,
                skill_group_id=group_id,
                max_concurrency=40,
                agent_ratio=2.0,
                pacing_mode=PacingMode.PREDICTIVE.value,
                wrap_up_s=20,
                window_start="00:00",
                window_end="24:00",
                timezone="Asia/Shanghai",
                dispositions=[
                    "有意向 interested",
                    "无意向 not interested",
                    "再联系 call back",
                    "号码错误 wrong number",
                ],
                list_filename=path.name,
            ),
            actor="demo",
            now=now,
        )
        campaign_id = accounts.row_id(campaign)
    import_list(
        engine, campaign_id=campaign_id, path=path, phone_column="手机", region="CN", filename=path.name
    )
    finish_import(engine, campaign_id, error="")
    with session_scope(engine) as session:
        campaign_table.transition(
            session,
            campaign_id=campaign_id,
            event=campaign_table.CampaignEvent.START,
            actor="demo",
            now=time.time(),
        )
