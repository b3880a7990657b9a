"""Gateways (the PBXs the dialer drives) as an admin manages them: every field that reaches a PBX
checked, the one accessor for their secrets, a connection test, and the latest status the dialer
published.

Secrets. A gateway row never holds its secret: `secret_env` names an environment variable, and only
variables named `CALLCENTER_GATEWAY_SECRET_<NAME>` may be named. An admin could otherwise point a
gateway at `CALLCENTER_SECRET_KEY` (or the database URL) and a host of their choosing, and the dialer
or the connection test would send that value to them in its login. `gateway_secret` is the only
place a row's secret is read: the dialer (`engine.runner.settings_for_row`), both config renderers
and the connection test all go through it. The value is never shown back, only whether it is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from callcenter.config import GatewayKind, Settings
from callcenter.errors import Invalid

SECRET_ENV_PREFIX = "CALLCENTER_GATEWAY_SECRET_"
_SECRET_ENV = re.compile(re.escape(SECRET_ENV_PREFIX) + r"[A-Z0-9_]{1,38}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# What a dial template may hold around its placeholder: a channel technology, an endpoint or gateway
# name, a host and port. No whitespace, comma, quote, bracket, brace, '|', '&', ';' or '$': each of
# them separates arguments or applications, or expands a variable, in a dialplan or an originate.
_DIAL_TEXT = re.compile(r"[A-Za-z0-9_/@.:+-]*")
PLACEHOLDERS = {"dial_template": "{number}", "agent_template": "{extension}"}
DEFAULT_PORTS = {GatewayKind.ASTERISK.value: 5038, GatewayKind.FREESWITCH.value: 8021}
MAX_ORIGINATES_PER_S = 1000.0


def _field(row: Any, name: str) -> Any:
    return row.get(name) if isinstance(row, Mapping) else getattr(row, name, None)


def check_secret_env(name: str) -> str:
    """`name` if it may hold a gateway secret (empty: none); raises Invalid for any other variable."""
    if name and not _SECRET_ENV.fullmatch(name):
        raise Invalid(
            f"secret_env must name a variable {SECRET_ENV_PREFIX}<NAME> (capitals, digits, '_'), "
            f"not {name!r}: gateways may only read their own secrets",
            field="secret_env",
        )
    return name


def gateway_secret(row: Any, environ: Mapping[str, str] | None = None) -> str:
    """The secret of a gateway row (a GatewayRow or a mapping of its fields): the value of the
    `CALLCENTER_GATEWAY_SECRET_*` variable it names, "" when it names none or the variable is unset.
    Never another variable, never the default gateway's CALLCENTER_AMI_SECRET / ESL_PASSWORD."""
    name = check_secret_env(str(_field(row, "secret_env") or ""))
    if not name:
        return ""
    return (os.environ if environ is None else environ).get(name, "")


def secret_is_set(row: Any, environ: Mapping[str, str] | None = None) -> bool:
    try:
        return bool(gateway_secret(row, environ))
    except Invalid:
        return False


