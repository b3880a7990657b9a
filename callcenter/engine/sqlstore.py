"""The engine's `Store` in SQL (SQLAlchemy Core, no ORM on the hot path), for SQLite and PostgreSQL.

Everything the engine needs to resume after a crash is in these rows: leads claimed, calls with
their stage timestamps, agents' states. The engine calls these inside `transaction()`, and only
sends commands to the PBX after the transaction that recorded them has committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from callcenter import agents as agent_table
from callcenter import campaigns as campaign_table
from callcenter.engine.store import AgentRow, CampaignConf, ClaimedLead
from callcenter.messages import ScreenPop
from callcenter.models import (
    Agent,
    AgentSkill,
    AgentState,
    Call,
    CallDraft,
    CallEvent,
    CallState,
    Campaign,
    CampaignState,
    Dialer,
    DncEntry,
    Lead,
    LeadStatus,
    SkillGroup,
)
from callcenter.screenpop import pop_payload
from callcenter.stats import Counters, snapshot_from_db

CAMPAIGN = Campaign.__table__  # type: ignore[attr-defined]
LEAD = Lead.__table__  # type: ignore[attr-defined]
CALL = Call.__table__  # type: ignore[attr-defined]
AGENT = Agent.__table__  # type: ignore[attr-defined]
DRAFT = CallDraft.__table__  # type: ignore[attr-defined]
AGENT_SKILL = AgentSkill.__table__  # type: ignore[attr-defined]
DNC = DncEntry.__table__  # type: ignore[attr-defined]
DIALER = Dialer.__table__  # type: ignore[attr-defined]
CALL_EVENT = CallEvent.__table__  # type: ignore[attr-defined]
GROUP = SkillGroup.__table__  # type: ignore[attr-defined]

OPEN_CALL_STATES = [s.value for s in CallState if s is not CallState.ENDED]
ACTIVE_CALL_STATES = [s.value for s in CallState if s not in (CallState.ENDED, CallState.PREVIEW)]


class _Prepared:
    """A row update of the per-event hot path, compiled once for the engine's dialect and run on the
    DBAPI cursor of the current transaction. SQLAlchemy's work per execution (cache lookup, compiled
    parameters, result set-up) costs several times the UPDATE itself there (about 60 us against 8 us
    on SQLite); the SQL, the parameter order and the types' bind processors are the ones SQLAlchemy
    would have used. Only for statements without expanding parameters whose result is not read."""

    def __init__(self, stmt: Any, dialect: Any) -> None:
        compiled = stmt.compile(dialect=dialect)
        if getattr(compiled, "escaped_bind_names", None):
            raise ValueError("bind names that need escaping are not supported here")
        self.sql: str = compiled.string
        self.defaults: dict[str, Any] = dict(compiled.params)  # values bound in the statement itself
        self.order = tuple(compiled.positiontup or ()) if compiled.positional else None
        self.processors = {
            name: proc
            for name, bind in compiled.binds.items()
            if (proc := bind.type.bind_processor(dialect)) is not None
        }

    def run(self, cursor: Any, values: dict[str, Any]) -> None:
        params = {**self.defaults, **values}
        for name, proc in self.processors.items():
            params[name] = proc(params[name])
        cursor.execute(self.sql, params if self.order is None else tuple(params[k] for k in self.order))


class SqlStore:
    def __init__(self, engine: Engine, dialer_id: str) -> None:
        self.engine = engine
        self.dialer_id = dialer_id
        self.pg = engine.dialect.name == "postgresql"
        self._conn: Connection | None = None
        self._cursor: Any = None  # the DBAPI cursor of the current transaction, for `_Prepared`
        # Statements are built once and reused: building a SQLAlchemy statement (and its cache key)
        # costs more than running it on the hot path.
        self._stmts: dict[Any, Any] = {}
        self._prepared: dict[Any, _Prepared] = {}

    def _stmt(self, key: Any, build: Callable[[], Any]) -> Any:
        stmt = self._stmts.get(key)
        if stmt is None:
            stmt = self._stmts[key] = build()
        return stmt

    def _run_prepared(self, key: Any, build: Callable[[], Any], values: dict[str, Any]) -> None:
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepared[key] = _Prepared(build(), self.engine.dialect)
        cursor = self._cursor
        if cursor is None:
            cursor = self._cursor = self.c.connection.cursor()
        prepared.run(cursor, values)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction for a batch of engine work; nested calls join the outer one."""
        if self._conn is not None:
            yield self._conn
            return
        with self.engine.begin() as conn:
            self._conn = conn
            try:
                yield conn
            finally:
                self._conn = None
                cursor, self._cursor = self._cursor, None
                if cursor is not None:
                    cursor.close()

    @property
    def c(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("store used outside transaction()")
        return self._conn

    # --- campaigns ----------------------------------------------------------------------------

    def live_campaigns(self) -> list[CampaignConf]:
        """Running and paused tasks (paused ones still have calls to follow)."""
        names = list(CampaignConf.model_fields)
        rows = self.c.execute(
            self._stmt(
                "live",
                lambda: select(*[CAMPAIGN.c[n] for n in names]).where(
                    CAMPAIGN.c.state.in_([CampaignState.RUNNING.value, CampaignState.PAUSED.value])
                ),
            )
        ).all()
        return [CampaignConf.of_row(dict(zip(names, r, strict=True))) for r in rows]

    def campaign_states(self, ids: Iterable[int]) -> dict[int, str]:
        ids = list(ids)
        if not ids:
            return {}
        return dict(
            self.c.execute(select(CAMPAIGN.c.id, CAMPAIGN.c.state).where(CAMPAIGN.c.id.in_(ids))).all()
        )

    def tz_keys(self, campaign_id: int) -> list[str]:
        return [
            r[0]
            for r in self.c.execute(
                select(LEAD.c.tz).where(LEAD.c.campaign_id == campaign_id).distinct()
            ).all()
        ]

    def leads_left(self, campaign_id: int) -> int:
        return int(
            self.c.execute(
                select(func.count())
                .select_from(LEAD)
                .where(
                    LEAD.c.campaign_id == campaign_id,
                    LEAD.c.status.in_([LeadStatus.PENDING.value, LeadStatus.CLAIMED.value]),
                )
            ).scalar_one()
        )

    def active_calls_count(self, campaign_id: int, *, others_only: bool = False) -> int:
        def build() -> Any:
            q = (
                select(func.count())
                .select_from(CALL)
                .where(CALL.c.campaign_id == bindparam("cid"), CALL.c.state.in_(ACTIVE_CALL_STATES))
            )
            return q.where(CALL.c.dialer_id != self.dialer_id) if others_only else q

        return int(
            self.c.execute(self._stmt(("active", others_only), build), {"cid": campaign_id}).scalar_one()
        )

    # --- agents -------------------------------------------------------------------------------

    def agents(self) -> dict[int, AgentRow]:
        """Every agent with its skill groups (the engine keeps this cache fresh)."""
        rows = self.c.execute(
            self._stmt(
                "agents",
                lambda: select(
                    AGENT.c.id,
                    AGENT.c.extension,
                    AGENT.c.state,
                    AGENT.c.state_since,
                    AGENT.c.idle_since,
                    AGENT.c.call_id,
                    AGENT.c.campaign_id,
                    AGENT.c.simulated,
                    AGENT.c.after_wrap,
                    AGENT.c.wrap_extra_s,
                ),
            )
        ).all()
        out = {r[0]: AgentRow(*r) for r in rows}
        skills = self._stmt("skills", lambda: select(AGENT_SKILL.c.agent_id, AGENT_SKILL.c.skill_group_id))
        for agent_id, group_id in self.c.execute(skills):
            if agent_id in out:
                out[agent_id].groups.add(group_id)
        return out

    # --- leads and calls ----------------------------------------------------------------------

    def claim(
        self,
        conf: CampaignConf,
        n: int,
        *,
        now: float,
        tz_keys: Sequence[str] | None,
        gateway: str,
        state: CallState = CallState.DIALING,
        agent_id: int | None = None,
    ) -> tuple[list[ClaimedLead], list[int]]:
        """Claim up to `n` due leads and create their Call rows, atomically.

        Max concurrency is re-checked here under a lock on the task row, so several dialer processes
        together never exceed it; `FOR UPDATE SKIP LOCKED` (PostgreSQL) or SQLite's single writer
        make sure no lead is claimed twice. Leads found on the do-not-call list are marked and
        returned separately (not dialled). `tz_keys` None means every time zone is in its window."""
        c = self.c
        if self.pg:
            lock = self._stmt(
                "lock",
                lambda: select(CAMPAIGN.c.id).where(CAMPAIGN.c.id == bindparam("cid")).with_for_update(),
            )
            c.execute(lock, {"cid": conf.id})
        if state is CallState.DIALING:
            room = conf.max_concurrency - self.active_calls_count(conf.id)
            n = min(n, room)
        if n <= 0 or (tz_keys is not None and not tz_keys):
            return [], []
        params: dict[str, Any] = {"cid": conf.id, "now": now, "n": n}
        if tz_keys is not None:
            params["tzs"] = list(tz_keys)
        rows = c.execute(
            self._stmt(("claim", tz_keys is not None), lambda: self._claim_stmt(tz_keys is not None)), params
        ).all()
        if not rows:
            return [], []
        dnc_q = self._stmt(
            "dnc", lambda: select(DNC.c.number).where(DNC.c.number.in_(bindparam("nums", expanding=True)))
        )
        blocked = set(c.execute(dnc_q, {"nums": [r[1] for r in rows]}).scalars())
        dnc_ids = [r[0] for r in rows if r[1] in blocked]
        if dnc_ids:
            c.execute(
                update(LEAD)
                .where(LEAD.c.id.in_(dnc_ids))
                .values(
                    status=LeadStatus.DNC.value,
                    last_result="dnc",
                    attempts=LEAD.c.attempts - 1,
                    claimed_by="",
                )
            )
        claimed = [
            ClaimedLead(str(uuid.uuid4()), r[0], r[1], r[2], r[3]) for r in rows if r[1] not in blocked
        ]
        if claimed:
            c.execute(
                self._stmt("insert_call", lambda: insert(CALL)),
                [
                    {
                        "id": cl.call_id,
                        "campaign_id": conf.id,
                        "lead_id": cl.lead_id,
                        "number": cl.number,
                        "direction": "outbound",
                        "state": state.value,
                        "attempt": cl.attempt,
                        "dialer_id": self.dialer_id,
                        "gateway": gateway,
                        "agent_id": agent_id,
                        "created_at": now,
                        "answer_kind": "",
                        "result": "",
                        "cause": 0,
                        "detail": "",
                        "disposition": "",
                    }
                    for cl in claimed
                ],
            )
            c.execute(
                self._stmt(
                    "last_call",
                    lambda: (
                        update(LEAD)
                        .where(LEAD.c.id == bindparam("lid"))
                        .values(last_call_id=bindparam("callid"))
                    ),
                ),
                [{"lid": cl.lead_id, "callid": cl.call_id} for cl in claimed],
            )
        return claimed, dnc_ids

    def _claim_stmt(self, with_tz: bool) -> Any:
        due = select(LEAD.c.id).where(
            LEAD.c.campaign_id == bindparam("cid"),
            LEAD.c.status == LeadStatus.PENDING.value,
            LEAD.c.next_at <= bindparam("now"),
        )
        if with_tz:
            due = due.where(LEAD.c.tz.in_(bindparam("tzs", expanding=True)))
        due = due.order_by(LEAD.c.next_at, LEAD.c.id).limit(bindparam("n"))
        if self.pg:
            due = due.with_for_update(skip_locked=True)
        return (
            update(LEAD)
            .where(LEAD.c.id.in_(due.scalar_subquery()))
            .values(
                status=LeadStatus.CLAIMED.value,
                claimed_by=self.dialer_id,
                claimed_at=bindparam("now"),
                attempts=LEAD.c.attempts + 1,
            )
            .returning(LEAD.c.id, LEAD.c.number, LEAD.c.attempts, LEAD.c.fields)
        )

    def update_call(self, call_id: str, **values: Any) -> None:
        keys = tuple(sorted(values))
        self._run_prepared(
            ("update_call", keys),
            lambda: update(CALL).where(CALL.c.id == bindparam("_id")).values({k: bindparam(k) for k in keys}),
            {"_id": call_id, **values},
        )

    def start_call(self, call_id: str, *, created_at: float) -> None:
        """A previewed call is being dialled now."""
        self.c.execute(
            update(CALL)
            .where(CALL.c.id == call_id)
            .values(state=CallState.DIALING.value, created_at=created_at)
        )

    def insert_manual_call(
        self, *, call_id: str, number: str, agent_id: int | None, gateway: str, now: float
    ) -> None:
        self.c.execute(
            insert(CALL).values(
                id=call_id,
                campaign_id=None,
                lead_id=None,
                number=number,
                direction="manual",
                state=CallState.DIALING.value,
                attempt=1,
                dialer_id=self.dialer_id,
                gateway=gateway,
                agent_id=agent_id,
                created_at=now,
                answer_kind="",
                result="",
                cause=0,
                detail="",
                disposition="",
            )
        )

    def log_call(self, call_id: str, at: float, kind: str, detail: str = "") -> None:
        self._run_prepared(
            "log_call",
            lambda: insert(CALL_EVENT).values(
                call_id=bindparam("call_id"),
                at=bindparam("at"),
                kind=bindparam("kind"),
                detail=bindparam("detail"),
            ),
            {"call_id": call_id, "at": at, "kind": kind, "detail": detail[:500]},
        )

    def end_call(self, call_id: str, *, now: float, result: str, cause: int, detail: str) -> None:
        self.update_call(
            call_id,
            state=CallState.ENDED.value,
            ended_at=now,
            result=result,
            cause=cause,
            detail=detail[:500],
        )

    def settle_lead(self, lead_id: int, *, status: str, next_at: float, attempts: int, result: str) -> None:
        self._run_prepared(
            "settle",
            lambda: (
                update(LEAD)
                .where(LEAD.c.id == bindparam("_id"))
                .values(
                    status=bindparam("status"),
                    next_at=bindparam("next_at"),
                    attempts=bindparam("attempts"),
                    last_result=bindparam("result"),
                    claimed_by="",
                )
            ),
            {"_id": lead_id, "status": status, "next_at": next_at, "attempts": attempts, "result": result},
        )

    def open_calls(self, *, mine: bool = True) -> list[dict[str, Any]]:
        q = select(CALL).where(CALL.c.state.in_(OPEN_CALL_STATES))
        if mine:
            q = q.where(CALL.c.dialer_id == self.dialer_id)
        return [dict(r._mapping) for r in self.c.execute(q).all()]

    def call_owners(self, call_ids: Iterable[str]) -> dict[str, str]:
        """The dialer following each of these calls, for those still open."""
        ids = list(call_ids)
        if not ids:
            return {}
        rows = self.c.execute(
            select(CALL.c.id, CALL.c.dialer_id).where(CALL.c.id.in_(ids), CALL.c.state.in_(OPEN_CALL_STATES))
        )
        return {r[0]: r[1] for r in rows}

    # --- dialers: heartbeats, takeover, skill-group leases ------------------------------------------

    def register_dialer(self, *, host: str, pid: int, now: float) -> None:
        values = {"host": host[:255], "pid": pid, "started_at": now, "heartbeat_at": now, "stopped_at": None}
        if self.c.execute(update(DIALER).where(DIALER.c.id == self.dialer_id).values(**values)).rowcount == 0:
            self.c.execute(insert(DIALER).values(id=self.dialer_id, **values))

    def beat(self, now: float) -> None:
        self._run_prepared(
            "beat",
            lambda: (
                update(DIALER).where(DIALER.c.id == bindparam("_id")).values(heartbeat_at=bindparam("at"))
            ),
            {"_id": self.dialer_id, "at": now},
        )

    def stop_dialer(self, now: float) -> None:
        """A clean stop: others may take over at once, and its leases are free."""
        self.c.execute(update(DIALER).where(DIALER.c.id == self.dialer_id).values(stopped_at=now))
        self.c.execute(
            update(GROUP).where(GROUP.c.dialer_id == self.dialer_id).values(dialer_id=None, lease_until=None)
        )

    def dialers(self) -> list[dict[str, Any]]:
        return [dict(r._mapping) for r in self.c.execute(select(DIALER)).all()]

    def take_over(self, dialer_ids: Sequence[str], now: float) -> None:
        """Make this dialer the follower of the open calls and claims of dialers found dead, and mark
        them stopped."""
        ids = list(dialer_ids)
        self.c.execute(
            update(CALL)
            .where(CALL.c.dialer_id.in_(ids), CALL.c.state.in_(OPEN_CALL_STATES))
            .values(dialer_id=self.dialer_id)
        )
        self.c.execute(
            update(LEAD)
            .where(LEAD.c.status == LeadStatus.CLAIMED.value, LEAD.c.claimed_by.in_(ids))
            .values(claimed_by=self.dialer_id)
        )
        self.c.execute(update(DIALER).where(DIALER.c.id.in_(ids)).values(stopped_at=now))

    def lease_groups(self, wanted: Sequence[int], *, now: float, ttl: float, at_most: int) -> set[int]:
        """Renew this dialer's leases on skill groups and take free or expired ones among `wanted`,
        holding at most `at_most` (a fair share between live dialers). The groups it holds."""
        c = self.c
        c.execute(
            update(GROUP)
            .where(GROUP.c.dialer_id == self.dialer_id, GROUP.c.id.not_in(list(wanted) or [-1]))
            .values(dialer_id=None, lease_until=None)
        )
        held = set(
            c.execute(
                update(GROUP)
                .where(GROUP.c.dialer_id == self.dialer_id)
                .values(lease_until=now + ttl)
                .returning(GROUP.c.id)
            ).scalars()
        )
        extra = sorted(held, reverse=True)[: max(0, len(held) - at_most)]
        if extra:  # more than a fair share since another dialer joined: hand some back
            c.execute(
                update(GROUP)
                .where(GROUP.c.id.in_(extra), GROUP.c.dialer_id == self.dialer_id)
                .values(dialer_id=None, lease_until=None)
            )
            held -= set(extra)
        for group in wanted:
            if len(held) >= at_most:
                break
            if group in held:
                continue
            taken = c.execute(
                update(GROUP)
                .where(
                    GROUP.c.id == group,
                    (GROUP.c.dialer_id.is_(None)) | (GROUP.c.lease_until < now),
                )
                .values(dialer_id=self.dialer_id, lease_until=now + ttl)
            ).rowcount
            if taken:
                held.add(group)
        return held

    def orphan_claims(self, dialer_ids: Sequence[str]) -> int:
        """Leads claimed by these dialers that have no open call: back to the queue, attempt given back."""
        open_lead_ids = select(CALL.c.lead_id).where(
            CALL.c.state.in_(OPEN_CALL_STATES), CALL.c.lead_id.is_not(None)
        )
        res = self.c.execute(
            update(LEAD)
            .where(
                LEAD.c.status == LeadStatus.CLAIMED.value,
                LEAD.c.claimed_by.in_(list(dialer_ids)),
                LEAD.c.id.not_in(open_lead_ids),
            )
            .values(
                status=LeadStatus.PENDING.value,
                claimed_by="",
                attempts=func.max(LEAD.c.attempts - 1, 0)
                if not self.pg
                else func.greatest(LEAD.c.attempts - 1, 0),
            )
        )
        return int(res.rowcount)

    def recent_calls(self, campaign_id: int, limit: int = 600) -> list[dict[str, Any]]:
        rows = self.c.execute(
            select(
                CALL.c.created_at,
                CALL.c.answered_at,
                CALL.c.connected_at,
                CALL.c.ended_at,
                CALL.c.result,
                CALL.c.answer_kind,
            )
            .where(CALL.c.campaign_id == campaign_id, CALL.c.state == CallState.ENDED.value)
            .order_by(CALL.c.created_at.desc())
            .limit(limit)
        ).all()
        return [dict(r._mapping) for r in reversed(rows)]

    def abandon_totals(self, campaign_id: int) -> tuple[int, int]:
        """(live answered, abandoned) over the whole task."""
        row = self.c.execute(
            select(
                func.count().filter(CALL.c.result.in_(["answered", "abandoned"])),
                func.count().filter(CALL.c.result == "abandoned"),
            ).where(CALL.c.campaign_id == campaign_id, CALL.c.direction == "outbound")
        ).one()
        return int(row[0]), int(row[1])

    def agent_by_extension(self, extension: str) -> int | None:
        return self.c.execute(select(AGENT.c.id).where(AGENT.c.extension == extension)).scalar_one_or_none()

    def outcomes_settled(self, call_ids: Sequence[str]) -> set[str]:
        """A draft settled, or a disposition on the call row (saved by any other path)."""
        ids = list(call_ids)
        drafts = select(DRAFT.c.call_id).where(DRAFT.c.call_id.in_(ids), DRAFT.c.settled_at.is_not(None))
        calls = select(CALL.c.id).where(CALL.c.id.in_(ids), CALL.c.disposition != "")
        return set(self.c.execute(drafts).scalars()) | set(self.c.execute(calls).scalars())

    def move_agent(
        self,
        *,
        agent_id: int,
        event: agent_table.AgentEvent,
        now: float,
        expect: AgentState | None,
        call_id: str | None = None,
        campaign_id: int | None = None,
        reason: str | None = None,
    ) -> agent_table.AgentMove:
        return agent_table.apply(
            self.c,
            agent_id=agent_id,
            event=event,
            now=now,
            expect=expect,
            call_id=call_id,
            campaign_id=campaign_id,
            reason=reason,
        )

    def finish_campaign(self, campaign_id: int, *, now: float, note: str) -> list[campaign_table.Move]:
        return campaign_table.transition(
            self.c,
            campaign_id=campaign_id,
            event=campaign_table.CampaignEvent.FINISH,
            actor="dialer",
            now=now,
            note=note,
        )

    def pause_campaign(self, campaign_id: int, *, now: float, note: str) -> list[campaign_table.Move]:
        return campaign_table.transition(
            self.c,
            campaign_id=campaign_id,
            event=campaign_table.CampaignEvent.PAUSE,
            actor="dialer",
            now=now,
            note=note,
        )

    def counters(self, campaign_id: int) -> Counters:
        return snapshot_from_db(self.c, campaign_id)

    def screen_pop(self, call_id: str, *, preview: bool = False) -> ScreenPop | None:
        return pop_payload(self.c, call_id, preview=preview)
