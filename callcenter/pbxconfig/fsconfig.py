"""The FreeSWITCH configuration the project ships, rendered from `freeswitch/templates/` (Jinja2).

`render()` writes a complete FreeSWITCH 1.10 configuration directory (mount it as /etc/freeswitch):
the event socket bound to the controller's network with the password from settings and an ACL, two
SIP profiles (agent phones; the customer trunk), the dialplan contexts the FreeSWITCH driver relies on
(named from the driver's own defaults, so the two cannot drift), and a directory with one user per
agent in the database. The command is
`callcenter freeswitch-config render` (app/cli.py).

SIP passwords are not stored in the database: each agent's password is derived from the controller's
secret key and the extension (HMAC-SHA256), the directory holds only its digest hash (`a1-hash`), and
`--credentials FILE` writes the passwords for provisioning the phones.

One render is one PBX: the default gateway (`CALLCENTER_ESL_*`) or a gateway row. `sized()` takes
the RTP range, max-sessions and sessions-per-second from the tasks that dial through it and the
dialer's originate rate (`capacity.Capacity`), the same figures the Asterisk renderer uses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from callcenter.config import SAMPLE_SECRETS
from callcenter.errors import Invalid
from callcenter.gateways.esl_calls import AGENT_FAILED_SUBCLASS, ANSWERED_SUBCLASS, MANUAL_SUBCLASS
from callcenter.gateways.freeswitch import (
    DEFAULT_ABANDON_PREFIX,
    DEFAULT_AGENT_PREFIX,
    DEFAULT_AMD_EXTENSION,
    DEFAULT_CONTEXT,
    DEFAULT_WAIT_EXTENSION,
)
from callcenter.pbxconfig.capacity import Capacity, GatewayPlan, load_plan
from callcenter.validation import validate_extension, validate_number


def _find_templates() -> Path:
    """freeswitch/templates of the source tree this module runs from, else of the working directory
    (an installed package has no source tree; `--templates` names any other place)."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        candidate = root / "freeswitch" / "templates"
        if candidate.is_dir():
            return candidate
    return Path(__file__).resolve().parents[2] / "freeswitch" / "templates"


TEMPLATES_DIR = _find_templates()
AMD_ENGINES = ("avmd", "mod_amd", "none")
LANGUAGES = ("en", "zh")
# Beside the config: the RTP range for `docker compose --env-file` (its port mapping).
COMPOSE_ENV = "rtp.env"
COMPOSE_RTP_VAR = "FREESWITCH_RTP_PORTS"
# A parked customer nobody transfers (the controller is down) hears the abandon message after this
# long and is hung up: well after the dialer's own 2 s. The same on Asterisk (sipconfig).
FAILSAFE_WAIT_MS = 6000
FAILSAFE_SOUND = "abandon"
# FreeSWITCH's own well-known default; as bad as an empty password.
_WEAK_PASSWORDS = SAMPLE_SECRETS | {"ClueCon", "cluecon"}
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_PROXY = re.compile(r"[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?")
_FS_VAR = re.compile(r"\$\$\{[a-z_0-9]+\}")
_SAFE_TEXT = re.compile(r"[^\x00-\x1f\x7f<>&\"',{}\[\]]{0,64}")
_SOUNDS = re.compile(r"(\$\$\{[a-z_]+\})?[A-Za-z0-9_/.-]{0,200}")
_LOG_LEVELS = ("debug", "info", "notice", "warning", "err", "crit", "alert")


@dataclass(frozen=True)
class AgentUser:
    """One directory user: an agent's SIP extension and the name shown to whoever they call."""

    extension: str
    name: str = ""

    def __post_init__(self) -> None:
        validate_extension(self.extension)
        if not _SAFE_TEXT.fullmatch(self.name):
            raise Invalid(f"agent name {self.name!r} has characters a directory cannot hold", field="name")


