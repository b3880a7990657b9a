"""Not-ready reasons (`callcenter.reasons`): every signed-in page may read them (the workstation
offers them, the monitor names them); admins add and remove their own."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlmodel import Session

from callcenter import reasons
from callcenter.accounts import Principal
from callcenter.http import get_session, require
from callcenter.models import Permission

router = APIRouter()


class ReasonIn(BaseModel):
    code: str = Field(min_length=1, max_length=32)
    label: str = Field(min_length=1, max_length=64)


@router.get("/api/not-ready-reasons")
def list_reasons(
    principal: Principal = require(), session: Session = Depends(get_session)
) -> list[dict[str, Any]]:
    return reasons.all_reasons(session)


@router.post("/api/admin/not-ready-reasons", status_code=201)
def add_reason(
    body: ReasonIn,
    principal: Principal = require(Permission.ADMIN),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    row = reasons.add(session, code=body.code, label=body.label)
    return {"code": row.code, "label": row.label, "builtin": False}


@router.delete("/api/admin/not-ready-reasons/{code}")
def remove_reason(
    code: str, principal: Principal = require(Permission.ADMIN), session: Session = Depends(get_session)
) -> dict[str, Any]:
    reasons.remove(session, code=code)
    return {"ok": True}
