"""Settings in one place: every knob is a `CALLCENTER_*` environment variable (or a `.env` file).

`load_settings()` is the only entry point. It turns pydantic's validation errors into one
`SettingsError` whose message names the environment variable, so a bad value stops start-up with a
line an operator can act on instead of a traceback.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "CALLCENTER_"
# Values that ship in docs and examples; accepting them outside demo/dev would mean running with a
# secret that the whole internet knows.
SAMPLE_SECRETS = frozenset({"", "change-me", "changeme", "secret", "demo-secret-not-for-production"})
DEMO_SECRET = "demo-secret-not-for-production"
# A shorter HMAC key can be guessed offline from a single signed cookie or token.
MIN_SECRET_BYTES = 32


class SettingsError(RuntimeError):
    """A setting is missing or invalid; the message names the environment variable."""


class Mode(StrEnum):
    PRODUCTION = "production"
    DEV = "dev"
    DEMO = "demo"


class CrmVisibility(StrEnum):
    """Which contacts an agent may see (supervisors and admins see all)."""

    OWNER = "owner"  # the contacts they own
    SKILL_GROUP = "skill_group"  # ... and those owned by agents who share a skill group with them
    ALL = "all"


class GatewayKind(StrEnum):
    SIMULATED = "simulated"
    ASTERISK = "asterisk"
    FREESWITCH = "freeswitch"


class Settings(BaseSettings):
    """Process settings. Field `foo_bar` is read from `CALLCENTER_FOO_BAR`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    mode: Mode = Field(Mode.PRODUCTION, description="production, dev or demo; dev/demo allow a sample secret")
    data_dir: Path = Field(Path("data"), description="folder for the embedded SQLite file, Redis and uploads")
    database_url: str = Field(
        "",
        description="SQLAlchemy URL; empty = SQLite file in the data folder. e.g. postgresql+psycopg://u:p@h/db",
    )
    redis_url: str = Field("", description="redis://host:port/db; empty = start an embedded Redis server")
    web_host: str = Field("127.0.0.1", description="address the web server binds")
    web_port: int = Field(8035, ge=1, le=65535, description="port the web server binds")
    secret_key: SecretStr = Field(
        SecretStr(""), description="signs session cookies and API tokens (required)"
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR")
    session_max_age_s: int = Field(12 * 3600, gt=0, description="web session and API token lifetime, seconds")
    login_max_failures: int = Field(
        5, gt=0, description="failed logins per user and address before throttling"
    )
    login_user_max_failures: int = Field(
        20, gt=0, description="failed logins per user from all addresses together before throttling"
    )
    login_lockout_s: int = Field(
        300,
        gt=0,
        description="first lockout after too many failed logins, seconds; doubles with each further failure",
    )
    login_lockout_max_s: int = Field(3600, gt=0, description="the longest a lockout grows to, seconds")
    trusted_proxies: str = Field(
        "",
        description="comma-separated addresses or networks of reverse proxies whose X-Forwarded-For is "
        "believed; empty = the header is ignored",
    )
    session_cookie_secure: bool = Field(
        True, description="production: session cookie only over HTTPS (serve behind TLS); dev/demo never"
    )
    upload_max_mb: int = Field(100, gt=0, description="largest number list or do-not-call file, MB")
    upload_max_unpacked_mb: int = Field(
        300, gt=0, description="largest an XLSX list may be once unzipped, MB (zip bombs are refused)"
    )
    crm_visibility: CrmVisibility = Field(
        CrmVisibility.OWNER,
        description="contacts an agent sees: owner (their own), skill_group (also their skill groups'), "
        "all; plus their current call's; supervisors and admins see all",
    )
    default_region: str = Field("CN", description="ISO region for numbers written without a country code")

    gateway: GatewayKind = Field(GatewayKind.SIMULATED, description="default PBX driver for new tasks")
    ami_host: str = Field("127.0.0.1", description="Asterisk AMI host")
    ami_port: int = Field(5038, ge=1, le=65535, description="Asterisk AMI port")
    ami_username: str = Field("callcenter", description="AMI user (manager.conf)")
    ami_secret: SecretStr = Field(SecretStr(""), description="AMI secret")
    ami_dial_template: str = Field(
        "PJSIP/{number}@trunk", description="customer dial string; {number} = digits"
    )
    ami_agent_template: str = Field("PJSIP/{extension}", description="agent endpoint dial string")
    esl_host: str = Field("127.0.0.1", description="FreeSWITCH event socket host")
    esl_port: int = Field(8021, ge=1, le=65535, description="FreeSWITCH event socket port")
    esl_password: SecretStr = Field(SecretStr(""), description="FreeSWITCH event socket password")
    esl_dial_template: str = Field(
        "sofia/gateway/trunk/{number}", description="customer dial string; {number} = digits"
    )
    esl_agent_template: str = Field("user/{extension}", description="agent endpoint dial string")
    sim_time_scale: float = Field(
        1.0, gt=0, le=1000, description="simulated PBX: its durations are divided by this (fast demos, tests)"
    )
    sim_script: str = Field(
        "",
        description="simulated PBX: JSON file of scripted customers {number: {outcome, ring_s, talk_s}}",
    )
    gateway_timeout_s: float = Field(5.0, gt=0, description="timeout of every gateway command, seconds")
    gateway_originates_per_s: float = Field(
        10.0,
        gt=0,
        le=1000,
        description="new calls per second through the default gateway (rows set their own)",
    )
    agent_disconnect_s: float = Field(
        30.0, gt=0, description="a ready agent with no workstation open this long goes not ready, seconds"
    )
    gateway_keepalive_s: float = Field(10.0, gt=0, description="keepalive interval of gateway links, seconds")
    pbx_max_calls: int = Field(
        2500,
        gt=0,
        le=16000,
        description="calls one PBX is configured for at most (config render refuses task sets above it)",
    )

    chat_grace_s: float = Field(
        60.0, ge=0, le=3600, description="chat: a web visitor who drops keeps their place this long, seconds"
    )
    chat_sweep_s: float = Field(
        5.0, gt=0, le=60, description="chat: how often each web process checks visitors' grace and the queues"
    )
    chat_default_capacity: int = Field(
        3, ge=1, le=50, description="chat: rooms an agent holds at once (each agent may have their own)"
    )
    chat_route_during_call: bool = Field(
        True, description="chat: an agent on a phone call may still be given new chats"
    )
    chat_max_message_chars: int = Field(2000, ge=1, le=4000, description="chat: longest text message")
    chat_upload_max_bytes: int = Field(
        5 * 1024 * 1024, ge=1024, le=50 * 1024 * 1024, description="chat: largest image upload, bytes"
    )
    chat_visitor_token_max_age_s: int = Field(
        7 * 86400, gt=0, description="chat: lifetime of a visitor's token (their chat and history), seconds"
    )
    chat_survey_window_s: int = Field(
        86400, gt=0, description="chat: how long after a chat ends the visitor may still rate it, seconds"
    )
    chat_bot_webhook_secret: SecretStr = Field(
        SecretStr(""), description="chat: HMAC-SHA256 key signing requests to an external bot's webhook"
    )
    chat_bot_webhook_timeout_s: float = Field(
        3.0,
        gt=0,
        le=30,
        description="chat: an external bot that takes longer is skipped (queued for a human)",
    )
    chat_telegram_bot_token: SecretStr = Field(
        SecretStr(""), description="chat: Telegram bot token (BotFather)"
    )
    chat_telegram_secret_token: SecretStr = Field(
        SecretStr(""),
        description="chat: secret Telegram sends in X-Telegram-Bot-Api-Secret-Token (setWebhook)",
    )
    chat_telegram_api_base: str = Field(
        "https://api.telegram.org", description="chat: Telegram Bot API base URL"
    )
    chat_telegram_group: str = Field(
        "", description="chat: skill group that takes Telegram chats (empty = the first chat-enabled group)"
    )
    chat_wechat_token: SecretStr = Field(
        SecretStr(""), description="chat: WeChat Official Account server token (signature check)"
    )
    chat_wechat_app_id: str = Field("", description="chat: WeChat Official Account AppID")
    chat_wechat_app_secret: SecretStr = Field(
        SecretStr(""), description="chat: WeChat Official Account AppSecret"
    )
    chat_wechat_api_base: str = Field("https://api.weixin.qq.com", description="chat: WeChat API base URL")
    chat_wechat_group: str = Field(
        "", description="chat: skill group that takes WeChat chats (empty = the first chat-enabled group)"
    )

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        import phonenumbers

        value = value.upper()
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not an ISO 3166 region phonenumbers knows (e.g. CN, US, GB)")
        return value

    @field_validator("chat_telegram_api_base", "chat_wechat_api_base")
    @classmethod
    def _api_base(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http(s) URL such as https://api.telegram.org")
        return value.rstrip("/")

    @field_validator("database_url", "redis_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not re.match(r"^[a-z][a-z0-9+.-]*://", value):
            raise ValueError(
                "must be a URL such as postgresql+psycopg://user:pass@host/db or redis://host:6379/0"
            )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        for item in _split(value):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/24)"
                ) from None
        return value

    @model_validator(mode="after")
    def _secret(self) -> Settings:
        secret = self.secret_key.get_secret_value()
        if self.mode is Mode.PRODUCTION and secret in SAMPLE_SECRETS:
            raise ValueError(
                "secret_key: CALLCENTER_SECRET_KEY must be set to a private random value in production mode "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`), "
                "or set CALLCENTER_MODE=dev for local use"
            )
        if self.mode is Mode.PRODUCTION and len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"secret_key: CALLCENTER_SECRET_KEY must be at least {MIN_SECRET_BYTES} bytes in production "
                "mode (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        if self.mode is not Mode.PRODUCTION and not self.secret_key.get_secret_value():
            self.secret_key = SecretStr(DEMO_SECRET)
        return self

    @property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(item, strict=False) for item in _split(self.trusted_proxies))

    @property
    def secure_cookies(self) -> bool:
        """Whether cookies carry `Secure`: in production (behind TLS) unless turned off."""
        return self.mode is Mode.PRODUCTION and self.session_cookie_secure

    @property
    def upload_max_bytes(self) -> int:
        return self.upload_max_mb * 1024 * 1024

    @property
    def upload_max_unpacked_bytes(self) -> int:
        return self.upload_max_unpacked_mb * 1024 * 1024

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'callcenter.db').resolve()}"


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (overrides win); raise `SettingsError` naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"] if p != "__root__"]
            msg = err["msg"].removeprefix("Value error, ")
            if loc:
                problems.append(f"{env_name(loc[0])}: {msg}")
            else:
                field, _, rest = msg.partition(": ")
                name = env_name(field) if field in Settings.model_fields else field
                problems.append(f"{name}: {rest or msg}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


def settings_table() -> list[tuple[str, str, str]]:
    """(variable, default, description) rows, for the README and `callcenter settings`."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, SecretStr):
            default = "(none)" if not default.get_secret_value() else "***"
        elif isinstance(default, StrEnum):
            default = default.value
        elif isinstance(default, bool):
            default = "true" if default else "false"
        rows.append((env_name(name), str(default) if default != "" else "(empty)", field.description or ""))
    return rows
