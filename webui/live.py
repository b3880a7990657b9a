"""What the push path reads from the database: the state a socket gets when it (re)connects, the CRM
part added to a screen pop, the agents grid rows and an agent's counters for today.

Plain synchronous functions over an engine; `webui.ws` runs them on its own small thread pool so the
event loop never waits on the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import case, func
from sqlalchemy.engine import Connection, Engine, Row
from sqlmodel import Session, col, select

from callcenter import gateway_admin
from callcenter.accounts import Principal
from callcenter.campaigns import ACTIONS
from callcenter.messages import AgentStateChanged, ScreenPop, TaskStats, decode, stats_key
from callcenter.models import (
    Agent,
    AgentState,
    Call,
    CallState,
    Campaign,
    CampaignState,
    GatewayRow,
    User,
)
from callcenter.screenpop import pop_payload
from callcenter.stats import snapshot_from_db
from crm import services as crm

# Agent states in which the agent has a call on screen (the pop is rebuilt on reconnect).
CALL_STATES = frozenset({AgentState.ON_CALL.value, AgentState.WRAP_UP.value})


def agent_state(session: Session, agent_id: int) -> dict[str, Any] | None:
    """The `AgentStateChanged` fields for one agent, read from its row."""
    agent = session.get(Agent, agent_id)
    return AgentStateChanged.of_agent(agent).model_dump() if agent is not None else None


def today_counters(session: Session, *, agent_id: int, since: float) -> dict[str, Any]:
    """The agent's calls since `since` (the start of their day): connected calls, manual ones among
    them, total and average talk time of the ended ones, and outcomes saved."""
    talk = func.coalesce(func.sum(col(Call.ended_at) - col(Call.connected_at)), 0.0)
    ended = func.count(col(Call.ended_at))
    row = session.execute(
        sa.select(
            func.count(),
            func.sum(case((col(Call.direction) == "manual", 1), else_=0)),
            talk,
            ended,
            func.sum(case((col(Call.disposition) != "", 1), else_=0)),
        ).where(
            col(Call.agent_id) == agent_id,
            col(Call.connected_at).is_not(None),
            col(Call.connected_at) >= since,
        )
    ).one()
    calls, manual, talk_s, ended_n, saved = row
    talk_s = float(talk_s or 0.0)
    return {
        "since": since,
        "calls": int(calls or 0),
        "manual": int(manual or 0),
        "talk_s": round(talk_s, 1),
        "avg_talk_s": round(talk_s / ended_n, 1) if ended_n else 0.0,
        "saved": int(saved or 0),
    }


def _grid_select() -> sa.Select[*tuple[Any, ...]]:
    return (
        sa.select(
            col(Agent.id),
            col(Agent.extension),
            col(User.display_name),
            col(Agent.state),
            col(Agent.state_since),
            col(Agent.state_reason),
            col(Agent.call_id),
            col(Agent.campaign_id),
            col(Campaign.name),
            col(Call.number),
            col(Call.connected_at),
        )
        .join(User, col(User.id) == col(Agent.user_id))
        .outerjoin(Call, col(Call.id) == col(Agent.call_id))
        .outerjoin(Campaign, col(Campaign.id) == col(Agent.campaign_id))
    )


def _grid_row(row: Row[*tuple[Any, ...]]) -> dict[str, Any]:
    agent_id, ext, name, state, since, reason, call_id, campaign_id, campaign, number, connected = row
    return {
        "agent_id": agent_id,
        "extension": ext,
        "name": name,
        "state": state,
        "since": since,
        "reason": reason,
        "call_id": call_id,
        "campaign_id": campaign_id,
        "campaign_name": campaign or "",
        "number": number or "",
        "connected_at": connected,
    }


def grid(session: Session) -> list[dict[str, Any]]:
    """Every agent for the supervisor's grid: state, since when, current call and task."""
    return [_grid_row(r) for r in session.execute(_grid_select().order_by(col(Agent.extension))).all()]


def grid_row(session: Session, agent_id: int) -> dict[str, Any] | None:
    row = session.execute(_grid_select().where(col(Agent.id) == agent_id)).first()
    return _grid_row(row) if row else None


def pop_crm(session: Session | Connection, pop: ScreenPop, *, region: str) -> dict[str, Any]:
    """The CRM part the web process adds to a screen pop (or preview offer) on its way to the browser."""
    return crm.pop_context(
        session,
        number=pop.number,
        region=region,
        lead_fields=pop.lead_fields,
        exclude_call_id=pop.call_id,
    )


def warm_up(conn: Connection, *, region: str) -> None:
    """Run the pop's CRM lookup once at start-up: the first real pop must not pay for compiling the
    statements, opening the first connection or phonenumbers loading its metadata for the region."""
    import phonenumbers

    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    number = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164) if example else "+10"
    pop_crm(conn, ScreenPop(call_id="warm-up", agent_id=0, number=number), region=region)


