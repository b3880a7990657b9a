"""Every route declares what it needs; walk roles x routes and check 401 / 403 / allowed for each."""

from __future__ import annotations

import re
from typing import Protocol, TypeGuard

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIWebSocketRoute

from callcenter.http import PublicMarker, Requirement
from callcenter.models import BUILTIN_ROLES
from tests.conftest import WebHarness


class _Route(Protocol):
    """What the walk reads of a route: FastAPI hands out `APIRoute`s and `APIWebSocketRoute`s or, for
    included routers, its own private route contexts, which all have these (a WebSocket route has no
    `methods`: read it with getattr where both kinds are walked)."""

    path: str
    dependant: Dependant
    methods: set[str]


def _declaration(route: _Route) -> Requirement | PublicMarker | None:
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, Requirement | PublicMarker):
            return dep.call
        stack.extend(dep.dependencies)
    return None


def _routes(app: FastAPI) -> list[_Route]:
    """Every API and WebSocket route, flattened through included routers.

    FastAPI >= 0.16x keeps included routers as lazy `_IncludedRouter` entries whose routes are
    reached through `effective_candidates()`; older versions copy `APIRoute`s into `app.routes`."""
    out: list[_Route] = []
    stack = list(app.routes)
    while stack:
        r = stack.pop()
        if hasattr(r, "effective_candidates"):
            stack.extend(r.effective_candidates())
        elif _is_route(r):
            out.append(r)
    return out


def _is_route(r: object) -> TypeGuard[_Route]:
    return getattr(r, "dependant", None) is not None and bool(getattr(r, "path", None))


def _is_ws(route: _Route) -> bool:
    original = getattr(route, "original_route", route)
    return isinstance(original, APIWebSocketRoute)


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_every_route_declares_its_need(web: WebHarness) -> None:
    undeclared = [
        f"{sorted(getattr(r, 'methods', None) or ['WS'])} {r.path}"
        for r in _routes(web.app)
        if _declaration(r) is None and not r.path.startswith(("/docs", "/redoc", "/openapi"))
    ]
    assert not undeclared, f"routes without require()/public(): {undeclared}"


def test_role_matrix(web: WebHarness) -> None:
    for role in BUILTIN_ROLES:
        web.user(f"user_{role}", [role])
    web.user("user_none", [])
    tokens = {role: web.token(f"user_{role}") for role in [*BUILTIN_ROLES, "none"]}
    perms = {role: set(p) for role, p in BUILTIN_ROLES.items()} | {"none": set()}
    checked = 0
    for route in _routes(web.app):
        decl = _declaration(route)
        if not isinstance(decl, Requirement) or not route.path.startswith("/api/") or _is_ws(route):
            continue
        for method in sorted(route.methods):
            path = _concrete(route.path)
            anon = web.client.request(method, path)
            assert anon.status_code == 401, f"anonymous {method} {path}: {anon.status_code}"
            for role, token in tokens.items():
                resp = web.client.request(method, path, headers={"Authorization": f"Bearer {token}"})
                allowed = not decl.permissions or bool(perms[role] & set(decl.permissions))
                if allowed:
                    assert resp.status_code not in (401, 403), f"{role} {method} {path}: {resp.status_code}"
                else:
                    assert resp.status_code == 403, f"{role} {method} {path}: {resp.status_code}"
                checked += 1
    assert checked > 20


def test_pages_redirect_to_login_when_signed_out(web: WebHarness) -> None:
    resp = web.client.get("/", follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"].startswith("/login")


@pytest.mark.parametrize("bad", ["Bearer nonsense", "Bearer ", "Basic abc"])
def test_bad_bearer_token_is_401(web: WebHarness, bad: str) -> None:
    assert web.client.get("/api/me", headers={"Authorization": bad}).status_code == 401
