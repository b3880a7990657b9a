"""The `callcenter` command, and the composition root: the one module that imports every package
(core, web, CRM, chat) and starts the processes. Commands: demo, serve, dialer, worker, db upgrade,
user create, settings, sip-config render, freeswitch-config render."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated

import typer

from app.processes import ChildSpec, Signals, Supervisor, follow_parent
from callcenter.config import Mode, Settings, SettingsError, load_settings
from callcenter.errors import Invalid
from callcenter.pbxconfig.fsconfig import TEMPLATES_DIR as FS_TEMPLATES_DIR

app = typer.Typer(help="Outbound call center controller.", no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
user_app = typer.Typer(help="User accounts.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")


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


def supervisor(settings: Settings, commands: list[list[str]]) -> Supervisor:
    """The dialer and worker as supervised children sharing our database, Redis and secret."""
    env = child_env(settings)
    return Supervisor(
        [ChildSpec(cmd[0], [sys.executable, "-m", "app.cli", *cmd], env) for cmd in commands],
    )


def _serve_web(settings: Settings, signals: Signals, children: Supervisor | None) -> None:
    import uvicorn

    from webui.app import SERVER_OPTIONS, create_app

    class WebServer(uvicorn.Server):
        """uvicorn without its own signal handlers: they re-raise SIGTERM once the server has
        stopped, which killed the process before the children were stopped. `signals` stops it."""

        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    server = WebServer(
        uvicorn.Config(
            create_app(settings),
            **SERVER_OPTIONS,
            host=settings.web_host,
            port=settings.web_port,
            log_level=settings.log_level.lower(),
            ws="websockets-sansio",
            # Workstation and monitor messages are a few KB of JSON: compressing each costs more
            # latency and CPU than it saves on a LAN or any link an agent works over.
            ws_per_message_deflate=False,
        )
    )

    def stop(first: bool) -> None:
        if children is not None:
            children.begin_stop()  # at once, while the web server finishes its requests
        if first:
            server.should_exit = True
        else:
            server.force_exit = True

    with signals.stopping(stop):
        server.run()
    if not server.started and signals.received is None:
        raise typer.Exit(3)  # could not start (port in use ...): uvicorn has said why


def _run_all(
    settings: Settings, signals: Signals, *, with_children: bool, banner: Callable[[], None]
) -> None:
    """Web server, and (with_children) the dialer and a worker as supervised children, with the
    embedded Redis when no URL is set. Everything stops with the first SIGTERM / SIGINT / SIGHUP."""
    with ExitStack() as stack:
        settings = stack.enter_context(redis_for(settings))
        children = (
            stack.enter_context(supervisor(settings, [["dialer"], ["worker"]])) if with_children else None
        )
        banner()
        _serve_web(settings, signals, children)
    if signals.received is not None:
        log.info("stopped by %s", signals.received.name)


@app.command()
def demo(
    port: Annotated[int | None, typer.Option(help="web port (default 8035)")] = None,
    host: Annotated[str | None, typer.Option(help="web address (default 127.0.0.1)")] = None,
) -> None:
    """Migrate, seed demo data (users, agents, a simulated task) and run web, dialer and worker."""
    os.environ.setdefault("CALLCENTER_MODE", Mode.DEMO.value)
    settings = _settings(web_port=port, web_host=host)
    if settings.mode is Mode.PRODUCTION:
        # The demo seeds users whose passwords it prints: never on a production database.
        typer.echo(
            "error: `callcenter demo` refuses production mode (it creates users with published "
            "passwords); unset CALLCENTER_MODE or set it to demo, or run `callcenter serve`",
            err=True,
        )
        raise typer.Exit(2)
    from callcenter.db import make_engine, upgrade
    from callcenter.seed import DEMO_LOGINS, seed_demo

    with Signals() as signals:
        upgrade(settings.effective_database_url)
        engine = make_engine(settings.effective_database_url)
        with redis_for(settings) as with_redis:
            seed_demo(engine, with_redis)
            engine.dispose()

            def banner() -> None:
                url = f"http://{settings.web_host}:{settings.web_port}/"
                typer.echo("\n" + "=" * 60)
                typer.echo(f"Call center demo (simulated PBX) on {url}")
                for role, (user, password) in DEMO_LOGINS.items():
                    typer.echo(f"  {role:<11} {user} / {password}")
                typer.echo("=" * 60 + "\n")

            _run_all(with_redis, signals, with_children=True, banner=banner)


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
    # An embedded Redis is private to this process tree, so the dialer and worker must be ours.
    with_children = all_ or not settings.redis_url
    with Signals() as signals:
        _run_all(settings, signals, with_children=with_children, banner=lambda: None)


@app.command()
def dialer() -> None:
    """Run the dialer engine (drives the PBX for every running task)."""
    settings = _settings()
    follow_parent()
    from callcenter.engine.runner import run_dialer

    with redis_for(settings) as s:
        run_dialer(s)


@app.command()
def worker(
    burst: Annotated[bool, typer.Option(help="exit when the queue is empty")] = False,
    watch_s: Annotated[
        float, typer.Option(help="seconds between looks for stale imports (to restart them)")
    ] = 5.0,
) -> None:
    """Run an rq worker for background jobs (list imports); it restarts imports whose worker died."""
    settings = _settings()
    follow_parent()
    from callcenter.jobs import run_worker

    with redis_for(settings) as s:
        run_worker(s, burst=burst, watch_s=watch_s)


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


# --- `callcenter sip-config render` ------------------------------------------------------------

sip_app = typer.Typer(help="Asterisk configuration (sip-config/).", no_args_is_help=True)


@sip_app.callback()
def _sip_group() -> None:
    """Asterisk configuration (sip-config/): `render` writes it from the database and settings."""


@sip_app.command("render")
def sip_render(
    out: Annotated[Path, typer.Option(help="folder to write into (mounted as /etc/asterisk)")] = Path(
        "sip-config/rendered"
    ),
    gateway: Annotated[
        str | None, typer.Option(help="the gateway row to render for (default: the CALLCENTER_AMI_* one)")
    ] = None,
    trunk_host: Annotated[str | None, typer.Option(help="SIP provider host for the customer trunk")] = None,
    trunk_port: Annotated[int, typer.Option(help="SIP provider port")] = 5060,
    trunk_username: Annotated[str, typer.Option(help="SIP provider user (empty: no registration auth)")] = "",
    trunk_secret_env: Annotated[
        str, typer.Option(help="environment variable holding the SIP provider password")
    ] = "CALLCENTER_TRUNK_SECRET",
    ami_bind: Annotated[
        str, typer.Option(help="address AMI listens on (0.0.0.0 in a container, with --ami-permit)")
    ] = "127.0.0.1",
    ami_permit: Annotated[
        list[str], typer.Option(help="address/mask allowed to log in to AMI; repeat for several")
    ] = ["127.0.0.1/255.255.255.255"],  # noqa: B006
    sip_port: Annotated[int, typer.Option(help="SIP port of the agents' phones and the trunk")] = 5060,
    rtp_start: Annotated[int, typer.Option(help="first RTP port (sized from the tasks)")] = 10000,
    language: Annotated[str, typer.Option(help="channel language: en or zh")] = "en",
    caller_id: Annotated[str, typer.Option(help="caller ID the carrier gets for calls agents dial")] = "",
    show_passwords: Annotated[bool, typer.Option(help="print the agents' SIP passwords")] = False,
) -> None:
    """Render a complete /etc/asterisk (asterisk.conf, manager.conf, extensions.conf, pjsip.conf, rtp.conf
    and the small files Asterisk needs with them) from the database's agents, gateways and tasks."""
    from callcenter.db import make_engine
    from callcenter.pbxconfig.sipconfig import COMPOSE_ENV, Trunk, agent_sip_password, load_rows, render

    try:
        settings = load_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    trunk = None
    if trunk_host:
        password = os.environ.get(trunk_secret_env, "") if trunk_username else ""
        trunk = Trunk(trunk_host, trunk_port, trunk_username, password)
    engine = make_engine(settings.effective_database_url)
    try:
        rows = load_rows(engine, gateway)
        paths = render(
            rows,
            out,
            settings,
            trunk=trunk,
            ami_bind=ami_bind,
            ami_permit=ami_permit,
            sip_port=sip_port,
            rtp_start=rtp_start,
            language=language,
            caller_id=caller_id,
        )
    except Invalid as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    for path in paths:
        typer.echo(f"wrote {path}")
    capacity = rows.capacity()
    typer.echo(
        f"sized for {capacity.calls} calls at once ({len(capacity.tasks)} tasks, {capacity.phones} phones); "
        f"publish the RTP range with `docker compose --env-file .env --env-file {out / COMPOSE_ENV} ...`"
    )
    if show_passwords:
        for agent in rows.agents:
            typer.echo(
                f"agent {agent.extension}: SIP password {agent_sip_password(settings, agent.extension)}"
            )


