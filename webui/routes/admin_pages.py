"""Administration pages: users, roles (read-only), skill groups, agents and their SIP extensions,
gateways (with the live status the dialer last published).

The tables are rendered here from the same functions that serve `/api/admin/*`; the forms on the pages
write through that JSON API (static/js/admin.js) and reload.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse
from sqlmodel import Session

from callcenter import gateway_admin
from callcenter.http import get_ctx, get_session, require
from callcenter.models import Permission
from webui.i18n import keys_with_prefix
from webui.routes import admin as api
from webui.templating import render

router = APIRouter(prefix="/admin", dependencies=[require(Permission.ADMIN)])
JS_KEYS = keys_with_prefix("adm.js.")


def _page(request: Request, name: str, tab: str, **context: Any) -> Any:
    return render(
        request, f"admin/{name}.html", {"active": "admin", "tab": tab, "js_keys": JS_KEYS, **context}
    )


@router.get("")
def index() -> Any:
    return RedirectResponse("/admin/users", status_code=303)


@router.get("/users")
def users(request: Request, session: Session = Depends(get_session)) -> Any:
    roles = api.list_roles(session)
    return _page(request, "users", "users", users=api.list_users(session), roles=roles)


@router.get("/roles")
def roles(request: Request, session: Session = Depends(get_session)) -> Any:
    return _page(request, "roles", "roles", roles=api.list_roles(session), permissions=api.list_permissions())


@router.get("/skill-groups")
def skill_groups(request: Request, session: Session = Depends(get_session)) -> Any:
    agents = api.list_agents(session)
    return _page(
        request,
        "skill_groups",
        "skill_groups",
        groups=api.list_skill_groups(session),
        agents=agents,
        agent_by_id={a.id: a for a in agents},
    )


@router.get("/agents")
def agents(request: Request, session: Session = Depends(get_session)) -> Any:
    users = api.list_users(session)
    groups = api.list_skill_groups(session)
    return _page(
        request,
        "agents",
        "agents",
        agents=api.list_agents(session),
        groups=groups,
        group_by_id={g.id: g for g in groups},
        users_without_extension=[u for u in users if u.extension is None],
        user_by_id={u.id: u for u in users},
    )


@router.get("/gateways")
def gateways(request: Request, session: Session = Depends(get_session)) -> Any:
    ctx = get_ctx(request)
    settings = ctx.settings
    kind = settings.gateway.value
    host = {
        "asterisk": f"{settings.ami_host}:{settings.ami_port}",
        "freeswitch": f"{settings.esl_host}:{settings.esl_port}",
    }
    default = {
        "key": "default",
        "kind": kind,
        "where": host.get(kind, ""),
        "status": gateway_admin.latest_statuses(ctx.redis, ["default"]).get("default"),
    }
    return _page(
        request,
        "gateways",
        "gateways",
        gateways=api.gateways_public(session, ctx.redis),
        default=default,
        prefix=gateway_admin.SECRET_ENV_PREFIX,
    )
