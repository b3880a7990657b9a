"""Server-rendered pages that are not owned by a feature module."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from callcenter.accounts import Principal
from webui.auth import require
from webui.templating import render

router = APIRouter()


@router.get("/")
def home(request: Request, principal: Principal = require()) -> Any:
    return render(request, "home.html")
