"""The `callcenter` command: demo, serve, dialer, worker, db upgrade, user create, config renderers."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Annotated

import typer

from callcenter.config import Mode, Settings, SettingsError, load_settings

app = typer.Typer(help="Outbound call center controller.", no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
user_app = typer.Typer(help="User accounts.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")


def _add_config_renderers() -> None:
    from callcenter.fsconfig import app as fsconfig_app
    from callcenter.sipconfig import app as sipconfig_app

    app.add_typer(sipconfig_app, name="sip-config", help="Render the Asterisk configuration (sip-config/).")
    app.add_typer(
        fsconfig_app, name="freeswitch-config", help="Render the FreeSWITCH configuration (freeswitch/)."
    )


_add_config_renderers()

log = logging.getLogger("callcenter")


def _settings(**overrides: object) -> Settings:
    try:
        settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return settings


@contextmanager
def redis_for(settings: Settings) -> Iterator[Settings]:
    """Yield settings with a Redis URL: the configured one, or an embedded server started here."""
    if settings.redis_url:
        yield settings
        return
    from callcenter.redis_server import EmbeddedRedis

    with EmbeddedRedis(settings.data_dir / "redis") as server:
        log.info("embedded Redis on %s", server.url)
        yield settings.model_copy(update={"redis_url": server.url})


def child_env(settings: Settings) -> dict[str, str]:
    """Environment for child processes so they share our database, Redis and secret."""
    env = dict(os.environ)
    env.update(
        {
            "CALLCENTER_MODE": settings.mode.value,
            "CALLCENTER_DATABASE_URL": settings.effective_database_url,
            "CALLCENTER_REDIS_URL": settings.redis_url,
            "CALLCENTER_SECRET_KEY": settings.secret_key.get_secret_value(),
            "CALLCENTER_DATA_DIR": str(settings.data_dir),
            "CALLCENTER_LOG_LEVEL": settings.log_level,
            "CALLCENTER_GATEWAY": settings.gateway.value,
        }
    )
    return env


@contextmanager
def children(settings: Settings, commands: list[list[str]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [
        subprocess.Popen([sys.executable, "-m", "callcenter.cli", *cmd], env=child_env(settings))
        for cmd in commands
    ]
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def _serve_web(settings: Settings) -> None:
    import uvicorn

    from webui.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.web_host,
        port=settings.web_port,
        log_level=settings.log_level.lower(),
        ws="websockets-sansio",
        # Workstation and monitor messages are a few KB of JSON: compressing each costs more
        # latency and CPU than it saves on a LAN or any link an agent works over.
        ws_per_message_deflate=False,
    )


@app.command()
def demo(
    port: Annotated[int | None, typer.Option(help="web port (default 8035)")] = None,
    host: Annotated[str | None, typer.Option(help="web address (default 127.0.0.1)")] = None,
) -> None:
    """Migrate, seed demo data (users, agents, a simulated task) and run web, dialer and worker."""
    os.environ.setdefault("CALLCENTER_MODE", Mode.DEMO.value)
    settings = _settings(web_port=port, web_host=host)
    from callcenter.db import make_engine, upgrade
    from callcenter.seed import DEMO_LOGINS, seed_demo

    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    with ExitStack() as stack:
        settings = stack.enter_context(redis_for(settings))
        seed_demo(engine, settings)
        engine.dispose()
        stack.enter_context(children(settings, [["dialer"], ["worker"]]))
        url = f"http://{settings.web_host}:{settings.web_port}/"
        typer.echo("\n" + "=" * 60)
        typer.echo(f"Call center demo (simulated PBX) on {url}")
        for role, (user, password) in DEMO_LOGINS.items():
            typer.echo(f"  {role:<11} {user} / {password}")
        typer.echo("=" * 60 + "\n")
        _serve_web(settings)


@app.command()
def serve(
    port: Annotated[int | None, typer.Option(help="web port")] = None,
    host: Annotated[str | None, typer.Option(help="web address")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="also run the dialer and a worker as child processes")
    ] = False,
) -> None:
    """Run the web server (with --all: also the dialer and a worker)."""
    settings = _settings(web_port=port, web_host=host)
    with ExitStack() as stack:
        settings = stack.enter_context(redis_for(settings))
        if all_ or not os.environ.get("CALLCENTER_REDIS_URL"):
            # An embedded Redis is private to this process tree, so the dialer and worker must be ours.
            stack.enter_context(children(settings, [["dialer"], ["worker"]]))
        _serve_web(settings)


@app.command()
def dialer() -> None:
    """Run the dialer engine (drives the PBX for every running task)."""
    settings = _settings()
    from callcenter.runner import run_dialer

    with redis_for(settings) as s:
        run_dialer(s)


@app.command()
def worker(
    burst: Annotated[bool, typer.Option(help="exit when the queue is empty")] = False,
) -> None:
    """Run an rq worker for background jobs (list imports)."""
    settings = _settings()
    from callcenter.jobs import run_worker

    with redis_for(settings) as s:
        run_worker(s, burst=burst)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply database migrations."""
    settings = _settings()
    from callcenter.db import make_engine, upgrade
    from callcenter.seed import seed_base

    upgrade(settings.effective_database_url, revision)
    engine = make_engine(settings.effective_database_url)
    seed_base(engine)
    engine.dispose()
    typer.echo(f"database at {settings.effective_database_url.split('@')[-1]} is up to date")


@user_app.command("create")
def user_create(
    username: str,
    role: Annotated[list[str], typer.Option("--role", "-r", help="role name; repeat for several")] = [],  # noqa: B006
    password: Annotated[str | None, typer.Option(help="omit to be asked")] = None,
    display_name: str = "",
    extension: Annotated[str | None, typer.Option(help="SIP extension: makes the user an agent")] = None,
) -> None:
    """Create a user (roles: admin, supervisor, agent)."""
    settings = _settings()
    if password is None:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    from callcenter import accounts
    from callcenter.db import make_engine, session_scope
    from callcenter.errors import DomainError

    engine = make_engine(settings.effective_database_url)
    try:
        with session_scope(engine) as session:
            user = accounts.create_user(
                session,
                username=username,
                password=password,
                roles=role or ["agent"],
                display_name=display_name,
            )
            if extension:
                assert user.id is not None
                accounts.create_agent(session, user_id=user.id, extension=extension)
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    typer.echo(f"created user {username} with roles {', '.join(role or ['agent'])}")


@app.command("settings")
def show_settings() -> None:
    """Print every setting with its environment variable and default."""
    from callcenter.config import settings_table

    for name, default, desc in settings_table():
        typer.echo(f"{name:<34} {default:<28} {desc}")


if __name__ == "__main__":
    app()
