"""Outbound tasks (campaigns) API: create with the list file, list, show, start / pause / resume / stop,
edit, delete, live snapshot, import progress, cancel and report; the do-not-call list; supervisor spy."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import func
from sqlmodel import Session, col, select

from callcenter import campaigns, dnc, jobs, leads
from callcenter.accounts import Principal
from callcenter.campaigns import ACTIONS, CampaignEvent
from callcenter.errors import Invalid
from callcenter.http import get_ctx, get_session, require
from callcenter.messages import TaskStats, decode, stats_key
from callcenter.models import (
    Agent,
    Call,
    CallState,
    Campaign,
    CampaignAudit,
    CampaignBase,
    CampaignCreate,
    CampaignState,
    CampaignUpdate,
    GatewayRow,
    Permission,
    SkillGroup,
)
from callcenter.notifier import Notifier
from callcenter.stats import snapshot_from_db
from callcenter.validation import validate_sound
from webui.dialer_client import dialer
from webui.live import gateway_of
from webui.routes.me import my_phone

router = APIRouter()
MANAGE = require(Permission.TASK_MANAGE)
CONTROL = require(Permission.TASK_CONTROL)
VIEW = require(Permission.TASK_MANAGE, Permission.TASK_CONTROL, Permission.MONITOR)


class TaskForm(CampaignCreate):
    """The create form (multipart, next to the list file): a task's settings, plus which column of
    the list holds the numbers. `dispositions` may be a JSON list or one outcome per line."""

    phone_column: str = Field("", max_length=64)


class ImportProgress(BaseModel):
    state: str
    total: int
    done: int
    imported: int
    rejected: int
    percent: float
    rows_per_s: float
    error: str


class TaskPublic(CampaignBase):
    id: int
    state: str
    actions: list[str]
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
    return TaskPublic.model_validate(
        {
            **c.model_dump(),
            "actions": sorted(ACTIONS[CampaignState(c.state)]),
            "import_progress": _progress(c),
        }
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
    """Copy an upload (spooled to a temporary file as it came in, the request's size already
    bounded by `webui.security`) to the uploads folder, a chunk at a time, refusing it once past the
    upload limit."""
    limit = get_ctx(request).settings.upload_max_bytes
    suffix = Path(file.filename or "list.csv").suffix.lower()[:6] or ".csv"
    dest = _upload_dir(request) / f"{uuid.uuid4().hex}{suffix}"
    size = 0
    try:
        with dest.open("wb") as out:
            while chunk := file.file.read(1024 * 1024):
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"the file is larger than {limit // (1024 * 1024)} MB")
                out.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return dest


def _read_upload(request: Request, path: Path, filename: str) -> leads.Table:
    settings = get_ctx(request).settings
    return leads.read_table(
        path,
        filename=filename,
        max_bytes=settings.upload_max_bytes,
        max_unpacked_bytes=settings.upload_max_unpacked_bytes,
    )


def check_sound(sound: str) -> None:
    """A sound the PBX plays is a file name under its sounds folder (no extension): refused when it
    is not one, or names a path outside that folder (`/etc/...`)."""
    problem = sound.startswith("/") or sound.endswith("/") or "//" in sound
    try:
        validate_sound(sound)
    except Invalid:
        problem = True
    if problem:
        raise Invalid(
            "abandon_sound must be a file name under the sounds folder, such as abandon or "
            f"custom/abandon-2; got {sound!r}",
            field="abandon_sound",
        )


def _rq_queue(request: Request) -> Any:
    """The import queue, on a Redis client of its own (rq needs replies as bytes)."""
    from redis import Redis
    from rq import Queue

    ctx = get_ctx(request)
    queue = ctx.extras.get("rq")
    if queue is None:
        queue = ctx.extras["rq"] = Queue(
            jobs.QUEUE, connection=Redis.from_url(ctx.settings.redis_url), default_timeout=3600
        )
    return queue


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
    check_sound(form.abandon_sound)
    path = _save_upload(request, file)
    try:
        table = _read_upload(request, path, file.filename or "")
        try:
            leads.find_phone_column(table.header, form.phone_column or None)
            if next(table.rows, None) is None:
                raise leads.ListError("the list has a header but no rows")
        finally:
            table.close()
        from callcenter.policy import validate_window

        validate_window(form.window_start, form.window_end, form.window_days, form.timezone)
        spec = CampaignCreate.model_validate(
            {**form.model_dump(exclude={"phone_column"}), "list_filename": (file.filename or "")[:255]}
        )
        campaign = campaigns.create(session, spec=spec, actor=principal.username, now=time.time())
        assert campaign.id is not None
        # The task names its import job before the job exists: a job finding another id there (a
        # restart superseded it) does nothing.
        campaign.import_job_id = jobs.new_import_job_id(campaign.id)
        session.commit()
    except Exception:
        path.unlink(missing_ok=True)
        raise
    jobs.enqueue_import(
        _rq_queue(request),
        job_id=campaign.import_job_id,
        campaign_id=campaign.id,
        path=str(path),
        phone_column=form.phone_column or None,
        filename=file.filename or "",
    )
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
    body: CampaignUpdate,
    request: Request,
    principal: Principal = MANAGE,
    session: Session = Depends(get_session),
) -> TaskPublic:
    changes = body.model_dump(exclude_none=True)
    if "abandon_sound" in changes:
        check_sound(changes["abandon_sound"])
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


@router.post("/api/tasks/{task_id}/import/cancel")
def cancel_import(
    task_id: int, request: Request, principal: Principal = MANAGE, session: Session = Depends(get_session)
) -> TaskPublic:
    """End an import (stuck, or not wanted): the task goes to stopped with an import error saying so,
    keeping the numbers imported so far; 409 unless it is initializing."""
    campaign = campaigns.get(session, task_id)
    moves = leads.cancel_import(session, campaign_id=task_id, actor=principal.username, now=time.time())
    session.commit()
    jobs.stop_import(_rq_queue(request).connection, campaign.import_job_id, task_id)
    _publish_moves(request, moves)
    session.refresh(campaign)
    return _public(request, session, campaign)


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

    rows = session.execute(
        sa.select(
            col(Call.created_at),
            col(Call.answered_at),
            col(Call.answer_kind),
            col(Call.connected_at),
            col(Call.ended_at),
            col(Call.result),
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
    extension = body.supervisor_extension or my_phone(session, principal)
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
    target_extension = target.extension
    # Give the connection back before waiting on the dialer: a slow or hung dialer must not hold one
    # pooled connection per waiting click (60 clicks emptied the pool and stalled every route).
    session.close()
    reply = await dialer(request).spy(
        target_extension=target_extension, supervisor_extension=extension, mode=body.mode
    )
    return {"ok": True, "spy_id": reply.spy_id}
