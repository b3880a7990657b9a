"""The admin's side of the local bot: knowledge base entries and flows (validated, bounded), and the
group's knowledge built from them for `chat.bot.engine` (cached per group until an entry changes)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlmodel import Session, col

from callcenter.errors import Invalid, NotFound
from callcenter.models import SkillGroup
from chat.bot import flows
from chat.bot.engine import Knowledge
from chat.bot.kb import Index
from chat.models import BotFlow, KbEntry

MAX_ENTRIES = 5000  # per deployment
MAX_ALTERNATIVES = 20
MAX_TRIGGERS = 20
MAX_FLOWS = 500


def _phrases(raw: list[str], *, name: str, limit: int) -> list[str]:
    if len(raw) > limit:
        raise Invalid(f"at most {limit} {name}", field=name)
    out = []
    for p in raw:
        p = " ".join(str(p).split())
        if len(p) > 500:
            raise Invalid(f"each of {name} has at most 500 characters", field=name)
        if p and p not in out:
            out.append(p)
    return out


def _group(session: Session, group_id: int | None) -> None:
    if group_id is not None and session.get(SkillGroup, group_id) is None:
        raise NotFound(f"no skill group {group_id}", field="skill_group_id")


def entry_dict(e: KbEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "skill_group_id": e.skill_group_id,
        "question": e.question,
        "alternatives": json.loads(e.alternatives),
        "answer": e.answer,
        "enabled": e.enabled,
        "updated_at": e.updated_at,
    }


def save_entry(
    session: Session,
    *,
    entry_id: int | None,
    skill_group_id: int | None,
    question: str,
    alternatives: list[str],
    answer: str,
    enabled: bool,
    now: float,
) -> KbEntry:
    """Create (entry_id None) or replace a knowledge base entry."""
    question = " ".join(question.split())
    if not question or len(question) > 500:
        raise Invalid("a question has 1 to 500 characters", field="question")
    if not answer.strip() or len(answer) > 4000:
        raise Invalid("an answer has 1 to 4000 characters", field="answer")
    _group(session, skill_group_id)
    if entry_id is None:
        count = session.execute(select(func.count()).select_from(KbEntry)).scalar() or 0
        if count >= MAX_ENTRIES:
            raise Invalid(f"the knowledge base holds at most {MAX_ENTRIES} entries", field="question")
        entry = KbEntry(question=question, answer=answer)
    else:
        found = session.get(KbEntry, entry_id)
        if found is None:
            raise NotFound(f"no entry {entry_id}")
        entry = found
    entry.skill_group_id = skill_group_id
    entry.question = question
    entry.alternatives = json.dumps(
        _phrases(alternatives, name="alternatives", limit=MAX_ALTERNATIVES), ensure_ascii=False
    )
    entry.answer = answer
    entry.enabled = enabled
    entry.updated_at = now
    session.add(entry)
    session.flush()
    return entry


def flow_dict(f: BotFlow) -> dict[str, Any]:
    return {
        "id": f.id,
        "skill_group_id": f.skill_group_id,
        "name": f.name,
        "triggers": json.loads(f.triggers),
        "flow": json.loads(f.steps),
        "enabled": f.enabled,
        "updated_at": f.updated_at,
    }


def save_flow(
    session: Session,
    *,
    flow_id: int | None,
    skill_group_id: int | None,
    name: str,
    triggers: list[str],
    flow: Any,
    enabled: bool,
    now: float,
) -> BotFlow:
    name = " ".join(name.split())
    if not name or len(name) > 128:
        raise Invalid("a flow's name has 1 to 128 characters", field="name")
    phrases = _phrases(triggers, name="triggers", limit=MAX_TRIGGERS)
    if not phrases:
        raise Invalid("a flow needs at least one trigger phrase", field="triggers")
    parsed = flows.parse(flow)
    _group(session, skill_group_id)
    if flow_id is None:
        count = session.execute(select(func.count()).select_from(BotFlow)).scalar() or 0
        if count >= MAX_FLOWS:
            raise Invalid(f"at most {MAX_FLOWS} flows", field="name")
        row = BotFlow(name=name, steps="{}")
    else:
        found = session.get(BotFlow, flow_id)
        if found is None:
            raise NotFound(f"no flow {flow_id}")
        row = found
    row.skill_group_id = skill_group_id
    row.name = name
    row.triggers = json.dumps(phrases, ensure_ascii=False)
    row.steps = json.dumps(flows.dump(parsed), ensure_ascii=False)
    row.enabled = enabled
    row.updated_at = now
    session.add(row)
    session.flush()
    return row


# --- the group's knowledge, cached ----------------------------------------------------------------


def _for_group(model: type[KbEntry] | type[BotFlow], group_id: int) -> Any:
    return or_(col(model.skill_group_id).is_(None), col(model.skill_group_id) == group_id)


def _fingerprint(session: Session, group_id: int) -> tuple[Any, ...]:
    out: tuple[Any, ...] = ()
    for model in (KbEntry, BotFlow):
        out += tuple(
            session.execute(
                select(func.count(), func.max(model.updated_at), func.sum(model.id)).where(
                    _for_group(model, group_id)
                )
            ).one()
        )
    return out


def build(session: Session, group_id: int, threshold: float) -> Knowledge:
    entries = session.scalars(
        select(KbEntry).where(_for_group(KbEntry, group_id), col(KbEntry.enabled).is_(True))
    ).all()
    phrasings: list[tuple[int, str]] = []
    answers: dict[int, str] = {}
    for e in entries:
        assert e.id is not None
        answers[e.id] = e.answer
        phrasings += [(e.id, e.question)] + [(e.id, a) for a in json.loads(e.alternatives)]
    rows = session.scalars(
        select(BotFlow).where(_for_group(BotFlow, group_id), col(BotFlow.enabled).is_(True))
    ).all()
    parsed: dict[int, flows.Flow] = {}
    triggers: list[tuple[int, str]] = []
    for f in rows:
        assert f.id is not None
        parsed[f.id] = flows.parse(json.loads(f.steps))
        triggers += [(f.id, t) for t in json.loads(f.triggers)]
    return Knowledge(
        kb=Index(phrasings), answers=answers, flows=parsed, triggers=Index(triggers), threshold=threshold
    )


@dataclass
class _Cached:
    fingerprint: tuple[Any, ...]
    knowledge: Knowledge


class KnowledgeCache:
    """The knowledge of each group, rebuilt when its entries or flows change (checked on every use:
    one small aggregate query), so every web process answers from the admin's latest edit."""

    def __init__(self) -> None:
        self._by_group: dict[tuple[int, float], _Cached] = {}
        self._lock = threading.Lock()

    def get(self, session: Session, group_id: int, threshold: float) -> Knowledge:
        key = (group_id, threshold)
        fp = _fingerprint(session, group_id)
        with self._lock:
            cached = self._by_group.get(key)
        if cached is not None and cached.fingerprint == fp:
            return cached.knowledge
        knowledge = build(session, group_id, threshold)
        with self._lock:
            self._by_group[key] = _Cached(fp, knowledge)
        return knowledge
