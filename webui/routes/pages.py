"""Server-rendered pages that are not owned by a feature module."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from callcenter.accounts import Principal
from callcenter.models import Permission
from webui.auth import require
from webui.i18n import keys_with_prefix
from webui.templating import render

router = APIRouter()

MONITOR_JS_KEYS = keys_with_prefix("state.", "live.", "dir.", "mon.")


@router.get("/")
def home(request: Request, principal: Principal = require()) -> Any:
    return render(request, "home.html", {"active": "home"})


@router.get("/monitor")
def monitor(request: Request, principal: Principal = require(Permission.MONITOR)) -> Any:
    """The supervisor's live monitor: the agents grid now; task counters, chart and actions (phase 2)."""
    return render(request, "monitor.html", {"active": "monitor", "js_keys": MONITOR_JS_KEYS})
