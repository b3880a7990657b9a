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

One render is one PBX: the default gateway (`CALLCENTER_AMI_*`) or the gateway row named with
`gateway=`. Its RTP range comes from the tasks that dial through it (`capacity.Capacity`), and the
rendered folder is a complete `/etc/asterisk`: every `*.j2` in the templates folder is one file.
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
from callcenter.gateway_admin import gateway_secret
from callcenter.gateways.ami_calls import WANTED_EVENTS
from callcenter.gateways.ami_dialplan import CHANSPY_OPTIONS, DEFAULT_DIALPLAN, Dialplan
from callcenter.gateways.base import render_template
from callcenter.pbxconfig.capacity import Capacity, TaskLoad, default_originates_per_s, load_plan
from callcenter.validation import validate_extension, validate_number

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "sip-config" / "templates"
# Every template is one file of /etc/asterisk.
FILES = tuple(sorted(p.name.removesuffix(".j2") for p in TEMPLATES_DIR.glob("*.j2")))
SECRET_FILES = frozenset({"manager.conf", "pjsip.conf"})
# Beside the config: the RTP range for `docker compose --env-file` (its port mapping).
COMPOSE_ENV = "rtp.env"
COMPOSE_RTP_VAR = "ASTERISK_RTP_PORTS"
LANGUAGES = ("en", "zh")
# A customer parked in the dialplan that nobody redirects (the controller is down) hears the abandon
# message after this long and is hung up: well after the dialer's own 2 s.
FAILSAFE_WAIT_S = 6
FAILSAFE_SOUND = "abandon"
# Events the driver subscribes to and acts on (list replies such as CoreShowChannel bypass filters),
# and Shutdown (class system), which tells it to stop dialling while Asterisk restarts.
FILTERED_EVENTS = sorted((WANTED_EVENTS | {"Shutdown"}) - {"CoreShowChannel", "CoreShowChannelsComplete"})

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
    """What the database gives the renderer (or a test, directly): the agent phones, the gateway row
    the config is for (None: the default gateway from settings) and the tasks that dial through it."""

    agents: list[AgentEndpoint] = field(default_factory=list)
    gateway: Mapping[str, Any] | None = None  # GatewayRow-like mapping
    tasks: tuple[TaskLoad, ...] = ()

    def capacity(self) -> Capacity:
        rate = float(self.gateway["originates_per_s"]) if self.gateway else default_originates_per_s()
        name = str(self.gateway["name"]) if self.gateway else "default"
        return Capacity(name, rate, self.tasks, len(self.agents))


def agent_sip_password(settings: Settings, extension: str) -> str:
    """The SIP password of an agent's endpoint: HMAC of the extension under the secret key."""
    key = settings.secret_key.get_secret_value().encode()
    return hmac.new(key, f"sip-agent:{extension}".encode(), hashlib.sha256).hexdigest()[:24]


def load_rows(engine: Any, gateway: str | None = None) -> Rows:
    """Agents (people, not simulated ones), the gateway row named `gateway` (None: the default
    gateway) and the tasks that dial through it, from the database."""
    from sqlmodel import Session, col, select

    from callcenter.models import Agent, User

    with Session(engine) as session:
        agents = session.exec(
            select(Agent.extension, User.display_name, User.username)
            .join(User, col(User.id) == col(Agent.user_id))
            .where(col(Agent.simulated).is_(False))
            .order_by(col(Agent.extension))
        ).all()
        plan = load_plan(session, kind=GatewayKind.ASTERISK.value, gateway=gateway, phones=len(agents))
        return Rows(
            agents=[AgentEndpoint(ext, display or user) for ext, display, user in agents],
            gateway=plan.row,
            tasks=plan.capacity.tasks,
        )


