"""Render the Asterisk configuration the project ships (`sip-config/templates/*.j2`) from the database's
agents and gateways and from the settings: `callcenter sip-config render --out DIR`.

The dialplan's names (contexts, extensions, variables, UserEvents) come from the same
`ami_dialplan.Dialplan` object the Asterisk driver uses, and every dial string from the dial templates
in the settings (or the gateway row), so the dialplan names no channel driver. Every value written into
a file is checked first: a newline or a `;` (a comment in Asterisk's config syntax) in a name or a
secret could add lines of configuration.

Agents' SIP passwords are not stored anywhere: each is derived from the secret key and the extension
(`agent_sip_password`), so rendering twice gives the same files, and `--show-passwords` prints them for
provisioning the phones. Rotating the secret key rotates them all.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from callcenter.config import GatewayKind, Settings
from callcenter.errors import Invalid
from callcenter.gateways.ami_calls import WANTED_EVENTS
from callcenter.gateways.ami_dialplan import CHANSPY_OPTIONS, DEFAULT_DIALPLAN, Dialplan
from callcenter.gateways.base import render_template
from callcenter.validation import validate_extension

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "sip-config" / "templates"
FILES = (
    "manager.conf",
    "extensions.conf",
    "pjsip.conf",
    "modules.conf",
    "logger.conf",
    "rtp.conf",
    "amd.conf",
)
SECRET_FILES = frozenset({"manager.conf", "pjsip.conf"})
# Events the driver subscribes to and acts on (list replies such as CoreShowChannel bypass filters).
FILTERED_EVENTS = sorted(WANTED_EVENTS - {"CoreShowChannel", "CoreShowChannelsComplete"})

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SECRET = re.compile(r"[^\s;\\\x00-\x1f\x7f]{8,128}")
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]+\]")
_NET = re.compile(r"[0-9A-Fa-f:.]+(/[0-9A-Fa-f:.]+)?")
_DIAL = re.compile(r"[A-Za-z0-9_/@.:${}-]{1,255}")
_CALLER_NAME = re.compile(r"[^A-Za-z0-9 ._-]")


@dataclass(frozen=True)
class AgentEndpoint:
    extension: str
    name: str = ""


@dataclass(frozen=True)
class AmiUser:
    username: str
    secret: str


@dataclass(frozen=True)
class Trunk:
    """The SIP provider behind the endpoint the dial template names."""

    host: str
    port: int = 5060
    username: str = ""
    password: str = ""


@dataclass(frozen=True)
class Rows:
    """What the database gives the renderer (or a test, directly)."""

    agents: list[AgentEndpoint] = field(default_factory=list)
    gateways: list[Mapping[str, Any]] = field(default_factory=list)  # GatewayRow-like mappings


def agent_sip_password(settings: Settings, extension: str) -> str:
    """The SIP password of an agent's endpoint: HMAC of the extension under the secret key."""
    key = settings.secret_key.get_secret_value().encode()
    return hmac.new(key, f"sip-agent:{extension}".encode(), hashlib.sha256).hexdigest()[:24]


def load_rows(engine: Any) -> Rows:
    """Agents (people, not simulated ones) and gateways from the database."""
    from sqlmodel import Session, col, select

    from callcenter.models import Agent, GatewayRow, User

    with Session(engine) as session:
        agents = session.exec(
            select(Agent.extension, User.display_name, User.username)
            .join(User, col(User.id) == col(Agent.user_id))
            .where(col(Agent.simulated).is_(False))
            .order_by(col(Agent.extension))
        ).all()
        gateways = session.exec(select(GatewayRow).order_by(col(GatewayRow.id))).all()
        return Rows(
            agents=[AgentEndpoint(ext, display or user) for ext, display, user in agents],
            gateways=[g.model_dump() for g in gateways],
        )


