"""Server-rendered pages that are not owned by a feature module."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse
from sqlmodel import Session

from callcenter.accounts import Principal
from callcenter.http import get_session, require
from callcenter.models import Permission
from webui.i18n import keys_with_prefix
from webui.routes.me import my_phone
from webui.templating import render

router = APIRouter()

MONITOR_JS_KEYS = keys_with_prefix(
    "state.", "reason.", "live.", "dir.", "mon.", "tstate.", "act.", "pace.", "gw.", "result.", "task.cancel"
)


def landing(principal: Principal) -> str | None:
    """Where `/` takes a user: the page of their main job (admin and task managers: the task list;
    supervisors: the monitor; agents: the workstation), or None for the links page."""
    if principal.can(Permission.TASK_MANAGE):
        return "/tasks"
    if principal.can(Permission.MONITOR):
        return "/monitor"
    if principal.can(Permission.WORKSTATION) and principal.agent_id is not None:
        return "/workstation"
    if principal.can(Permission.TASK_CONTROL):
        return "/tasks"
    return None


@router.get("/")
def home(request: Request, principal: Principal = require()) -> Any:
    target = landing(principal)
    if target is not None:
        return RedirectResponse(target, status_code=303)
    return render(request, "home.html", {"active": "home"})


@router.get("/monitor")
def monitor(
    request: Request,
    principal: Principal = require(Permission.MONITOR),
    session: Session = Depends(get_session),
) -> Any:
    """The supervisor's live monitor: every running or paused task (counters, chart, actions) and the
    agents grid with listen / whisper / barge."""
    can = {
        "control": principal.can(Permission.TASK_CONTROL),
        "view_tasks": True,  # monitor may view the task list
    }
    context = {
        "active": "monitor",
        "js_keys": MONITOR_JS_KEYS,
        "can": can,
        "my_phone": my_phone(session, principal),
    }
    return render(request, "monitor.html", context)