def render(
    source: Any,
    out_dir: Path,
    settings: Settings,
    *,
    gateway: str | None = None,
    trunk: Trunk | None = None,
    ami_permit: Iterable[str] = ("127.0.0.1/255.255.255.255",),
    ami_bind: str = "127.0.0.1",
    sip_port: int = 5060,
    rtp_start: int = 10000,
    language: str = "en",
    caller_id: str = "",
    dialplan: Dialplan = DEFAULT_DIALPLAN,
    environ: Mapping[str, str] | None = None,
    templates_dir: Path = TEMPLATES_DIR,
) -> list[Path]:
    """Render every template into `out_dir` from `source` (an Engine, read for the gateway named
    `gateway`, or `Rows`) and write `rtp.env` for compose; returns the paths written. Raises
    `Invalid` naming the value that cannot go into a config file, or the tasks that do not fit."""
    rows = source if isinstance(source, Rows) else load_rows(source, gateway)
    context = build_context(
        rows,
        settings,
        trunk=trunk,
        ami_permit=ami_permit,
        ami_bind=ami_bind,
        sip_port=sip_port,
        rtp_start=rtp_start,
        language=language,
        caller_id=caller_id,
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
    for template in sorted(templates_dir.glob("*.j2")):
        name = template.name.removesuffix(".j2")
        text = env.get_template(template.name).render(**context)
        path = out_dir / name
        path.write_text(text)
        if name in SECRET_FILES:
            path.chmod(0o640)
        written.append(path)
    path = out_dir / COMPOSE_ENV
    path.write_text(f"{COMPOSE_RTP_VAR}={context['rtp_start']}-{context['rtp_end']}\n")
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
    rtp_start: int,
    language: str,
    caller_id: str,
    dialplan: Dialplan,
    environ: Mapping[str, str],
) -> dict[str, Any]:
    """The checked values the templates see."""
    row = rows.gateway
    if row is not None and row.get("kind") != GatewayKind.ASTERISK.value:
        raise Invalid(f"gateway {row.get('name')!r} is not an Asterisk gateway", field="gateway")
    dial_template = (row or {}).get("dial_template") or settings.ami_dial_template
    agent_template = (row or {}).get("agent_template") or settings.ami_agent_template

    for what, template in (("dial template", dial_template), ("agent template", agent_template)):
        if not template.upper().startswith("PJSIP/"):
            raise Invalid(
                f"{what} {template!r}: the rendered Asterisk configuration is chan_pjsip only. chan_sip "
                "is deprecated in Asterisk 20 and removed in 21, so it is not offered: use PJSIP/ dial "
                "strings (the defaults PJSIP/{number}@trunk and PJSIP/{extension})",
                field=what.replace(" ", "_"),
            )

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

    if row is not None:
        username = _name(row.get("username") or settings.ami_username, "AMI username")
        secret = gateway_secret(row, environ)
        if not secret:
            raise Invalid(
                f"gateway {row.get('name')!r}: its AMI secret is not set (secret_env "
                f"{row.get('secret_env') or '(none)'})",
                field="secret_env",
            )
    else:
        username = _name(settings.ami_username, "AMI username")
        secret = settings.ami_secret.get_secret_value()
    user = AmiUser(username, _secret(secret, f"AMI secret of {username}"))

    capacity = rows.capacity()
    capacity.check(settings.pbx_max_calls)
    rtp_first, rtp_last = capacity.rtp_range(rtp_start)
    if language not in LANGUAGES:
        raise Invalid(f"language must be one of {', '.join(LANGUAGES)}", field="language")
    if caller_id:
        validate_number(caller_id, field="caller_id")

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
        "ami_users": [user],
        "ami_port": int((row or {}).get("port") or settings.ami_port),
        "ami_bind": ami_bind,
        "permit": permit,
        "events": FILTERED_EVENTS,
        "spy_modes": [(dialplan.spy_exten(mode), options) for mode, options in CHANSPY_OPTIONS.items()],
        "trunk_dial": _dial(render_template(dial_template, number="${EXTEN}"), "dial template"),
        "dial_template": dial_template,
        "trunk": trunk_ctx,
        "sip_port": int(sip_port),
        "capacity": capacity,
        "rtp_start": rtp_first,
        "rtp_end": rtp_last,
        "max_files": max(8192, 2 * capacity.rtp_ports + 1024),
        "language": language,
        "caller_id": caller_id,
        "wait_s": FAILSAFE_WAIT_S,
        "failsafe_sound": FAILSAFE_SOUND,
        "agent_ring_s": 20,
        "manual_ring_s": 60,
    }


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
