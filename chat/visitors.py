"""Visitors and their tokens. A web visitor gets a signed token when they start a chat; it names the
visitor and carries their nonce, so it is refused once forged, expired or revoked (new nonce). The
widget sends it in the `X-Visitor-Token` header, and as the first message on the visitor socket
(`{"type": "auth", "token": ...}`); never in a URL, which ends up in access logs."""

from __future__ import annotations

import secrets
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlmodel import Session, col, select

from callcenter.errors import Invalid
from chat.models import Channel, ChatVisitor

TOKEN_SALT = "chat-visitor-token"
HEADER = "x-visitor-token"


def _serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=TOKEN_SALT)


def issue_token(visitor: ChatVisitor, *, secret: str) -> str:
    assert visitor.id is not None
    return _serializer(secret).dumps({"vid": visitor.id, "n": visitor.nonce})


def read_token(token: str, *, secret: str, max_age_s: int) -> tuple[int, str] | None:
    """(visitor id, nonce) of a genuine unexpired token, else None."""
    try:
        claims: Any = _serializer(secret).loads(token.strip(), max_age=max_age_s)
    except (BadSignature, SignatureExpired):
        return None
    if (
        not isinstance(claims, dict)
        or not isinstance(claims.get("vid"), int)
        or not isinstance(claims.get("n"), str)
    ):
        return None
    return claims["vid"], claims["n"]


def visitor_for_token(session: Session, token: str, *, secret: str, max_age_s: int) -> ChatVisitor | None:
    claims = read_token(token, secret=secret, max_age_s=max_age_s)
    if claims is None:
        return None
    visitor = session.get(ChatVisitor, claims[0])
    if visitor is None or not secrets.compare_digest(visitor.nonce, claims[1]):
        return None
    return visitor


def clean_name(name: str) -> str:
    name = " ".join(name.split())
    if len(name) > 128:
        raise Invalid("a name has at most 128 characters", field="name")
    return name


def new_web_visitor(session: Session, *, name: str, email: str, phone: str, now: float) -> ChatVisitor:
    visitor = ChatVisitor(
        channel=Channel.WEB.value,
        external_id=secrets.token_hex(16),
        nonce=secrets.token_hex(8),
        name=clean_name(name),
        email=email.strip()[:254],
        phone=phone.strip()[:32],
        created_at=now,
        last_seen_at=now,
    )
    session.add(visitor)
    session.flush()
    return visitor


def channel_visitor(
    session: Session, *, channel: Channel, external_id: str, name: str, now: float
) -> ChatVisitor:
    """The visitor behind a Telegram chat or a WeChat openid, created on their first message."""
    if not external_id or len(external_id) > 128:
        raise Invalid("a channel user id has 1 to 128 characters", field="external_id")
    found = session.exec(
        select(ChatVisitor).where(
            col(ChatVisitor.channel) == channel.value, col(ChatVisitor.external_id) == external_id
        )
    ).first()
    if found is not None:
        if name and not found.name:
            found.name = clean_name(name)[:128]
        found.last_seen_at = now
        session.add(found)
        return found
    visitor = ChatVisitor(
        channel=channel.value,
        external_id=external_id,
        nonce=secrets.token_hex(8),
        name=clean_name(name)[:128] if name else "",
        created_at=now,
        last_seen_at=now,
    )
    session.add(visitor)
    session.flush()
    return visitor