@dataclass(frozen=True)
class FsConfig:
    """Everything the templates need; validated on construction (values end up in XML and dialplans)."""

    esl_password: str
    domain: str = "callcenter.local"
    esl_listen_ip: str = "127.0.0.1"
    esl_port: int = 8021
    esl_acl: tuple[str, ...] = ("127.0.0.1/32",)
    sip_ip: str = "$${local_ip_v4}"
    rtp_ip: str = "$${local_ip_v4}"
    ext_ip: str = ""
    agents_sip_port: int = 5060
    trunk_sip_port: int = 5080
    trunk_proxy: str = "127.0.0.1"
    trunk_register: bool = False
    trunk_username: str = ""
    trunk_password: str = ""
    dial_template: str = "sofia/gateway/trunk/{number}"
    agent_template: str = "user/{extension}"
    context: str = DEFAULT_CONTEXT
    wait: str = DEFAULT_WAIT_EXTENSION
    amd_wait: str = DEFAULT_AMD_EXTENSION
    agent_prefix: str = DEFAULT_AGENT_PREFIX
    abandon_prefix: str = DEFAULT_ABANDON_PREFIX
    agents_context: str = "agents"
    amd_engine: str = "none"
    amd_listen_ms: int = 3000
    agent_ring_timeout_s: int = 20
    sounds_dir: str = "$${sounds_dir}/callcenter"
    language: str = "en"
    failsafe_wait_ms: int = FAILSAFE_WAIT_MS
    caller_id: str = ""
    codecs: str = "PCMU,PCMA"
    rtp_start_port: int = 16384
    rtp_end_port: int = 0  # 0: room for 100 calls above rtp_start_port (`sized` sets the real one)
    max_sessions: int = 200
    sessions_per_second: int = 31
    log_level: str = "info"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.esl_password in _WEAK_PASSWORDS or not _SAFE_TEXT.fullmatch(self.esl_password):
            raise Invalid(
                "the event socket password (CALLCENTER_ESL_PASSWORD) must be set, not a sample value, "
                "and free of control characters, quotes, < > & , { } [ ]",
                field="esl_password",
            )
        if not _HOST.fullmatch(self.domain):
            raise Invalid(f"domain {self.domain!r} is not a host name", field="domain")
        for name in ("esl_listen_ip", "sip_ip", "rtp_ip", "ext_ip"):
            value = getattr(self, name)
            if (name == "ext_ip" and not value) or _FS_VAR.fullmatch(value):
                continue
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise Invalid(f"{name} {value!r} is not an IP address", field=name) from None
        if not self.esl_acl:
            raise Invalid("the event socket ACL needs at least one network", field="esl_acl")
        for cidr in self.esl_acl:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise Invalid(f"esl_acl entry {cidr!r} is not a network", field="esl_acl") from None
        if not self.rtp_end_port:
            object.__setattr__(self, "rtp_end_port", self.rtp_start_port + 399)
        for name in ("esl_port", "agents_sip_port", "trunk_sip_port", "rtp_start_port", "rtp_end_port"):
            if not 1 <= getattr(self, name) <= 65535:
                raise Invalid(f"{name} must be a port number", field=name)
        if self.rtp_start_port >= self.rtp_end_port:
            raise Invalid("rtp_start_port must be below rtp_end_port", field="rtp_start_port")
        if not _PROXY.fullmatch(self.trunk_proxy):
            raise Invalid(f"trunk_proxy {self.trunk_proxy!r} must be host[:port]", field="trunk_proxy")
        for name in ("trunk_username", "trunk_password"):
            if not _SAFE_TEXT.fullmatch(getattr(self, name)):
                raise Invalid(f"{name} has characters a SIP profile cannot hold", field=name)
        if self.trunk_register and not (self.trunk_username and self.trunk_password):
            raise Invalid("a registering trunk needs a username and a password", field="trunk_register")
        for name in ("dial_template", "agent_template"):
            value = getattr(self, name)
            placeholder = "{number}" if name == "dial_template" else "{extension}"
            if value.count(placeholder) != 1 or re.search(
                r"[\s{}\[\],'\"<>&]", value.replace(placeholder, "")
            ):
                raise Invalid(f"{name} must be a plain dial string with one {placeholder}", field=name)
        for name in ("context", "agents_context"):
            validate_extension(getattr(self, name).replace("-", "_"), field=name)
        for name in ("wait", "amd_wait", "agent_prefix", "abandon_prefix"):
            validate_extension(getattr(self, name), field=name)
        if self.amd_engine not in AMD_ENGINES:
            raise Invalid(f"amd_engine must be one of {', '.join(AMD_ENGINES)}", field="amd_engine")
        if not 500 <= self.amd_listen_ms <= 30000:
            raise Invalid("amd_listen_ms must be 500-30000", field="amd_listen_ms")
        if not 5 <= self.agent_ring_timeout_s <= 120:
            raise Invalid("agent_ring_timeout_s must be 5-120", field="agent_ring_timeout_s")
        if not _SOUNDS.fullmatch(self.sounds_dir) or ".." in self.sounds_dir:
            raise Invalid(f"sounds_dir {self.sounds_dir!r} is not a plain path", field="sounds_dir")
        if self.language not in LANGUAGES:
            raise Invalid(f"language must be one of {', '.join(LANGUAGES)}", field="language")
        if not 2000 <= self.failsafe_wait_ms <= 60000:
            raise Invalid("failsafe_wait_ms must be 2000-60000", field="failsafe_wait_ms")
        if self.caller_id:
            validate_number(self.caller_id, field="caller_id")
        if not re.fullmatch(r"[A-Z0-9.]+(,[A-Z0-9.]+)*", self.codecs):
            raise Invalid("codecs must be a comma-separated list such as PCMU,PCMA", field="codecs")
        if self.log_level not in _LOG_LEVELS:
            raise Invalid(f"log_level must be one of {', '.join(_LOG_LEVELS)}", field="log_level")

    @property
    def amd_verdict(self) -> str:
        """The dialplan extension that turns the detector's variables into the verdict event."""
        return f"{self.amd_wait}_verdict"


