"""The FastAPI application factory. Routes stay thin: validate, call one service function, return."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import exc as sa_exc
from starlette.middleware.sessions import SessionMiddleware

from callcenter.config import Settings
from callcenter.errors import DomainError
from callcenter.http import AppContext, LoginRequired
from webui import contacts
from webui.security import RequestGuard, SecurityHeaders

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
# How uvicorn must run the app (`callcenter serve`, the test servers). Not `proxy_headers`: uvicorn
# would then take the client's address from X-Forwarded-For of any local peer; the app reads that
# header itself, from CALLCENTER_TRUSTED_PROXIES only (`webui.auth.client_address`).
SERVER_OPTIONS: dict[str, Any] = {"proxy_headers": False, "server_header": False}


def create_app(settings: Settings, *, ctx: AppContext | None = None) -> FastAPI:
    """Build the app. With `ctx` (tests), its engine and Redis are used as they are; without, the
    lifespan creates them from settings and disposes of them at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned: list[Any] = []
        if ctx is None:
            import redis
            import redis.asyncio as aredis

            from callcenter.db import make_engine

            if not settings.redis_url:
                raise RuntimeError(
                    "the web app needs CALLCENTER_REDIS_URL (the CLI starts an embedded Redis)"
                )
            engine = make_engine(settings.effective_database_url)
            app.state.ctx = AppContext(
                settings=settings,
                engine=engine,
                redis=redis.Redis.from_url(settings.redis_url, decode_responses=True),
                aredis=aredis.Redis.from_url(settings.redis_url, decode_responses=True),
            )
            owned.append(app.state.ctx)
        else:
            app.state.ctx = ctx
        contacts.install(app.state.ctx)  # chats make CRM contacts visible to their agents
        for hook in app.state.startup_hooks:
            await hook(app)
        if ctx is None:
            # A server process: move the start-up heap (modules, metadata, compiled statements) out of
            # the cyclic GC, so a full collection no longer walks it and pauses the push path.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            for hook in reversed(app.state.shutdown_hooks):
                await hook(app)
            for c in owned:
                c.engine.dispose()
                c.redis.close()
                if c.aredis is not None:
                    await c.aredis.aclose()

    # The API's description is served by routes that need a signed-in user (`_api_docs`).
    app = FastAPI(
        title="Call Center",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.startup_hooks = []
    app.state.shutdown_hooks = []
    # Starlette runs the middleware added last first: the headers wrap everything (the guard's
    # refusals too), the session is decoded before the guard reads its CSRF token.
    app.add_middleware(RequestGuard, settings=settings)
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key.get_secret_value(),
        session_cookie="cc_session",
        max_age=settings.session_max_age_s,
        same_site="lax",
        https_only=settings.secure_cookies,
    )
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    _api_docs(app)

    @app.exception_handler(DomainError)
    async def _domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        body: dict[str, Any] = {"detail": exc.message}
        if exc.field:
            body["field"] = exc.field
        return JSONResponse(body, status_code=exc.status)

    @app.exception_handler(OverflowError)
    @app.exception_handler(sa_exc.DataError)
    async def _out_of_range(request: Request, exc: Exception) -> JSONResponse:
        # An id past 2^63 (SQLite cannot bind it, PostgreSQL's bigint cannot hold it) or a NUL in
        # text (PostgreSQL refuses it): the request is wrong, not the server.
        log.info("%s %s: value refused by the database: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "a value is out of range or holds a character not allowed"}, 422)

    @app.exception_handler(sa_exc.OperationalError)
    @app.exception_handler(sa_exc.InterfaceError)
    async def _database_down(request: Request, exc: Exception) -> Any:
        # The database went away (a restart, a network cut): say so, and the next request retries
        # (pool_pre_ping gives it a fresh connection once the server is back).
        log.warning("database unavailable for %s %s: %s", request.method, request.url.path, exc)
        detail = "the database is unavailable; try again in a moment"
        headers = {"Retry-After": "5"}
        if not request.url.path.startswith("/api/"):  # no template: rendering one reads the database
            page = f"<!doctype html><title>Unavailable</title><p>{detail}</p>"
            return HTMLResponse(page, status_code=503, headers=headers)
        return JSONResponse({"detail": detail}, status_code=503, headers=headers)

    @app.exception_handler(LoginRequired)
    async def _login_required(_request: Request, exc: LoginRequired) -> RedirectResponse:
        return RedirectResponse(f"/login?next={exc.next_url}", status_code=303)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Any:
        if exc.status_code == 403 and not request.url.path.startswith("/api/"):
            from webui.templating import render

            return render(request, "error.html", {"message": exc.detail}, status_code=403)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    from chat import routes as chat_routes
    from crm import routes as crm_routes
    from webui import ws
    from webui.routes import (
        admin,
        admin_pages,
        agents,
        drafts,
        me,
        pages,
        reasons,
        session,
        task_pages,
        tasks,
        workstation,
    )

    app.include_router(session.router)
    app.include_router(pages.router)
    app.include_router(admin.router)
    app.include_router(admin_pages.router)
    app.include_router(agents.router)
    app.include_router(tasks.router)
    app.include_router(task_pages.router)
    app.include_router(workstation.router)
    app.include_router(drafts.router)
    app.include_router(reasons.router)
    app.include_router(me.router)
    app.include_router(crm_routes.router)
    app.include_router(chat_routes.router)
    ws.install(app)
    return app


def _api_docs(app: FastAPI) -> None:
    """/openapi.json, /docs and /redoc for signed-in users only: the API's map is no map for
    strangers."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

    from callcenter.http import require

    signed_in = [require()]

    @app.get("/openapi.json", include_in_schema=False, dependencies=signed_in)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=signed_in)
    def docs() -> Any:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - API")

    @app.get("/redoc", include_in_schema=False, dependencies=signed_in)
    def redoc() -> Any:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - API")
