"""The do-not-call list: numbers (E.164) never to dial. Checked when a list is imported and again by
the dialer right before each call (`store.SqlStore.claim`)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from callcenter.errors import Invalid
from callcenter.leads import Normaliser, find_phone_column, read_table
from callcenter.models import DncEntry


def add(
    session: Session, *, numbers: Iterable[str], region: str, source: str, note: str = ""
) -> dict[str, Any]:
    """Add numbers; invalid ones are reported one by one, numbers already listed are not added twice."""
    normalise = Normaliser(region)
    wanted: dict[str, str] = {}
    rejected: list[dict[str, Any]] = []
    for i, raw in enumerate(numbers):
        result = normalise(str(raw))
        if isinstance(result, str):
            rejected.append({"index": i, "number": str(raw)[:64], "reason": result})
        else:
            wanted.setdefault(result.e164, str(raw))
    existing = (
        set(session.exec(select(DncEntry.number).where(col(DncEntry.number).in_(list(wanted)))).all())
        if wanted
        else set()
    )
    now = time.time()
    for number in wanted:
        if number not in existing:
            session.add(DncEntry(number=number, added_at=now, source=source[:64], note=note))
    session.flush()
    return {"added": len(wanted) - len(existing), "already_listed": len(existing), "rejected": rejected}


def add_file(session: Session, *, path: Path, filename: str, region: str, source: str) -> dict[str, Any]:
    """Add the numbers of a CSV / XLSX (header row, phone column found by name)."""
    table = read_table(path, filename=filename)
    idx = find_phone_column(table.header)
    numbers = [row[idx] if idx < len(row) else "" for row in table.rows]
    result = add(session, numbers=numbers, region=region, source=source, note=f"from {filename}"[:200])
    for item in result["rejected"]:
        item["row"] = item.pop("index") + 2  # spreadsheet row: the header is row 1
    return result


def remove(session: Session, *, number: str, region: str) -> bool:
    result = Normaliser(region)(number)
    if isinstance(result, str):
        raise Invalid(f"{number!r} is not a valid phone number ({result})", field="number")
    gone = session.execute(delete(DncEntry).where(col(DncEntry.number) == result.e164))
    return bool(gone.rowcount)  # type: ignore[attr-defined]


def listing(session: Session, *, query: str = "", limit: int = 100, offset: int = 0) -> dict[str, Any]:
    q = select(DncEntry)
    count = select(func.count()).select_from(DncEntry)
    if query:
        q = q.where(col(DncEntry.number).contains(query))
        count = count.where(col(DncEntry.number).contains(query))
    rows = session.exec(q.order_by(col(DncEntry.added_at).desc()).offset(offset).limit(limit)).all()
    return {"total": session.exec(count).one(), "items": [r.model_dump() for r in rows]}


def is_blocked(session: Session, number: str) -> bool:
    return session.get(DncEntry, number) is not None
