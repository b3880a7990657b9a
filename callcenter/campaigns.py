"""Task (campaign) lifecycle: one state table, one function that applies it, an audit row per change.

States and rules are DOMAIN.md's: `initializing -> stopped` when the import is done (or failed, or
an admin cancelled it); `stopped -> running <-> paused`; `running|paused -> stopped` by hand,
`running -> stopped` by the dialer when nothing is left; `-> deleted` (soft; deleting a running or
paused task stops it first). Editing is limited to pacing settings and only when not running. The
list and the skill group never change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select

from callcenter.errors import Conflict, Invalid, NotFound
from callcenter.messages import TaskStateChanged
from callcenter.models import (
    Agent,
    AgentSkill,
    Campaign,
    CampaignAudit,
    CampaignCreate,
    CampaignState,
    CampaignUpdate,
    GatewayRow,
    Lead,
    LeadStatus,
    PacingMode,
    SkillGroup,
)

C = CampaignState


class CampaignEvent(StrEnum):
    IMPORT_DONE = "import_done"
    IMPORT_FAILED = "import_failed"
    CANCEL_IMPORT = "cancel_import"  # an admin ends an import (stuck, or not wanted)
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    FINISH = "finish"  # the dialer found nothing left to dial
    DELETE = "delete"


# (state, event) -> new state: every legal move of a task, on one screen.
TABLE: dict[tuple[CampaignState, CampaignEvent], CampaignState] = {
    (C.INITIALIZING, CampaignEvent.IMPORT_DONE): C.STOPPED,
    (C.INITIALIZING, CampaignEvent.IMPORT_FAILED): C.STOPPED,
    (C.INITIALIZING, CampaignEvent.CANCEL_IMPORT): C.STOPPED,
    (C.STOPPED, CampaignEvent.START): C.RUNNING,
    (C.RUNNING, CampaignEvent.PAUSE): C.PAUSED,
    (C.PAUSED, CampaignEvent.RESUME): C.RUNNING,
    (C.RUNNING, CampaignEvent.STOP): C.STOPPED,
    (C.PAUSED, CampaignEvent.STOP): C.STOPPED,
    (C.RUNNING, CampaignEvent.FINISH): C.STOPPED,
    (C.STOPPED, CampaignEvent.DELETE): C.DELETED,
}

# What the task list shows as enabled in each state (DOMAIN: start, stop, monitor, edit, delete).
ACTIONS: dict[CampaignState, frozenset[str]] = {
    C.INITIALIZING: frozenset(),
    C.STOPPED: frozenset({"start", "edit", "delete"}),
    C.RUNNING: frozenset({"pause", "stop", "monitor", "delete"}),
    C.PAUSED: frozenset({"resume", "stop", "monitor", "edit", "delete"}),
    C.DELETED: frozenset(),
}

# The only fields an edit may change (pacing settings), and only when not running.
EDITABLE = frozenset(CampaignUpdate.model_fields)


class InvalidTransition(Conflict):
    def __init__(self, state: str, event: str) -> None:
        verb = event.replace("_", " ")
        super().__init__(f"a task that is {state} cannot {verb}", field="state")
        self.state = state
        self.event = event


def next_state(state: CampaignState | str, event: CampaignEvent) -> CampaignState:
    """The state after `event`, or InvalidTransition.

    >>> next_state("stopped", CampaignEvent.START)
    <CampaignState.RUNNING: 'running'>
    """
    try:
        return TABLE[(CampaignState(state), event)]
    except (KeyError, ValueError):
        raise InvalidTransition(str(state), event.value) from None


@dataclass(frozen=True)
class Move:
    campaign_id: int
    name: str
    old: CampaignState
    new: CampaignState
    at: float
    actor: str

    def message(self) -> TaskStateChanged:
        """The bus message that tells supervisors and the task list."""
        return TaskStateChanged(
            campaign_id=self.campaign_id,
            name=self.name,
            old=self.old.value,
            new=self.new.value,
            by=self.actor,
            at=self.at,
        )


def transition(
    conn: Connection | Session,
    *,
    campaign_id: int,
    event: CampaignEvent,
    actor: str,
    now: float,
    note: str = "",
) -> list[Move]:
    """Apply `event` with a compare-and-set and write the audit rows. DELETE of a running or paused
    task stops it first (two moves, two audit rows)."""
    row = conn.execute(select(Campaign.state, Campaign.name).where(col(Campaign.id) == campaign_id)).first()
    if row is None:
        raise NotFound(f"no task {campaign_id}")
    state, name = CampaignState(row[0]), row[1]
    moves: list[Move] = []
    if event is CampaignEvent.DELETE and state in (C.RUNNING, C.PAUSED):
        moves += transition(
            conn,
            campaign_id=campaign_id,
            event=CampaignEvent.STOP,
            actor=actor,
            now=now,
            note="stopped to delete",
        )
        state = C.STOPPED
    new = next_state(state, event)
    values: dict[str, Any] = {"state": new.value}
    if event is CampaignEvent.START:
        values["started_at"] = now
        values["finished_at"] = None
    elif new is C.STOPPED and state in (C.RUNNING, C.PAUSED):
        values["finished_at"] = now
    result = conn.execute(
        update(Campaign)
        .where(col(Campaign.id) == campaign_id, col(Campaign.state) == state.value)
        .values(**values)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        current = conn.execute(select(Campaign.state).where(col(Campaign.id) == campaign_id)).first()
        raise InvalidTransition(current[0] if current else "gone", event.value)
    conn.execute(
        CampaignAudit.__table__.insert().values(  # type: ignore[attr-defined]
            campaign_id=campaign_id,
            at=now,
            actor=actor,
            old=state.value,
            new=new.value,
            note=note or event.value,
        )
    )
    moves.append(Move(campaign_id, name, state, new, now, actor))
    return moves


# --- creation and edits ------------------------------------------------------------------------


def create(session: Session, *, spec: CampaignCreate, actor: str, now: float) -> Campaign:
    """Insert a task in `initializing` (its list is imported next)."""
    if session.get(SkillGroup, spec.skill_group_id) is None:
        raise NotFound(f"no skill group {spec.skill_group_id}", field="skill_group_id")
    if spec.gateway_id is not None and session.get(GatewayRow, spec.gateway_id) is None:
        raise NotFound(f"no gateway {spec.gateway_id}", field="gateway_id")
    from callcenter.policy import validate_window

    validate_window(spec.window_start, spec.window_end, spec.window_days, spec.timezone)
    _check_pacing(spec.max_concurrency, spec.agent_ratio, spec.abandon_target_pct)
    campaign = Campaign(**spec.model_dump(), state=C.INITIALIZING.value, created_by=actor, created_at=now)
    session.add(campaign)
    session.flush()
    assert campaign.id is not None
    session.add(
        CampaignAudit(
            campaign_id=campaign.id, at=now, actor=actor, old="", new=C.INITIALIZING.value, note="created"
        )
    )
    session.flush()
    return campaign


def _check_pacing(max_concurrency: int, agent_ratio: float, abandon_target_pct: float) -> None:
    if max_concurrency <= 0:
        raise Invalid("max concurrency must be greater than 0", field="max_concurrency")
    if agent_ratio <= 0:
        raise Invalid("agent ratio must be greater than 0", field="agent_ratio")
    if not 0 < abandon_target_pct <= 100:
        raise Invalid("abandon target must be between 0 and 100 %", field="abandon_target_pct")


def edit(session: Session, *, campaign_id: int, changes: Mapping[str, Any], actor: str) -> Campaign:
    """Change pacing settings of a task that is not running."""
    campaign = get(session, campaign_id)
    refused = sorted(set(changes) - EDITABLE)
    if refused:
        raise Invalid(
            f"{refused[0]} cannot be changed after creation (only pacing settings can)", field=refused[0]
        )
    if campaign.state in (C.RUNNING.value, C.DELETED.value, C.INITIALIZING.value):
        raise Conflict(f"a task that is {campaign.state} cannot be edited", field="state")
    merged = {k: changes.get(k, getattr(campaign, k)) for k in EDITABLE}
    _check_pacing(merged["max_concurrency"], merged["agent_ratio"], merged["abandon_target_pct"])
    for key, value in changes.items():
        setattr(campaign, key, PacingMode(value).value if key == "pacing_mode" else value)
    session.add(campaign)
    session.flush()
    return campaign


def get(session: Session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFound(f"no task {campaign_id}")
    return campaign


def check_startable(session: Session, campaign: Campaign) -> None:
    """Refuse to start a task nobody can take calls for, or with nothing to dial (409)."""
    agents = session.exec(
        select(func.count())
        .select_from(AgentSkill)
        .join(Agent, col(Agent.id) == col(AgentSkill.agent_id))
        .where(col(AgentSkill.skill_group_id) == campaign.skill_group_id)
    ).one()
    if not agents:
        group = session.get(SkillGroup, campaign.skill_group_id)
        raise Conflict(
            f"skill group {group.name if group else campaign.skill_group_id!r} has no agent: add agents "
            "with an extension to it before starting the task",
            field="skill_group_id",
        )
    left = session.exec(
        select(func.count())
        .select_from(Lead)
        .where(
            col(Lead.campaign_id) == campaign.id,
            col(Lead.status).in_([LeadStatus.PENDING, LeadStatus.CLAIMED]),
        )
    ).one()
    if not left:
        raise Conflict("the task's list has no number left to dial", field="state")
