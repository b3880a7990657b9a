"""Not-ready reasons: the built-in ones (break, lunch, training) and those an admin adds. The agent
picks one with "Not ready"; it is kept on the agent's row (the supervisor's grid shows it) and in
`agent_state_log` (the agent report adds up the time per reason)."""

from __future__ import annotations

import re

from sqlmodel import Session, col, select

from callcenter.errors import Conflict, Invalid, NotFound
from callcenter.models import NotReadyReason

BUILT_IN = ("break", "lunch", "training")
_CODE = re.compile(r"^[a-z0-9_]{1,32}$")
# Reasons the system itself sets (`agents.apply`'s callers): an agent cannot pick these.
SYSTEM = frozenset({"missed_call", "workstation_disconnected", "after_manual_call"})


def all_reasons(session: Session) -> list[dict[str, object]]:
    """Every reason an agent may pick, built-in first; `label` is empty for a built-in one (the page
    translates its code)."""
    own = session.exec(select(NotReadyReason).order_by(col(NotReadyReason.label))).all()
    return [{"code": c, "label": "", "builtin": True} for c in BUILT_IN] + [
        {"code": r.code, "label": r.label, "builtin": False} for r in own
    ]


def check(session: Session, code: str | None) -> str | None:
    """The reason as stored, or Invalid when it is not one an agent may pick."""
    if not code:
        return None
    if code in BUILT_IN:
        return code
    found = session.exec(select(NotReadyReason).where(col(NotReadyReason.code) == code)).first()
    if found is None:
        raise Invalid(f"no not-ready reason {code!r}", field="reason")
    return code


def add(session: Session, *, code: str, label: str) -> NotReadyReason:
    code, label = code.strip().lower(), label.strip()
    if not _CODE.match(code):
        raise Invalid("a reason code is 1-32 of a-z, 0-9 and _", field="code")
    if not label or len(label) > 64:
        raise Invalid("a reason needs a label of at most 64 characters", field="label")
    if code in BUILT_IN or code in SYSTEM:
        raise Conflict(f"{code!r} is a built-in reason", field="code")
    if session.exec(select(NotReadyReason).where(col(NotReadyReason.code) == code)).first():
        raise Conflict(f"the reason {code!r} exists already", field="code")
    row = NotReadyReason(code=code, label=label)
    session.add(row)
    session.flush()
    return row


def remove(session: Session, *, code: str) -> None:
    """Remove an admin's reason (the log keeps its code: past time stays counted)."""
    row = session.exec(select(NotReadyReason).where(col(NotReadyReason.code) == code)).first()
    if row is None:
        raise NotFound(f"no not-ready reason {code!r}")
    session.delete(row)
    session.flush()
