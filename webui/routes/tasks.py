"""Outbound tasks (campaigns) API: create with the list file, list, show, start / pause / resume / stop,
edit, delete, live snapshot, import progress and report; the do-not-call list; supervisor spy."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import func
from sqlmodel import Session, col, select

from callcenter import campaigns, dnc, leads
from callcenter.accounts import Principal
from callcenter.campaigns import ACTIONS, CampaignEvent, CampaignSpec
from callcenter.http import get_ctx, get_session, require
from callcenter.messages import TaskStats, decode, stats_key
from callcenter.models import (
    Agent,
    Call,
    CallState,
    Campaign,
    CampaignAudit,
    CampaignState,
    GatewayRow,
    PacingMode,
    Permission,
    SkillGroup,
)
from callcenter.notifier import Notifier
from callcenter.stats import snapshot_from_db
from webui.dialer_client import dialer
from webui.live import gateway_of

router = APIRouter()
MANAGE = require(Permission.TASK_MANAGE)
CONTROL = require(Permission.TASK_CONTROL)
VIEW = require(Permission.TASK_MANAGE, Permission.TASK_CONTROL, Permission.MONITOR)


class TaskForm(BaseModel):
    """The fields of the create form (multipart, next to the list file)."""

    name: str = Field(min_length=1, max_length=128)
    skill_group_id: int
    max_concurrency: int = Field(10, gt=0, le=10_000)
    agent_ratio: float = Field(1.0, gt=0, le=20)
    pacing_mode: PacingMode = PacingMode.RATIO
    gateway_id: int | None = None
    caller_id: str = Field("", max_length=20, pattern=r"^\+?[0-9]*$")
    caller_name: str = Field("", max_length=64)
    recording: bool = False
    amd: bool = False
    ring_timeout_s: int = Field(25, ge=15, le=120, description="DOMAIN: ring at least 15 s")
    wrap_up_s: int = Field(30, ge=0, le=3600)
    window_start: str = Field("08:00", pattern=r"^\d\d:\d\d$")
    window_end: str = Field("21:00", pattern=r"^\d\d:\d\d$")
    window_days: str = Field("0123456", pattern=r"^[0-6]{1,7}$")
    timezone: str = Field("Asia/Shanghai", max_length=64)
    max_attempts: int = Field(3, ge=1, le=20)
    retry_delays: str = Field(
        '{"busy": 600, "no_answer": 1800, "congestion": 1800, "failed": 3600, "lost": 300}', max_length=1000
    )
    abandon_target_pct: float = Field(3.0, gt=0, le=100)
    predictive_min_agents: int = Field(10, ge=1, le=1000)
    dispositions: str = Field("", max_length=4000, description="JSON list, or one per line")
    phone_column: str = Field("", max_length=64)

    @field_validator("retry_delays")
    @classmethod
    def _retry(cls, value: str) -> str:
        from callcenter.policy import RetryPolicy

        RetryPolicy.parse(1, value)
        return value

    def disposition_list(self) -> list[str] | None:
        text = self.dispositions.strip()
        if not text:
            return None
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError:
                raise HTTPException(
                    422, [{"loc": ["body", "dispositions"], "msg": "not a JSON list"}]
                ) from None
        else:
            items = text.splitlines()
        return [str(i).strip() for i in items if str(i).strip()][:50]


class TaskEdit(BaseModel):
    max_concurrency: int | None = Field(None, gt=0, le=10_000)
    agent_ratio: float | None = Field(None, gt=0, le=20)
    pacing_mode: PacingMode | None = None
    abandon_target_pct: float | None = Field(None, gt=0, le=100)
    predictive_min_agents: int | None = Field(None, ge=1, le=1000)

    model_config = {"extra": "forbid"}


class ImportProgress(BaseModel):
    state: str
    total: int
    done: int
    imported: int
    rejected: int
    percent: float
    rows_per_s: float
    error: str


class TaskPublic(BaseModel):
    id: int
    name: str
    state: str
    actions: list[str]
    skill_group_id: int
    gateway_id: int | None
    max_concurrency: int
    agent_ratio: float
    pacing_mode: str
    abandon_target_pct: float
    predictive_min_agents: int
    caller_id: str
    caller_name: str
    recording: bool
    amd: bool
    ring_timeout_s: int
    wrap_up_s: int
    window_start: str
    window_end: str
    window_days: str
    timezone: str
    max_attempts: int
    retry_delays: dict[str, float]
    dispositions: list[str]
    list_filename: str
    created_by: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    import_progress: ImportProgress
    # Filled by the routes from the gateway and skill group rows (`_public`): what the pages show.
    gateway_kind: str = ""  # simulated | asterisk | freeswitch (the UI labels a simulated PBX)
    gateway_name: str = ""
    skill_group_name: str = ""


def _progress(c: Campaign) -> ImportProgress:
    total = max(c.import_total, c.import_done)
    percent = (
        100.0
        if c.state != CampaignState.INITIALIZING.value
        else (100.0 * c.import_done / total if total else 0.0)
    )
    return ImportProgress(
        state=c.state,
        total=total,
        done=c.import_done,
        imported=c.import_ok,
        rejected=c.import_rejected,
        percent=round(percent, 1),
        rows_per_s=c.import_rows_per_s,
        error=c.import_error,
    )


def task_public(c: Campaign) -> TaskPublic:
    assert c.id is not None
    return TaskPublic(
        **{
            k: getattr(c, k)
            for k in (
                "id",
                "name",
                "state",
                "skill_group_id",
                "gateway_id",
                "max_concurrency",
                "agent_ratio",
                "pacing_mode",
                "abandon_target_pct",
                "predictive_min_agents",
                "caller_id",
                "caller_name",
                "recording",
                "amd",
                "ring_timeout_s",
                "wrap_up_s",
                "window_start",
                "window_end",
                "window_days",
                "timezone",
                "max_attempts",
                "list_filename",
                "created_by",
                "created_at",
                "started_at",
                "finished_at",
            )
        },
        actions=sorted(ACTIONS[CampaignState(c.state)]),
        retry_delays=json.loads(c.retry_delays or "{}"),
        dispositions=json.loads(c.dispositions or "[]"),
        import_progress=_progress(c),
    )


def _publics(request: Request, session: Session, rows: list[Campaign]) -> list[TaskPublic]:
    """`task_public` plus the names the pages show: gateway kind and name, skill group name."""
    gateways = {g.id: g for g in session.exec(select(GatewayRow)) if g.id is not None}
    groups = {g.id: g.name for g in session.exec(select(SkillGroup))}
    default_kind = get_ctx(request).settings.gateway.value
    out = []
    for c in rows:
        task = task_public(c)
        task.gateway_kind, task.gateway_name = gateway_of(default_kind, gateways, c.gateway_id)
        task.skill_group_name = groups.get(c.skill_group_id, "")
        out.append(task)
    return out


def _public(request: Request, session: Session, c: Campaign) -> TaskPublic:
    return _publics(request, session, [c])[0]


def _upload_dir(request: Request) -> Path:
    path = get_ctx(request).settings.data_dir / "uploads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _save_upload(request: Request, file: UploadFile) -> Path:
    suffix = Path(file.filename or "list.csv").suffix.lower()[:6] or ".csv"
    dest = _upload_dir(request) / f"{uuid.uuid4().hex}{suffix}"
    with dest.open("wb") as out:
        shutil.copyfileobj(file.file, out, length=1024 * 1024)
    return dest


def _enqueue_import(request: Request, campaign_id: int, path: Path, phone_column: str, filename: str) -> str:
    from redis import Redis
    from rq import Queue

    ctx = get_ctx(request)
    queue = ctx.extras.get("rq")
    if queue is None:
        queue = ctx.extras["rq"] = Queue(
            "callcenter", connection=Redis.from_url(ctx.settings.redis_url), default_timeout=3600
        )
    job = queue.enqueue(
        leads.import_job,
        campaign_id,
        str(path),
        phone_column or None,
        filename,
        job_id=f"import-{campaign_id}-{uuid.uuid4().hex[:8]}",
    )
    return str(job.id)


def _publish_moves(request: Request, moves: list[campaigns.Move]) -> None:
    notifier = Notifier(get_ctx(request).bus)
    for m in moves:
        notifier.publish(m.message())
    dialer(request).task_changed(moves[-1].campaign_id if moves else None)


@router.post("/api/tasks", status_code=201)
def create_task(
    request: Request,
    form: Annotated[TaskForm, Form()],
    file: Annotated[UploadFile, File(description="CSV or XLSX with a header row")],
    principal: Principal = MANAGE,
    session: Session = Depends(get_session),
) -> TaskPublic:
    """Create a task from its list; the list imports in the background while the task is initializing."""
    path = _save_upload(request, file)
    try:
        table = leads.read_table(path, filename=file.filename or "")
        leads.find_phone_column(table.header, form.phone_column or None)
        if next(table.rows, None) is None:
            raise leads.ListError("the list has a header but no rows")
        from callcenter.policy import validate_window

        validate_window(form.window_start, form.window_end, form.window_days, form.timezone)
        spec = CampaignSpec(
            **form.model_dump(exclude={"dispositions", "retry_delays", "phone_column"}),
            retry_delays=json.loads(form.retry_delays),
            dispositions=form.disposition_list(),
            list_filename=(file.filename or "")[:255],
        )
        campaign = campaigns.create(session, spec=spec, actor=principal.username, now=time.time())
        session.commit()
    except Exception:
        path.unlink(missing_ok=True)
        raise
    assert campaign.id is not None
    campaign.import_job_id = _enqueue_import(
        request, campaign.id, path, form.phone_column, file.filename or ""
    )
    session.add(campaign)
    session.commit()
    return _public(request, session, campaign)


@router.get("/api/tasks")
def list_tasks(
    request: Request,
    deleted: bool = False,
    principal: Principal = VIEW,
    session: Session = Depends(get_session),
) -> list[TaskPublic]:
    """Tasks, newest first; `deleted=true` lists the deleted ones (kept for reports)."""
    q = select(Campaign).order_by(col(Campaign.id).desc())
    q = (
        q.where(col(Campaign.state) == CampaignState.DELETED.value)
        if deleted
        else q.where(col(Campaign.state) != CampaignState.DELETED.value)
    )
    return _publics(request, session, list(session.exec(q)))


@router.get("/api/tasks/{task_id}")
def get_task(
    task_id: int, request: Request, principal: Principal = VIEW, session: Session = Depends(get_session)
) -> TaskPublic:
    return _public(request, session, campaigns.get(session, task_id))


@router.patch("/api/tasks/{task_id}")
def edit_task(
    task_id: int,
    body: TaskEdit,
    request: Request,
    principal: Principal = MANAGE,
    session: Session = Depends(get_session),
) -> TaskPublic:
    changes = body.model_dump(exclude_none=True)
    campaign = campaigns.edit(session, campaign_id=task_id, changes=changes, actor=principal.username)
    session.commit()
    dialer(request).task_changed(task_id)
    return _public(request, session, campaign)


def _move(request: Request, session: Session, task_id: int, event: CampaignEvent, actor: str) -> TaskPublic:
    campaign = campaigns.get(session, task_id)
    if event is CampaignEvent.START and campaign.state == CampaignState.STOPPED.value:
        campaigns.check_startable(session, campaign)
    moves = campaigns.transition(session, campaign_id=task_id, event=event, actor=actor, now=time.time())
    session.commit()
    _publish_moves(request, moves)
    session.refresh(campaign)
    return _public(request, session, campaign)


@router.post("/api/tasks/{task_id}/start")
def start_task(
    task_id: int, request: Request, principal: Principal = CONTROL, session: Session = Depends(get_session)
) -> TaskPublic:
    return _move(request, session, task_id, CampaignEvent.START, principal.username)


@router.post("/api/tasks/{task_id}/pause")
def pause_task(
    task_id: int, request: Request, principal: Principal = CONTROL, session: Session = Depends(get_session)
) -> TaskPublic:
    return _move(request, session, task_id, CampaignEvent.PAUSE, principal.username)


@router.post("/api/tasks/{task_id}/resume")
def resume_task(
    task_id: int, request: Request, principal: Principal = CONTROL, session: Session = Depends(get_session)
) -> TaskPublic:
    return _move(request, session, task_id, CampaignEvent.RESUME, principal.username)


@router.post("/api/tasks/{task_id}/stop")
def stop_task(
    task_id: int, request: Request, principal: Principal = CONTROL, session: Session = Depends(get_session)
) -> TaskPublic:
    return _move(request, session, task_id, CampaignEvent.STOP, principal.username)


@router.delete("/api/tasks/{task_id}")
def delete_task(
    task_id: int, request: Request, principal: Principal = MANAGE, session: Session = Depends(get_session)
) -> TaskPublic:
    """Soft delete (kept for reports); a running or paused task is stopped first."""
    return _move(request, session, task_id, CampaignEvent.DELETE, principal.username)


@router.get("/api/tasks/{task_id}/import")
def import_progress(
    task_id: int, principal: Principal = VIEW, session: Session = Depends(get_session)
) -> ImportProgress:
    return _progress(campaigns.get(session, task_id))


@router.get("/api/tasks/{task_id}/import-report.csv")
def import_report(
    task_id: int, principal: Principal = VIEW, session: Session = Depends(get_session)
) -> Response:
    """Every row that was not imported, with the reason (CSV, opens in Excel)."""
    campaign = campaigns.get(session, task_id)
    body = leads.report_csv(session.connection(), task_id)
    name = f"task-{task_id}-import-report.csv"
    return Response(
        body.encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "X-Task-State": campaign.state},
    )


@router.get("/api/tasks/{task_id}/audit")
def task_audit(
    task_id: int, principal: Principal = VIEW, session: Session = Depends(get_session)
) -> list[dict[str, Any]]:
    campaigns.get(session, task_id)
    rows = session.exec(
        select(CampaignAudit).where(col(CampaignAudit.campaign_id) == task_id).order_by(col(CampaignAudit.id))
    )
    return [r.model_dump(exclude={"campaign_id"}) for r in rows]


@router.get("/api/tasks/{task_id}/snapshot")
def task_snapshot(
    task_id: int, request: Request, principal: Principal = VIEW, session: Session = Depends(get_session)
) -> dict[str, Any]:
    """Live counters: the dialer's (published each second) when fresh, else counted from the rows."""
    campaign = campaigns.get(session, task_id)
    raw = get_ctx(request).redis.get(stats_key(task_id))
    stats = decode(raw) if raw else None
    if isinstance(stats, TaskStats):
        data = stats.model_dump()
        data["source"] = "dialer"
    else:
        data = snapshot_from_db(session.connection(), task_id).as_dict()
        data["source"] = "database"
    data.update(
        campaign_id=task_id, state=campaign.state, name=campaign.name, pacing_mode=campaign.pacing_mode
    )
    agents = session.exec(
        select(Agent.state, func.count())
        .where(col(Agent.id).in_(_group_agents(campaign.skill_group_id)))
        .group_by(col(Agent.state))
    ).all()
    data["agents"] = {state: n for state, n in agents}
    return data


