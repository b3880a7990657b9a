"""Outbound task pages: the task list (live by push), the deleted tasks, create, edit (pacing settings
only) and the do-not-call list.

The pages are thin: the list is rendered by static/js/tasks.js from the same JSON the tasks API serves
(`webui.routes.tasks`), and the forms write through that API. Who sees what follows the API's
permissions: `task_manage` creates, edits and deletes; `task_control` starts, pauses, resumes and
stops; `monitor` opens the live monitor; any of the three may view the lists.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlmodel import Session, col, select

from callcenter.accounts import Principal
from callcenter.http import get_ctx, get_session, require
from callcenter.models import (
    DEFAULT_DISPOSITIONS,
    DEFAULT_RETRY_DELAYS,
    CampaignState,
    GatewayRow,
    PacingMode,
    Permission,
    SkillGroup,
)
from callcenter.policy import RETRYABLE
from webui.i18n import keys_with_prefix
from webui.routes import tasks as api
from webui.templating import render

router = APIRouter()
MANAGE = require(Permission.TASK_MANAGE)
VIEW = require(Permission.TASK_MANAGE, Permission.TASK_CONTROL, Permission.MONITOR)

JS_KEYS = keys_with_prefix("task.", "tstate.", "act.", "pace.", "gw.", "live.", "dnc.")
# The retry delays the create form offers, in the order a person thinks of them.
RETRY_ORDER = ("busy", "no_answer", "congestion", "failed", "lost", "machine", "abandoned")
assert set(RETRY_ORDER) == {r.value for r in RETRYABLE}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # Monday = 0, as in `window_days`


def _can(principal: Principal) -> dict[str, bool]:
    return {
        "manage": principal.can(Permission.TASK_MANAGE),
        "control": principal.can(Permission.TASK_CONTROL),
        "monitor": principal.can(Permission.MONITOR),
    }


def _page(request: Request, principal: Principal, name: str, tab: str, **context: Any) -> Any:
    return render(
        request,
        f"tasks/{name}.html",
        {"active": "tasks", "tab": tab, "js_keys": JS_KEYS, "can": _can(principal), **context},
    )


def _json(data: Any) -> str:
    """JSON for a `<script type="application/json">` block: `<`, `>` and `&` as \\u escapes, so no
    text in it (`</script>`, or `<!--<script>`, which would swallow the rest of the page) is markup."""
    text = json.dumps(data, ensure_ascii=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@router.get("/tasks")
def task_list(request: Request, principal: Principal = VIEW, session: Session = Depends(get_session)) -> Any:
    tasks = api.list_tasks(request, deleted=False, principal=principal, session=session)
    data = [t.model_dump() for t in tasks]
    return _page(request, principal, "list", "list", tasks_json=_json(data))


@router.get("/tasks/deleted")
def deleted_tasks(
    request: Request, principal: Principal = VIEW, session: Session = Depends(get_session)
) -> Any:
    tasks = api.list_tasks(request, deleted=True, principal=principal, session=session)
    return _page(request, principal, "deleted", "deleted", tasks=tasks)


def _form_choices(request: Request, session: Session) -> dict[str, Any]:
    groups = list(session.exec(select(SkillGroup).order_by(col(SkillGroup.name))))
    gateways = list(
        session.exec(
            select(GatewayRow).where(col(GatewayRow.enabled).is_(True)).order_by(col(GatewayRow.name))
        )
    )
    fields = api.TaskForm.model_fields
    return {
        "groups": groups,
        "gateways": gateways,
        "default_gateway": get_ctx(request).settings.gateway.value,
        "pacing_modes": [m.value for m in PacingMode],
        "defaults": {name: field.get_default(call_default_factory=True) for name, field in fields.items()},
        "retry_defaults": DEFAULT_RETRY_DELAYS,
        "retry_order": RETRY_ORDER,
        "weekdays": WEEKDAYS,
        "default_dispositions": DEFAULT_DISPOSITIONS,
    }


@router.get("/tasks/new")
def new_task(request: Request, principal: Principal = MANAGE, session: Session = Depends(get_session)) -> Any:
    return _page(request, principal, "new", "new", **_form_choices(request, session))


@router.get("/tasks/{task_id}/edit")
def edit_task(
    task_id: int, request: Request, principal: Principal = MANAGE, session: Session = Depends(get_session)
) -> Any:
    task = api.get_task(task_id, request, principal=principal, session=session)
    return _page(
        request,
        principal,
        "edit",
        "edit",
        task=task,
        editable="edit" in task.actions,
        pacing_modes=[m.value for m in PacingMode],
        deleted=task.state == CampaignState.DELETED.value,
    )


@router.get("/dnc")
def dnc_page(request: Request, principal: Principal = MANAGE) -> Any:
    return _page(request, principal, "dnc", "dnc")