def check_host(host: str, *, field: str = "host") -> str:
    """A host name or an IP address, nothing that could carry a second value."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if len(host) > 253 or not _HOSTNAME.fullmatch(host):
        raise Invalid(f"{field} {host!r} is not a host name or an IP address", field=field)
    return host


def check_template(value: str, field: str) -> str:
    """A dial template with exactly one placeholder and only dial-string characters around it."""
    placeholder = PLACEHOLDERS[field]
    rest = value.replace(placeholder, "")
    if value.count(placeholder) != 1 or not _DIAL_TEXT.fullmatch(rest):
        raise Invalid(
            f"{field} must hold {placeholder} once and otherwise only letters, digits and _ / @ . : + -"
            f" (got {value!r})",
            field=field,
        )
    return value


def check_fields(fields: Mapping[str, Any]) -> None:
    """Check every field of a gateway that reaches a PBX; raises Invalid naming the first bad one.
    `fields` holds the row's values after a create or an update (all of them)."""
    kind = fields["kind"]
    if not _NAME.fullmatch(fields["name"]):
        raise Invalid("name must be 1-64 letters, digits, '.', '_' or '-'", field="name")
    if kind == GatewayKind.SIMULATED.value:
        return
    if not fields.get("host"):
        raise Invalid(f"a {kind} gateway needs a host", field="host")
    check_host(fields["host"])
    if not 0 <= int(fields.get("port") or 0) <= 65535:
        raise Invalid("port must be 1-65535 (0: the default for the kind)", field="port")
    username = fields.get("username") or ""
    if kind == GatewayKind.FREESWITCH.value and username:
        raise Invalid("a FreeSWITCH event socket has no user name: leave it empty", field="username")
    if username and not _NAME.fullmatch(username):
        raise Invalid("username must be 1-64 letters, digits, '.', '_' or '-'", field="username")
    check_secret_env(fields.get("secret_env") or "")
    for name in PLACEHOLDERS:
        if fields.get(name):
            check_template(fields[name], name)
    rate = float(fields.get("originates_per_s") or 0)
    if not 0 < rate <= MAX_ORIGINATES_PER_S:
        raise Invalid(
            f"originates_per_s must be above 0 and at most {MAX_ORIGINATES_PER_S:g}", field="originates_per_s"
        )


# --- connection test ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str


async def probe(row: Any, settings: Settings, *, timeout_s: float = 3.0) -> ProbeResult:
    """Log in to the gateway's AMI or authenticate to its event socket, with a short timeout, and
    say what happened. Nothing else is sent: no event subscription, no call."""
    kind = _field(row, "kind")
    host = str(_field(row, "host") or "")
    port = int(_field(row, "port") or 0) or DEFAULT_PORTS.get(kind, 0)
    try:
        secret = gateway_secret(row)
    except Invalid as exc:
        return ProbeResult(False, exc.message)
    if kind == GatewayKind.ASTERISK.value:
        username = str(_field(row, "username") or "") or settings.ami_username
        return await _probe_ami(host, port, username, secret, timeout_s)
    if kind == GatewayKind.FREESWITCH.value:
        return await _probe_esl(host, port, secret, timeout_s)
    return ProbeResult(True, "the simulated PBX needs no connection")


async def _probe_ami(host: str, port: int, username: str, secret: str, timeout_s: float) -> ProbeResult:
    from callcenter.gateways.ami_wire import ActionFailed, AmiProtocol
    from callcenter.gateways.base import CommandTimeout, GatewayError

    where = f"{host}:{port}"
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            _, proto = await loop.create_connection(
                lambda: AmiProtocol(on_message=lambda _m: None, wanted_events=frozenset()), host, port
            )
    except TimeoutError:
        return ProbeResult(False, f"no answer from {where} within {timeout_s:g} s")
    except OSError as exc:
        return ProbeResult(False, f"cannot reach {where}: {exc.strerror or exc}")
    try:
        async with asyncio.timeout(timeout_s):
            banner = await proto.banner
            if not banner.startswith("Asterisk Call Manager/"):
                return ProbeResult(False, f"{where} is not an Asterisk AMI (it said {banner[:60]!r})")
            if not secret:
                return ProbeResult(False, f"{where} answers ({banner}), but the gateway has no secret set")
            await proto.request(
                "Login", [("Username", username), ("Secret", secret), ("Events", "off")], timeout=timeout_s
            )
            with contextlib.suppress(Exception):
                await proto.request("Logoff", [], timeout=timeout_s)
            return ProbeResult(True, f"logged in to {where} as {username!r} ({banner})")
    except ActionFailed as exc:
        return ProbeResult(False, f"{where} refused the login as {username!r}: {exc.reason}")
    except (TimeoutError, CommandTimeout):
        return ProbeResult(False, f"connected to {where}, but it did not answer within {timeout_s:g} s")
    except GatewayError as exc:  # the socket closed under us
        return ProbeResult(False, f"{where}: {exc}")
    finally:
        proto.abort("connection test done")


