"""`pop_payload`: the `ScreenPop` message, from one query over the call's rows."""

from __future__ import annotations

import json

import redis
from sqlalchemy import event, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from callcenter import accounts
from callcenter.db import session_scope
from callcenter.models import DEFAULT_DISPOSITIONS, Call
from callcenter.screenpop import pop_payload
from tests.web import sim

# The fields the dialer fills (the web adds `crm` and `server_time` on the way to the browser).
CONTRACT = {
    "type",
    "crm",
    "server_time",
    "call_id",
    "agent_id",
    "extension",
    "direction",
    "number",
    "campaign_id",
    "campaign_name",
    "lead_id",
    "lead_fields",
    "dispositions",
    "connected_at",
}


def _agent(engine: Engine, extension: str = "1001") -> int:
    with session_scope(engine) as s:
        user = accounts.create_user(s, username=f"u{extension}", password="password-123", roles=["agent"])
        return accounts.create_agent(s, user_id=user.id or 0, extension=extension).id or 0


def _count_queries(engine: Engine) -> list[str]:
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def test_outbound_pop_has_task_lead_columns_and_dispositions_in_one_query(
    engine: Engine, redis_client: redis.Redis
) -> None:
    agent = _agent(engine)
    task = sim.campaign(engine, name="保险续费", dispositions=["有意向", "无意向", "再联系"])
    fields = {"姓名": "韩梅梅", "plan": "Gold", "到期日": "2026-12-31"}
    lead = sim.lead(engine, campaign_id=task, number="+8613800138000", fields=fields)
    call_id = sim.connect(
        engine,
        redis_client,
        agent=agent,
        number="+8613800138000",
        campaign_id=task,
        lead_id=lead,
        publish=False,
    )
    queries = _count_queries(engine)
    with Session(engine) as s:
        message = pop_payload(s, call_id)
    assert len([q for q in queries if q.lstrip().upper().startswith("SELECT")]) == 1
    assert message is not None
    pop = message.payload()
    assert set(pop) == CONTRACT and pop["type"] == "screen_pop"
    assert pop["direction"] == "outbound" and pop["extension"] == "1001" and pop["agent_id"] == agent
    assert pop["campaign_name"] == "保险续费" and pop["campaign_id"] == task and pop["lead_id"] == lead
    assert pop["dispositions"] == ["有意向", "无意向", "再联系"]
    assert list(pop["lead_fields"].items()) == list(fields.items())  # the list's column order is kept
    assert pop["connected_at"] is not None
    json.dumps(pop)  # what goes on the bus


def test_manual_call_pops_without_a_task_with_default_outcomes(
    engine: Engine, redis_client: redis.Redis
) -> None:
    agent = _agent(engine)
    call_id = sim.connect(engine, redis_client, agent=agent, number="13800138000", publish=False)
    with Session(engine) as s:
        message = pop_payload(s, call_id)
    assert message is not None
    pop = message.payload()
    assert (pop["direction"], pop["campaign_id"], pop["campaign_name"], pop["lead_id"]) == (
        "manual",
        None,
        "",
        None,
    )
    assert pop["lead_fields"] == {} and pop["dispositions"] == DEFAULT_DISPOSITIONS


def test_no_pop_for_an_unknown_call_or_a_call_without_agent(engine: Engine) -> None:
    with session_scope(engine) as s:
        s.add(Call(id="ringing", number="+8613800138000"))
    with Session(engine) as s:
        assert pop_payload(s, "nope") is None
        assert pop_payload(s, "ringing") is None


def test_broken_lead_json_gives_empty_fields_not_an_error(engine: Engine, redis_client: redis.Redis) -> None:
    agent = _agent(engine)
    task = sim.campaign(engine)
    lead = sim.lead(engine, campaign_id=task, number="+8613800138000", fields={})
    with session_scope(engine) as s:
        from callcenter.models import Campaign, Lead

        lead_row = s.get(Lead, lead)
        assert lead_row is not None
        lead_row.fields = "not json"
        # Not a list: the column takes a string as JSON text already, as a raw insert would write it.
        s.exec(update(Campaign).where(col(Campaign.id) == task).values(dispositions="{}"))
    call_id = sim.connect(
        engine,
        redis_client,
        agent=agent,
        number="+8613800138000",
        campaign_id=task,
        lead_id=lead,
        publish=False,
    )
    with Session(engine) as s:
        message = pop_payload(s, call_id)
    assert message is not None
    pop = message.payload()
    assert pop["lead_fields"] == {} and pop["dispositions"] == []