class HistoryBucket(BaseModel):
    t: float  # start of the minute (epoch seconds)
    dialled: int
    answered: int
    connected: int
    abandoned: int
    abandon_pct: float | None  # abandoned / (connected + abandoned) in that minute; None when neither


class TaskHistory(BaseModel):
    campaign_id: int
    bucket_s: int
    buckets: list[HistoryBucket]


@router.get("/api/tasks/{task_id}/history")
def task_history(
    task_id: int,
    minutes: int = Query(60, ge=1, le=24 * 60),
    principal: Principal = VIEW,
    session: Session = Depends(get_session),
) -> TaskHistory:
    """Calls per minute over the last `minutes` (the monitor's chart starts from this and goes on
    from the pushed counters): dialled by start time, answered, connected and abandoned by when it
    happened. Every minute is listed, the current one last."""
    campaigns.get(session, task_id)
    bucket = 60
    end = (time.time() // bucket + 1) * bucket
    start = end - minutes * bucket
    counts = [{"dialled": 0, "answered": 0, "connected": 0, "abandoned": 0} for _ in range(minutes)]

    def add(at: float | None, key: str) -> None:
        if at is not None and start <= at < end:
            counts[int((at - start) // bucket)][key] += 1

    rows = session.exec(
        select(
            Call.created_at, Call.answered_at, Call.answer_kind, Call.connected_at, Call.ended_at, Call.result
        ).where(
            col(Call.campaign_id) == task_id,
            col(Call.state) != CallState.PREVIEW.value,
            (col(Call.created_at) >= start) | (col(Call.ended_at) >= start),
        )
    )
    for created, answered, kind, connected, ended, result in rows:
        add(created, "dialled")
        if kind != "machine":
            add(answered, "answered")
        add(connected, "connected")
        if result == "abandoned":
            add(ended, "abandoned")
    buckets = []
    for i, c in enumerate(counts):
        live = c["connected"] + c["abandoned"]
        pct = round(100.0 * c["abandoned"] / live, 2) if live else None
        buckets.append(HistoryBucket(t=start + i * bucket, abandon_pct=pct, **c))
    return TaskHistory(campaign_id=task_id, bucket_s=bucket, buckets=buckets)


def _group_agents(group_id: int) -> Any:
    from callcenter.models import AgentSkill

    return select(AgentSkill.agent_id).where(col(AgentSkill.skill_group_id) == group_id)


# --- do-not-call list ------------------------------------------------------------------------------


class DncAdd(BaseModel):
    numbers: list[str] = Field(min_length=1, max_length=10_000)
    note: str = Field("", max_length=200)


@router.get("/api/dnc")
def list_dnc(
    q: str = "",
    limit: int = 100,
    offset: int = 0,
    principal: Principal = MANAGE,
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    return dnc.listing(session, query=q, limit=min(max(limit, 1), 1000), offset=max(offset, 0))


@router.post("/api/dnc", status_code=201)
def add_dnc(
    body: DncAdd, request: Request, principal: Principal = MANAGE, session: Session = Depends(get_session)
) -> dict[str, Any]:
    return dnc.add(
        session,
        numbers=body.numbers,
        region=get_ctx(request).settings.default_region,
        source=principal.username,
        note=body.note,
    )


@router.post("/api/dnc/upload", status_code=201)
def upload_dnc(
    request: Request,
    file: Annotated[UploadFile, File()],
    principal: Principal = MANAGE,
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    path = _save_upload(request, file)
    try:
        return dnc.add_file(
            session,
            path=path,
            filename=file.filename or "",
            region=get_ctx(request).settings.default_region,
            source=principal.username,
        )
    finally:
        path.unlink(missing_ok=True)


@router.delete("/api/dnc/{number}")
def remove_dnc(
    number: str, request: Request, principal: Principal = MANAGE, session: Session = Depends(get_session)
) -> dict[str, Any]:
    return {"removed": dnc.remove(session, number=number, region=get_ctx(request).settings.default_region)}


# --- requests the dialer answers (preview clicks, spy) ---------------------------------------------


class SpyIn(BaseModel):
    agent_id: int
    mode: Literal["listen", "whisper", "barge"] = "listen"
    supervisor_extension: str | None = Field(None, pattern=r"^[0-9A-Za-z_]{1,32}$")


@router.post("/api/monitor/spy")
async def spy(
    body: SpyIn,
    request: Request,
    principal: Principal = require(Permission.MONITOR),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    """Ring the supervisor's phone and listen / whisper / barge on an agent's call."""
    target = session.get(Agent, body.agent_id)
    if target is None:
        raise HTTPException(404, "no such agent")
    extension = body.supervisor_extension or principal.extension
    if not extension:
        raise HTTPException(
            422,
            [
                {
                    "loc": ["body", "supervisor_extension"],
                    "msg": "you have no extension of your own: give the phone to ring",
                }
            ],
        )
    reply = await dialer(request).spy(
        target_extension=target.extension, supervisor_extension=extension, mode=body.mode
    )
    return {"ok": True, "spy_id": reply.spy_id}
