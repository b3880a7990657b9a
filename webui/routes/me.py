"""The signed-in user's own settings: the phone a supervisor listens in from ("My phone")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field
from sqlmodel import Session

from callcenter.accounts import Principal
from callcenter.http import get_session, require
from callcenter.models import Permission, User

router = APIRouter(prefix="/api/me")


class PhoneIn(BaseModel):
    # The phone `POST /api/monitor/spy` rings when the supervisor names none: an extension.
    phone: str = Field("", max_length=32, pattern=r"^[0-9A-Za-z_]*$")


def my_phone(session: Session, principal: Principal) -> str:
    """The saved phone, else the user's own extension, else empty."""
    user = session.get(User, principal.user_id)
    return (user.my_phone if user else "") or (principal.extension or "")


@router.get("/phone")
def get_phone(
    principal: Principal = require(Permission.MONITOR), session: Session = Depends(get_session)
) -> dict[str, Any]:
    return {"phone": my_phone(session, principal)}


@router.put("/phone")
def put_phone(
    body: PhoneIn,
    principal: Principal = require(Permission.MONITOR),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    user = session.get(User, principal.user_id)
    if user is None:
        raise HTTPException(404, "no such user")
    user.my_phone = body.phone
    session.add(user)
    return {"phone": my_phone(session, principal)}
