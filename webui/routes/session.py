"""Signing in and out: the login page and session cookie, API tokens, `/api/me`."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field
from sqlmodel import Session

from callcenter.accounts import Principal, authenticate, load_principal
from callcenter.http import end_session, get_session, issue_token, public, require, start_session
from webui.auth import min_duration, request_address, throttle_for, too_many_attempts
from webui.templating import render

router = APIRouter()
FAILED_LOGIN = "invalid username or password"
# Every failed login takes at least this long, whatever the reason, on top of argon2's own cost.
FAILED_LOGIN_FLOOR_S = 0.25


class TokenRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class TokenPublic(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class MePublic(BaseModel):
    id: int
    username: str
    display_name: str
    roles: list[str]
    permissions: list[str]
    agent_id: int | None
    extension: str | None


def _check_login(request: Request, session: Session, username: str, password: str) -> Principal | None:
    """Authenticate with throttling; None (after a fixed delay) when it fails. The attempt is counted
    before the password is looked at, in one Redis step, so concurrent guesses cannot all slip in
    under the limit."""
    started = time.perf_counter()
    throttle = throttle_for(request)
    address = request_address(request)
    wait = throttle.attempt(username, address)
    if wait:
        raise too_many_attempts(wait)
    user = authenticate(session, username=username, password=password)
    if user is None:
        min_duration(started, FAILED_LOGIN_FLOOR_S)
        return None
    throttle.succeeded(username, address)
    assert user.id is not None
    return load_principal(session, user.id)


@router.get("/login", dependencies=[public()])
def login_page(request: Request, next: str = "/") -> Any:
    return render(request, "login.html", {"next": _safe_next(next), "error": None})


def _safe_next(url: str) -> str:
    # Only same-site paths: an open redirect after login is a phishing tool.
    return url if url.startswith("/") and not url.startswith("//") else "/"


@router.post("/login", dependencies=[public()])
def login_submit(
    request: Request,
    username: str = Form(...),
    password: str = Form(...),
    next: str = Form("/"),
    session: Session = Depends(get_session),
) -> Any:
    from fastapi import HTTPException

    try:
        principal = _check_login(request, session, username, password)
    except HTTPException as exc:
        if exc.status_code != 429:
            raise
        return render(
            request, "login.html", {"next": _safe_next(next), "error": "login.throttled"}, status_code=429
        )
    if principal is None:
        return render(
            request, "login.html", {"next": _safe_next(next), "error": "login.failed"}, status_code=401
        )
    start_session(request, principal)
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout", dependencies=[public()])
def logout(request: Request) -> Any:
    end_session(request)
    return RedirectResponse("/login", status_code=303)


@router.post("/api/auth/token", dependencies=[public()])
def api_token(request: Request, body: TokenRequest, session: Session = Depends(get_session)) -> TokenPublic:
    from fastapi import HTTPException

    principal = _check_login(request, session, body.username, body.password)
    if principal is None:
        raise HTTPException(401, FAILED_LOGIN, headers={"WWW-Authenticate": "Bearer"})
    settings = request.app.state.ctx.settings
    return TokenPublic(access_token=issue_token(request, principal), expires_in=settings.session_max_age_s)


@router.get("/api/me")
def me(principal: Principal = require()) -> MePublic:
    return MePublic(
        id=principal.user_id,
        username=principal.username,
        display_name=principal.display_name,
        roles=sorted(principal.roles),
        permissions=sorted(p.value for p in principal.permissions),
        agent_id=principal.agent_id,
        extension=principal.extension,
    )


@router.get("/healthz", dependencies=[public()])
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/lang/{lang}", dependencies=[public()])
def set_language(request: Request, lang: str, next: str = "/") -> Any:
    from webui.i18n import LANGUAGES

    resp = RedirectResponse(_safe_next(next), status_code=303)
    if lang in LANGUAGES:
        secure = request.app.state.ctx.settings.secure_cookies
        resp.set_cookie("lang", lang, max_age=365 * 86400, samesite="lax", secure=secure)
    return resp
