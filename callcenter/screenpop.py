"""The screen pop (`messages.ScreenPop`), built from the database rows of one call: the only place a pop
is made. The dialer builds it when a call connects to an agent (or offers a preview) and publishes it;
the web builds it again for an agent who reconnects mid-call. One query (call, its agent, and - when
the call belongs to a task - its campaign and lead).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection
from sqlmodel import Session, col

from callcenter.messages import PreviewOffer, ScreenPop
from callcenter.models import DEFAULT_DISPOSITIONS, Agent, Call, Campaign, Lead


def _json(raw: str | None, kind: type) -> Any:
    try:
        value = json.loads(raw or "")
    except ValueError:
        return kind()
    return value if isinstance(value, kind) else kind()


# Built once: the dialer runs it for every connected call.
_POP = (
    select(
        col(Call.id),
        col(Call.agent_id),
        col(Agent.extension),
        col(Call.direction),
        col(Call.number),
        col(Call.campaign_id),
        col(Campaign.name),
        col(Campaign.dispositions),
        col(Call.lead_id),
        col(Lead.fields),
        col(Call.connected_at),
    )
    .join(Agent, col(Agent.id) == col(Call.agent_id))
    .outerjoin(Campaign, col(Campaign.id) == col(Call.campaign_id))
    .outerjoin(Lead, col(Lead.id) == col(Call.lead_id))
    .where(col(Call.id) == bindparam("call_id"))
)


def _outcomes(value: Any) -> list[str]:
    """A task's outcomes; a call without a task (manual) gets the list a new task starts with, a
    task whose list is unreadable gets none."""
    if value is None:
        return list(DEFAULT_DISPOSITIONS)
    return [str(d) for d in value] if isinstance(value, list) else []


def pop_payload(session: Session | Connection, call_id: str, *, preview: bool = False) -> ScreenPop | None:
    """The screen pop for `call_id` (a `PreviewOffer` with `preview`), or None when the call does not
    exist or has no agent. A manual call has no campaign: its name is "" and it gets the default
    outcomes; `lead_fields` keep the list's column order."""
    conn = session.connection() if isinstance(session, Session) else session
    row = conn.execute(_POP, {"call_id": call_id}).first()
    if row is None:
        return None
    (cid, agent_id, extension, direction, number, campaign_id, name, dispositions, lead_id, fields, at) = row
    kind = PreviewOffer if preview else ScreenPop
    return kind(
        call_id=cid,
        agent_id=agent_id,
        extension=extension,
        direction="preview" if preview else direction,
        number=number,
        campaign_id=campaign_id,
        campaign_name=name or "",
        lead_id=lead_id,
        lead_fields=_json(fields, dict) if lead_id is not None else {},
        dispositions=_outcomes(dispositions),
        connected_at=at,
    )