def render(
    source: Any,
    out_dir: Path,
    settings: Settings,
    *,
    trunk: Trunk | None = None,
    ami_permit: Iterable[str] = ("127.0.0.1/255.255.255.255",),
    ami_bind: str = "0.0.0.0",
    sip_port: int = 5060,
    rtp_ports: tuple[int, int] = (10000, 10099),
    dialplan: Dialplan = DEFAULT_DIALPLAN,
    environ: Mapping[str, str] | None = None,
    templates_dir: Path = TEMPLATES_DIR,
) -> list[Path]:
    """Render every file of `FILES` into `out_dir` from `source` (an Engine or `Rows`); returns the
    paths written. Raises `Invalid` naming the value that cannot go into a config file."""
    rows = source if isinstance(source, Rows) else load_rows(source)
    context = build_context(
        rows,
        settings,
        trunk=trunk,
        ami_permit=ami_permit,
        ami_bind=ami_bind,
        sip_port=sip_port,
        rtp_ports=rtp_ports,
        dialplan=dialplan,
        environ=os.environ if environ is None else environ,
    )
    env = Environment(
        loader=FileSystemLoader(str(templates_dir)),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in FILES:
        text = env.get_template(f"{name}.j2").render(**context)
        path = out_dir / name
        path.write_text(text)
        if name in SECRET_FILES:
            path.chmod(0o640)
        written.append(path)
    return written


def build_context(
    rows: Rows,
    settings: Settings,
    *,
    trunk: Trunk | None,
    ami_permit: Iterable[str],
    ami_bind: str,
    sip_port: int,
    rtp_ports: tuple[int, int],
    dialplan: Dialplan,
    environ: Mapping[str, str],
) -> dict[str, Any]:
    """The checked values the templates see."""
    asterisk_rows = [
        g for g in rows.gateways if g.get("kind") == GatewayKind.ASTERISK.value and g.get("enabled", True)
    ]
    dial_template = next((g["dial_template"] for g in asterisk_rows if g.get("dial_template")), None)
    agent_template = next((g["agent_template"] for g in asterisk_rows if g.get("agent_template")), None)
    dial_template = dial_template or settings.ami_dial_template
    agent_template = agent_template or settings.ami_agent_template

    agents = []
    for agent in rows.agents:
        ext = validate_extension(agent.extension)
        agents.append(
            {
                "extension": ext,
                "dial": _dial(render_template(agent_template, extension=ext), "agent template"),
                "caller_name": _CALLER_NAME.sub("", agent.name)[:40].strip() or f"Agent {ext}",
                "password": agent_sip_password(settings, ext),
            }
        )

    users = [
        AmiUser(
            _name(g.get("username") or settings.ami_username, "AMI username"),
            _gateway_secret(g, settings, environ),
        )
        for g in asterisk_rows
    ] or [AmiUser(_name(settings.ami_username, "AMI username"), settings.ami_secret.get_secret_value())]
    for user in users:
        _secret(user.secret, f"AMI secret of {user.username}")

    trunk_name = _trunk_endpoint(dial_template)
    trunk_ctx = None
    if trunk is not None:
        if trunk_name is None:
            raise Invalid(
                f"dial template {dial_template!r} names no PJSIP endpoint for the trunk", field="trunk"
            )
        if not _HOST.fullmatch(trunk.host):
            raise Invalid(f"trunk host {trunk.host!r} is not a host name or address", field="trunk_host")
        trunk_ctx = {
            "name": trunk_name,
            "host": trunk.host,
            "port": int(trunk.port),
            "username": _name(trunk.username, "trunk username") if trunk.username else "",
            "password": _secret(trunk.password, "trunk password") if trunk.username else "",
        }
    permit = [str(n) for n in ami_permit]
    for net in permit:
        if not _NET.fullmatch(net):
            raise Invalid(f"AMI permit {net!r} is not an address/mask", field="ami_permit")
    if not _NET.fullmatch(ami_bind):
        raise Invalid(f"AMI bind address {ami_bind!r} is not an address", field="ami_bind")
    return {
        "banner": "Rendered by `callcenter sip-config render` from sip-config/templates/: do not edit.",
        "dp": dialplan,
        "v": {
            "call_id": f"${{{dialplan.call_id_var}}}",
            "sound": f"${{{dialplan.sound_var}}}",
            "spy_channel": f"${{{dialplan.spy_channel_var}}}",
        },
        "agents": agents,
        "ami_users": users,
        "ami_port": settings.ami_port,
        "ami_bind": ami_bind,
        "permit": permit,
        "events": FILTERED_EVENTS,
        "spy_modes": [(dialplan.spy_exten(mode), options) for mode, options in CHANSPY_OPTIONS.items()],
        "trunk_dial": _dial(render_template(dial_template, number="${EXTEN}"), "dial template"),
        "dial_template": dial_template,
        "trunk": trunk_ctx,
        "pjsip": agent_template.upper().startswith("PJSIP/"),
        "sip_port": int(sip_port),
        "rtp_start": int(rtp_ports[0]),
        "rtp_end": int(rtp_ports[1]),
        "wait_s": 60,
        "agent_ring_s": 20,
        "manual_ring_s": 60,
    }


def _gateway_secret(row: Mapping[str, Any], settings: Settings, environ: Mapping[str, str]) -> str:
    name = row.get("secret_env") or ""
    if not name:
        return settings.ami_secret.get_secret_value()
    if name not in environ:
        raise Invalid(f"gateway {row.get('name')!r}: environment variable {name} (its AMI secret) is not set")
    return environ[name]


def _trunk_endpoint(dial_template: str) -> str | None:
    m = re.fullmatch(r"PJSIP/\{number\}@([A-Za-z0-9_.-]+)", dial_template)
    return m.group(1) if m else None


def _name(value: str, what: str) -> str:
    if not _NAME.fullmatch(value or ""):
        raise Invalid(f"{what} {value!r} must be 1-64 letters, digits, '.', '_' or '-'", field=what)
    return value


def _secret(value: str, what: str) -> str:
    if not _SECRET.fullmatch(value or ""):
        raise Invalid(f"{what} must be 8-128 characters without spaces, ';' or '\\'", field=what)
    return value


def _dial(value: str, what: str) -> str:
    if not _DIAL.fullmatch(value):
        raise Invalid(f"{what} renders to {value!r}, which a dialplan cannot carry", field=what)
    return value