def rebuild_pop(session: Session, *, call_id: str, region: str) -> dict[str, Any] | None:
    """The pop of a call in progress or in wrap-up, as the browser got it at connect time, plus where
    the call is now (ended_at, result) and what the agent already saved (disposition)."""
    pop = pop_payload(session, call_id)
    if pop is None:
        return None
    call = session.get(Call, call_id)
    assert call is not None
    out = pop.model_dump()
    out.update(
        crm=pop_crm(session, pop, region=region),
        ended_at=call.ended_at,
        result=call.result,
        disposition=call.disposition,
    )
    return out


def rebuild_preview(session: Session, *, call_id: str, region: str) -> dict[str, Any] | None:
    """The `preview` message of a lead offered to an agent and not dialled yet, or None."""
    call = session.get(Call, call_id)
    if call is None or call.state != CallState.PREVIEW.value:
        return None
    offer = pop_payload(session, call_id, preview=True)
    if offer is None:
        return None
    return offer.model_copy(update={"crm": pop_crm(session, offer, region=region)}).model_dump()


# Tasks the monitor shows: the ones that dial or may dial again at once.
LIVE_TASK_STATES = (CampaignState.RUNNING.value, CampaignState.PAUSED.value)


def gateway_of(
    default_kind: str, gateways: Mapping[int, GatewayRow], gateway_id: int | None
) -> tuple[str, str]:
    """(kind, name) of the PBX a task dials through: its gateway row, or the dialer's default one."""
    row = gateways.get(gateway_id) if gateway_id is not None else None
    return (row.kind, row.name) if row is not None else (default_kind, "default")


def monitor_tasks(session: Session, *, redis: Any, default_gateway: str) -> list[dict[str, Any]]:
    """Every running or paused task with its latest counters, for the monitor's `hello`: what the
    dialer last published (kept under `stats_key` for a few seconds), else counted from the rows."""
    rows = list(
        session.exec(
            select(Campaign).where(col(Campaign.state).in_(LIVE_TASK_STATES)).order_by(col(Campaign.id))
        )
    )
    if not rows:
        return []
    gateways = {g.id: g for g in session.exec(select(GatewayRow)) if g.id is not None}
    published = redis.mget([stats_key(c.id or 0) for c in rows]) if redis is not None else [None] * len(rows)
    out = []
    for c, raw in zip(rows, published, strict=True):
        assert c.id is not None
        published_stats = decode(raw) if raw else None
        if isinstance(published_stats, TaskStats):
            stats = published_stats.model_dump()
            stats["source"] = "dialer"
        else:
            stats = snapshot_from_db(session.connection(), c.id).as_dict()
            stats["source"] = "database"
        kind, name = gateway_of(default_gateway, gateways, c.gateway_id)
        stats.update(
            campaign_id=c.id,
            name=c.name,
            state=c.state,
            pacing_mode=c.pacing_mode,
            max_concurrency=c.max_concurrency,
            agent_ratio=c.agent_ratio,
            abandon_target_pct=c.abandon_target_pct,
            gateway_kind=kind,
            gateway_name=name,
            actions=sorted(ACTIONS[CampaignState(c.state)]),
        )
        out.append(stats)
    return out


def gateway_statuses(session: Session, *, redis: Any) -> list[dict[str, Any]]:
    """The latest `GatewayStatus` the dialer kept for the default gateway and each enabled row."""
    keys = ["default"] + [
        f"gw{g.id}" for g in session.exec(select(GatewayRow).where(col(GatewayRow.enabled)))
    ]
    return list(gateway_admin.latest_statuses(redis, keys).values())


def hello(
    session: Session,
    *,
    principal: Principal,
    streams: frozenset[str],
    day_start: float,
    region: str,
    now: float,
    redis: Any = None,
    default_gateway: str = "simulated",
) -> dict[str, Any]:
    """The first message on every socket: the user's current state, so a reload shows everything."""
    out: dict[str, Any] = {
        "type": "hello",
        "server_time": now,
        "streams": sorted(streams),
        "user": {
            "id": principal.user_id,
            "username": principal.username,
            "display_name": principal.display_name,
        },
    }
    if "agent" in streams and principal.agent_id is not None:
        state = agent_state(session, principal.agent_id)
        out["agent"] = state
        out["counters"] = today_counters(session, agent_id=principal.agent_id, since=day_start)
        out["pop"] = None
        if state and state["call_id"] and state["state"] in CALL_STATES:
            out["pop"] = rebuild_pop(session, call_id=state["call_id"], region=region)
        out["preview"] = None
        if state and state["call_id"] and state["state"] == AgentState.RESERVED.value:
            out["preview"] = rebuild_preview(session, call_id=state["call_id"], region=region)
    if "monitor" in streams:
        out["grid"] = grid(session)
        out["tasks"] = monitor_tasks(session, redis=redis, default_gateway=default_gateway)
        out["gateways"] = gateway_statuses(session, redis=redis)
    return out


def in_session(engine: Engine, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    """Run `fn(session, ...)` in a short read session (for the socket's thread pool)."""
    with Session(engine) as session:
        return fn(session, *args, **kwargs)


def in_connection(engine: Engine, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    """Run `fn(connection, ...)` on a bare connection: the hot path (the pop's CRM part) needs no ORM."""
    with engine.connect() as conn:
        return fn(conn, *args, **kwargs)
