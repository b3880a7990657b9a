"""Jinja2 environment shared by all page routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates

from webui.i18n import pick_language, translate

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def render(request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200) -> Any:
    from callcenter.http import csrf_token, current_principal

    principal = current_principal(request)
    lang = pick_language(
        request.cookies.get("lang"),
        request.headers.get("accept-language"),
        principal.locale if principal else None,
    )
    ctx: dict[str, Any] = {
        "principal": principal,
        "lang": lang,
        "t": lambda key: translate(key, lang),
        "mode": request.app.state.ctx.settings.mode.value,
        "csrf_token": csrf_token(request),
    }
    ctx.update(context or {})
    return TEMPLATES.TemplateResponse(request, name, ctx, status_code=status_code)