def sized(config: FsConfig, capacity: Capacity, *, max_calls: int) -> FsConfig:
    """`config` with the RTP range (from its start port), max-sessions and sessions-per-second of
    `capacity`; refuses a task set over `max_calls`, naming the tasks."""
    capacity.check(max_calls)
    _, end = capacity.rtp_range(config.rtp_start_port)
    return replace(
        config,
        rtp_end_port=end,
        max_sessions=capacity.sessions,
        sessions_per_second=capacity.sessions_per_second,
    )


@dataclass(frozen=True)
class Rendered:
    files: list[Path]
    credentials: dict[str, str]  # extension -> SIP password (for provisioning phones)


def sip_password(secret: str, extension: str) -> str:
    """The SIP password of an agent's extension: stable for one secret, 20 URL-safe characters."""
    digest = hmac.new(secret.encode(), b"freeswitch-sip:" + extension.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:15]).decode()


def a1_hash(user: str, realm: str, password: str) -> str:
    """HTTP digest HA1 = md5(user:realm:password), what FreeSWITCH's `a1-hash` param holds."""
    return hashlib.md5(f"{user}:{realm}:{password}".encode(), usedforsecurity=False).hexdigest()


def _environment(templates_dir: Path) -> Environment:
    return Environment(
        loader=FileSystemLoader(str(templates_dir)),
        autoescape=True,  # every value lands in an XML attribute
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def render(
    output_dir: Path,
    *,
    config: FsConfig,
    agents: Sequence[AgentUser],
    sip_secret: str,
    templates_dir: Path = TEMPLATES_DIR,
) -> Rendered:
    """Render every template under `templates_dir` into `output_dir` (same tree, `.j2` dropped);
    templates that render to nothing (an unused AMD engine's config) are not written."""
    if not sip_secret:
        raise Invalid("a secret is needed to derive the agents' SIP passwords", field="sip_secret")
    if not (templates_dir / "freeswitch.xml.j2").is_file():
        raise Invalid(f"no FreeSWITCH templates in {templates_dir} (see --templates)", field="templates")
    seen: set[str] = set()
    users = []
    credentials: dict[str, str] = {}
    for agent in sorted(agents, key=lambda a: a.extension):
        if agent.extension in seen:
            raise Invalid(f"extension {agent.extension} is listed twice", field="agents")
        seen.add(agent.extension)
        password = sip_password(sip_secret, agent.extension)
        credentials[agent.extension] = password
        users.append(
            {
                "extension": agent.extension,
                "name": agent.name,
                "a1_hash": a1_hash(agent.extension, config.domain, password),
            }
        )
    values = {
        **{f: getattr(config, f) for f in config.__dataclass_fields__ if f != "extra"},
        **config.extra,
        "amd_verdict": config.amd_verdict,
        "failsafe_sound": FAILSAFE_SOUND,
        "answered_subclass": ANSWERED_SUBCLASS,
        "manual_subclass": MANUAL_SUBCLASS,
        "agent_failed_subclass": AGENT_FAILED_SUBCLASS,
        "agent_dial": config.agent_template.format(extension="$1"),
        "customer_dial": config.dial_template.format(number="$1"),
        "agents": users,
    }
    env = _environment(templates_dir)
    written: list[Path] = []
    for template in sorted(templates_dir.rglob("*.j2")):
        relative = template.relative_to(templates_dir)
        text = env.get_template(relative.as_posix()).render(**values)
        if not text.strip():
            continue
        target = output_dir / relative.with_suffix("")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    target = output_dir / COMPOSE_ENV
    target.write_text(f"{COMPOSE_RTP_VAR}={config.rtp_start_port}-{config.rtp_end_port}\n", encoding="utf-8")
    written.append(target)
    return Rendered(written, credentials)


def plan_from_database(database_url: str, gateway: str | None, phones: int) -> GatewayPlan:
    """The FreeSWITCH gateway row named `gateway` (None: the default one) and its tasks."""
    from sqlmodel import Session

    from callcenter.db import make_engine

    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            return load_plan(session, kind="freeswitch", gateway=gateway, phones=phones)
    finally:
        engine.dispose()


def agents_from_database(database_url: str) -> list[AgentUser]:
    """Every agent with a SIP extension (simulated agents have no phone)."""
    from sqlmodel import Session, col, select

    from callcenter.db import make_engine
    from callcenter.models import Agent, User

    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            rows = session.exec(
                select(Agent.extension, User.display_name, User.username)
                .join(User, col(User.id) == col(Agent.user_id))
                .where(col(Agent.simulated).is_(False), col(User.is_active).is_(True))
            ).all()
    finally:
        engine.dispose()
    users = []
    for extension, display_name, username in rows:
        name = display_name or username
        users.append(AgentUser(extension, name if _SAFE_TEXT.fullmatch(name) else ""))
    return users
