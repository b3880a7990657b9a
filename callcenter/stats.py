"""Counters of a task for the live snapshot and the monitor.

`snapshot_from_db` counts from the Call and Lead rows (the truth, used at start-up and by the API
when no dialer is publishing). `Counters` is the running tally the dialer keeps per task and
publishes every second; it starts from `snapshot_from_db` so a restart loses nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from callcenter.models import Call, CallResult, CallState, Lead, LeadStatus

# Results of calls that did not reach the customer, counted by cause on the monitor.
NOT_REACHED = ("busy", "no_answer", "congestion", "failed", "lost", "refused")
CALL = Call.__table__  # type: ignore[attr-defined]
LEAD = Lead.__table__  # type: ignore[attr-defined]


@dataclass
class Counters:
    campaign_id: int
    dialled: int = 0
    ringing: int = 0  # placed and not answered yet (dialling or ringing)
    answered: int = 0  # answered by a person (connected + abandoned + waiting)
    connected: int = 0
    abandoned: int = 0
    machine: int = 0
    failed_by_cause: dict[str, int] = field(default_factory=dict)  # result or Q.850 cause -> count
    leads_left: int = 0
    lines_per_agent: float = 0.0
    abandon_rolling_pct: float = 0.0

    @property
    def abandon_pct(self) -> float:
        live = self.connected + self.abandoned
        return 100.0 * self.abandoned / live if live else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["abandon_pct"] = round(self.abandon_pct, 2)
        data["lines_per_agent"] = round(self.lines_per_agent, 2)
        data["abandon_rolling_pct"] = round(self.abandon_rolling_pct, 2)
        return data

    def count_end(self, result: str, cause: int) -> None:
        if result in NOT_REACHED:
            key = f"{result} ({cause})" if cause else result
            self.failed_by_cause[key] = self.failed_by_cause.get(key, 0) + 1


def snapshot_from_db(conn: Connection, campaign_id: int) -> Counters:
    c = Counters(campaign_id)
    row = conn.execute(
        select(
            func.count(),
            func.count().filter(CALL.c.state.in_([CallState.DIALING.value, CallState.RINGING.value])),
            func.count().filter(CALL.c.connected_at.is_not(None)),
            func.count().filter(CALL.c.result == "abandoned"),
            func.count().filter(CALL.c.result == "machine"),
            func.count().filter(CALL.c.answered_at.is_not(None), CALL.c.answer_kind != "machine"),
        ).where(
            CALL.c.campaign_id == campaign_id,
            CALL.c.state != CallState.PREVIEW.value,
            CALL.c.result != CallResult.SKIPPED.value,  # a previewed lead passed on was never dialled
        )
    ).one()
    c.dialled, c.ringing, c.connected, c.abandoned, c.machine, c.answered = (int(v) for v in row)
    for result, cause, n in conn.execute(
        select(CALL.c.result, CALL.c.cause, func.count())
        .where(CALL.c.campaign_id == campaign_id, CALL.c.result.in_(NOT_REACHED))
        .group_by(CALL.c.result, CALL.c.cause)
    ):
        key = f"{result} ({cause})" if cause else result
        c.failed_by_cause[key] = c.failed_by_cause.get(key, 0) + int(n)
    c.leads_left = int(
        conn.execute(
            select(func.count())
            .select_from(LEAD)
            .where(
                LEAD.c.campaign_id == campaign_id,
                LEAD.c.status.in_([LeadStatus.PENDING.value, LeadStatus.CLAIMED.value]),
            )
        ).scalar_one()
    )
    return c