# --- `callcenter freeswitch-config render` -----------------------------------------------------

fs_app = typer.Typer(help="FreeSWITCH configuration.", no_args_is_help=True)


@fs_app.callback()
def _fs_group() -> None:
    """FreeSWITCH configuration (`callcenter freeswitch-config render`)."""
    # A callback keeps `render` a subcommand even while it is the only one.


@fs_app.command("render")
def fs_render(
    output: Annotated[Path, typer.Option("--output", "-o", help="configuration directory to write")] = Path(
        "freeswitch/conf"
    ),
    gateway: Annotated[
        str | None, typer.Option(help="the gateway row to render for (default: the CALLCENTER_ESL_* one)")
    ] = None,
    domain: Annotated[str, typer.Option(help="SIP domain of the agents' phones")] = "callcenter.local",
    esl_listen_ip: Annotated[
        str, typer.Option(help="address the event socket binds (the controller's network)")
    ] = "127.0.0.1",
    esl_acl: Annotated[
        list[str], typer.Option(help="network allowed to use the event socket; repeat for several")
    ] = ["127.0.0.1/32"],  # noqa: B006
    sip_ip: Annotated[
        str, typer.Option(help="SIP/RTP address (default: FreeSWITCH's own)")
    ] = "$${local_ip_v4}",
    ext_ip: Annotated[str, typer.Option(help="public address behind NAT, if any")] = "",
    sip_port: Annotated[int, typer.Option(help="SIP port of the agents' phones (profile agents)")] = 5060,
    trunk_port: Annotated[int, typer.Option(help="SIP port facing the carrier (profile trunk)")] = 5080,
    trunk_proxy: Annotated[str, typer.Option(help="the carrier's SIP proxy, host[:port]")] = "127.0.0.1",
    trunk_username: Annotated[str, typer.Option(help="trunk username (if it registers)")] = "",
    trunk_password_env: Annotated[
        str, typer.Option(help="environment variable holding the trunk password (if it registers)")
    ] = "",
    rtp_start_port: Annotated[
        int, typer.Option(help="first RTP port (the range is sized from the tasks)")
    ] = 16384,
    amd_engine: Annotated[
        str, typer.Option(help="auto (avmd if a task asks for AMD), avmd, mod_amd (add-on) or none")
    ] = "auto",
    language: Annotated[str, typer.Option(help="language of the abandon message: en or zh")] = "en",
    caller_id: Annotated[str, typer.Option(help="caller ID for calls agents dial by hand")] = "",
    templates: Annotated[Path, typer.Option(help="template directory")] = FS_TEMPLATES_DIR,
    credentials: Annotated[
        Path | None, typer.Option(help="also write extension,password lines here (mode 600)")
    ] = None,
) -> None:
    """Render the FreeSWITCH configuration from settings, the agents in the database and the tasks
    that dial through the gateway (RTP range, sessions and sessions-per-second)."""
    from callcenter.gateway_admin import gateway_secret
    from callcenter.pbxconfig.fsconfig import (
        FsConfig,
        agents_from_database,
        plan_from_database,
        render,
        sized,
    )

    try:
        settings = load_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    trunk_password = os.environ.get(trunk_password_env, "") if trunk_password_env else ""
    try:
        agents = agents_from_database(settings.effective_database_url)
        plan = plan_from_database(settings.effective_database_url, gateway, len(agents))
        row = plan.row or {}
        if amd_engine == "auto":
            amd_engine = "avmd" if any(t.amd for t in plan.capacity.tasks) else "none"
        config = FsConfig(
            esl_password=gateway_secret(row) if plan.row else settings.esl_password.get_secret_value(),
            domain=domain,
            esl_listen_ip=esl_listen_ip,
            esl_port=int(row.get("port") or settings.esl_port),
            esl_acl=tuple(esl_acl),
            sip_ip=sip_ip,
            rtp_ip=sip_ip,
            ext_ip=ext_ip,
            agents_sip_port=sip_port,
            trunk_sip_port=trunk_port,
            rtp_start_port=rtp_start_port,
            trunk_proxy=trunk_proxy,
            trunk_register=bool(trunk_username and trunk_password),
            trunk_username=trunk_username,
            trunk_password=trunk_password,
            dial_template=row.get("dial_template") or settings.esl_dial_template,
            agent_template=row.get("agent_template") or settings.esl_agent_template,
            amd_engine=amd_engine,
            language=language,
            caller_id=caller_id,
        )
        config = sized(config, plan.capacity, max_calls=settings.pbx_max_calls)
        result = render(
            output,
            config=config,
            agents=agents,
            sip_secret=settings.secret_key.get_secret_value(),
            templates_dir=templates,
        )
    except Invalid as exc:
        typer.echo(f"error: {exc.field or 'value'}: {exc.message}", err=True)
        raise typer.Exit(2) from None
    if credentials is not None:
        credentials.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(credentials, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.writelines(f"{ext},{pw}\n" for ext, pw in result.credentials.items())
    typer.echo(f"wrote {len(result.files)} files to {output} ({len(agents)} agent phones)")
    typer.echo(
        f"sized for {plan.capacity.calls} calls at once: RTP {config.rtp_start_port}-{config.rtp_end_port}, "
        f"sessions-per-second {config.sessions_per_second} "
        f"({plan.capacity.originates_per_s:g} originates/s); AMD {config.amd_engine}"
    )


app.add_typer(sip_app, name="sip-config", help="Render the Asterisk configuration (sip-config/).")
app.add_typer(fs_app, name="freeswitch-config", help="Render the FreeSWITCH configuration (freeswitch/).")


if __name__ == "__main__":
    app()
