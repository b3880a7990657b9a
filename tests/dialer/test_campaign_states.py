"""The task state table: every legal and illegal move, audit rows, deletion and editing rules."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from callcenter import accounts
from callcenter.campaigns import (
    ACTIONS,
    TABLE,
    CampaignEvent,
    InvalidTransition,
    create,
    edit,
    next_state,
    transition,
)
from callcenter.db import session_scope
from callcenter.errors import Conflict, Invalid
from callcenter.models import CampaignAudit, CampaignCreate, CampaignState

C = CampaignState
E = CampaignEvent


@pytest.mark.parametrize("state", list(CampaignState))
@pytest.mark.parametrize("event", list(CampaignEvent))
def test_every_state_event_pair_is_legal_or_refused(state: CampaignState, event: CampaignEvent) -> None:
    if (state, event) in TABLE:
        assert next_state(state, event) is TABLE[(state, event)]
    else:
        with pytest.raises(InvalidTransition):
            next_state(state, event)


def test_domain_rules() -> None:
    # initializing: cannot be started, paused or deleted; goes to stopped when the import is done
    for event in (E.START, E.PAUSE, E.DELETE, E.RESUME, E.STOP):
        with pytest.raises(InvalidTransition):
            next_state(C.INITIALIZING, event)
    assert next_state(C.INITIALIZING, E.IMPORT_DONE) is C.STOPPED
    # start refused when already running; pause only from running; resume only from paused
    with pytest.raises(InvalidTransition):
        next_state(C.RUNNING, E.START)
    assert next_state(C.RUNNING, E.PAUSE) is C.PAUSED
    assert next_state(C.PAUSED, E.RESUME) is C.RUNNING
    assert next_state(C.RUNNING, E.FINISH) is C.STOPPED
    # deleted is final
    for event in CampaignEvent:
        with pytest.raises(InvalidTransition):
            next_state(C.DELETED, event)


def test_buttons_per_state_match_the_domain() -> None:
    assert ACTIONS[C.INITIALIZING] == frozenset()
    assert ACTIONS[C.STOPPED] == {"start", "edit", "delete"}
    assert {"stop", "monitor", "pause"} <= ACTIONS[C.RUNNING] and "edit" not in ACTIONS[C.RUNNING]
    assert "start" not in ACTIONS[C.RUNNING]
    assert ACTIONS[C.DELETED] == frozenset()


def _task(engine: Engine) -> int:
    with session_scope(engine) as s:
        group = accounts.create_skill_group(s, name="Sales")
        campaign = create(
            s, spec=CampaignCreate(name="t", skill_group_id=accounts.row_id(group)), actor="admin", now=1.0
        )
        return accounts.row_id(campaign)


def test_transitions_write_audit_rows_and_delete_stops_first(engine: Engine) -> None:
    cid = _task(engine)
    with session_scope(engine) as s:
        transition(s, campaign_id=cid, event=E.IMPORT_DONE, actor="import", now=2.0)
        transition(s, campaign_id=cid, event=E.START, actor="sup", now=3.0)
        moves = transition(s, campaign_id=cid, event=E.DELETE, actor="admin", now=4.0)
    assert [(m.old, m.new) for m in moves] == [(C.RUNNING, C.STOPPED), (C.STOPPED, C.DELETED)]
    with session_scope(engine) as s:
        audit = s.exec(
            select(CampaignAudit).where(col(CampaignAudit.campaign_id) == cid).order_by(col(CampaignAudit.id))
        ).all()
    assert [(a.actor, a.old, a.new) for a in audit] == [
        ("admin", "", "initializing"),
        ("import", "initializing", "stopped"),
        ("sup", "stopped", "running"),
        ("admin", "running", "stopped"),
        ("admin", "stopped", "deleted"),
    ]


def test_a_stale_move_loses_the_compare_and_set(engine: Engine) -> None:
    cid = _task(engine)
    with session_scope(engine) as s:
        transition(s, campaign_id=cid, event=E.IMPORT_DONE, actor="import", now=2.0)
    with pytest.raises(InvalidTransition), session_scope(engine) as s:
        transition(s, campaign_id=cid, event=E.IMPORT_DONE, actor="import", now=2.5)


def test_edit_only_pacing_settings_and_only_when_not_running(engine: Engine) -> None:
    cid = _task(engine)
    with pytest.raises(Conflict), session_scope(engine) as s:
        edit(s, campaign_id=cid, changes={"max_concurrency": 5}, actor="a")  # still initializing
    with session_scope(engine) as s:
        transition(s, campaign_id=cid, event=E.IMPORT_DONE, actor="import", now=2.0)
        c = edit(
            s,
            campaign_id=cid,
            changes={"max_concurrency": 5, "agent_ratio": 2.5, "pacing_mode": "predictive"},
            actor="a",
        )
        assert (c.max_concurrency, c.agent_ratio, c.pacing_mode) == (5, 2.5, "predictive")
    for field, value in [("skill_group_id", 9), ("name", "x"), ("caller_id", "1")]:
        with pytest.raises(Invalid) as info, session_scope(engine) as s:
            edit(s, campaign_id=cid, changes={field: value}, actor="a")
        assert info.value.field == field
    with pytest.raises(Invalid) as info, session_scope(engine) as s:
        edit(s, campaign_id=cid, changes={"agent_ratio": 0}, actor="a")
    assert info.value.field == "agent_ratio"
    with session_scope(engine) as s:
        transition(s, campaign_id=cid, event=E.START, actor="sup", now=3.0)
    with pytest.raises(Conflict), session_scope(engine) as s:
        edit(s, campaign_id=cid, changes={"max_concurrency": 7}, actor="a")