async def _probe_esl(host: str, port: int, password: str, timeout_s: float) -> ProbeResult:
    from callcenter.gateways.esl_wire import EslAuthError, open_connection

    where = f"{host}:{port}"
    if not password:
        return ProbeResult(False, "the gateway has no secret set (the event socket password)")
    try:
        conn = await open_connection(host, port, password, timeout=timeout_s, on_event=lambda _e: None)
    except EslAuthError:
        return ProbeResult(False, f"{where} refused the event socket password")
    except TimeoutError:
        return ProbeResult(False, f"no answer from {where} within {timeout_s:g} s")
    except OSError as exc:
        return ProbeResult(False, f"cannot reach {where}: {exc.strerror or exc}")
    except Exception as exc:
        return ProbeResult(False, f"{where}: {type(exc).__name__} {exc}".strip())
    try:
        reply = await asyncio.wait_for(conn.send("api status"), timeout_s)
        line = next((x for x in reply.text.splitlines() if " ready" in x), reply.text[:120])
        if "is ready" in line:
            return ProbeResult(True, f"authenticated to {where}: {line.strip()}")
        return ProbeResult(False, f"authenticated to {where}, but it takes no calls: {line.strip()}")
    except Exception as exc:
        return ProbeResult(False, f"authenticated to {where}, but `api status` failed: {exc}")
    finally:
        conn.abort()


# --- status -------------------------------------------------------------------------------------


def gateway_key(row_id: int | None) -> str:
    """The dialer's name for a gateway: "gw<row id>", or "default" for the one from settings."""
    return f"gw{row_id}" if row_id is not None else "default"


def latest_statuses(redis: Any, keys: list[str]) -> dict[str, dict[str, Any]]:
    """The latest GatewayStatus the dialer kept for each gateway key (absent: never reported)."""
    from callcenter.messages import GatewayStatus, decode, gateway_status_key

    if redis is None or not keys:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for key, raw in zip(keys, redis.mget([gateway_status_key(k) for k in keys]), strict=True):
        if raw:
            msg = decode(raw)
            if isinstance(msg, GatewayStatus):
                out[key] = msg.payload()
    return out


# --- rows ---------------------------------------------------------------------------------------


def create_gateway(session: Any, *, fields: Mapping[str, Any]) -> Any:
    """Add a gateway row after checking every field that reaches a PBX."""
    from sqlmodel import col, select

    from callcenter.errors import Conflict
    from callcenter.models import GatewayRow

    values = {k: v for k, v in fields.items() if k in GatewayRow.model_fields and k != "id"}
    defaults = {n: f.default for n, f in GatewayRow.model_fields.items() if n not in ("id", "name", "kind")}
    check_fields({**defaults, **values})
    if session.exec(select(GatewayRow).where(col(GatewayRow.name) == values["name"])).first():
        raise Conflict(f"gateway {values['name']!r} exists", field="name")
    row = GatewayRow(**values)
    session.add(row)
    session.flush()
    return row


def update_gateway(session: Any, gateway_id: int, *, changes: Mapping[str, Any]) -> Any:
    """Change some fields of a gateway row (its kind stays); the result is checked as a whole."""
    from sqlmodel import col, select

    from callcenter.errors import Conflict, NotFound
    from callcenter.models import GatewayRow

    row = session.get(GatewayRow, gateway_id)
    if row is None:
        raise NotFound("no such gateway")
    merged = {**row.model_dump(), **{k: v for k, v in changes.items() if k in GatewayRow.model_fields}}
    merged["id"], merged["kind"] = row.id, row.kind
    check_fields(merged)
    if (
        merged["name"] != row.name
        and session.exec(select(GatewayRow).where(col(GatewayRow.name) == merged["name"])).first()
    ):
        raise Conflict(f"gateway {merged['name']!r} exists", field="name")
    for key, value in merged.items():
        setattr(row, key, value)
    session.add(row)
    session.flush()
    return row
