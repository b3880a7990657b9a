"""CRM service functions: contacts, phones, tags, notes, a contact's calls, and the two things the
workstation needs - the CRM part of a screen pop and the one-click save of a call's outcome.

Who sees which contact (`Viewer`): supervisors and admins see all; an agent sees what the rule allows
(`owner`: the contacts they own; `skill_group`: also those owned by agents who share a skill group
with them; `all`), the contact of the call they are on or wrapping up, and those of their other
current work that feature packages hand in (`Viewer.also`: the chats they hold). A contact a viewer
may not see is `NotFound` for them, whatever they try.

Domain errors only (`callcenter.errors`); nothing here knows HTTP. Every function takes the session
first and keyword-only arguments after it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
import sqlalchemy as sa
from sqlalchemy import ColumnElement, bindparam, delete, func, or_
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from callcenter.config import CrmVisibility
from callcenter.errors import Conflict, Invalid, NotFound
from callcenter.models import DEFAULT_DISPOSITIONS, Agent, AgentSkill, Call, Campaign, User, now
from crm.models import Contact, ContactPhone, ContactTag, Note, Tag

# How much history a screen pop carries; the contact page shows more.
POP_CALLS = 10
POP_NOTES = 10
MAX_TAGS = 20

# Lead columns that pre-fill a new contact, matched case-insensitively (the seed's lists are Chinese).
_PREFILL_KEYS: dict[str, tuple[str, ...]] = {
    "name": ("name", "full name", "customer", "contact", "姓名", "名字", "客户", "客户名称", "联系人"),
    "company": ("company", "organisation", "organization", "公司", "单位", "公司名称"),
    "email": ("email", "e-mail", "mail", "邮箱", "电子邮件"),
}


# --- phones --------------------------------------------------------------------------------------


def _parse(raw: str, region: str) -> phonenumbers.PhoneNumber:
    try:
        parsed = phonenumbers.parse((raw or "").strip(), region)
    except phonenumbers.NumberParseException:
        raise Invalid(f"{raw!r} is not a phone number", field="phones") from None
    if not phonenumbers.is_possible_number(parsed):
        raise Invalid(f"{raw!r} is not a possible phone number", field="phones")
    return parsed


def normalise_phone(raw: str, *, region: str) -> str:
    """E.164 for a number as typed or as a gateway reports it; raises `Invalid` when it cannot be one.

    >>> normalise_phone("138 0013 8000", region="CN")
    '+8613800138000'
    """
    return phonenumbers.format_number(_parse(raw, region), phonenumbers.PhoneNumberFormat.E164)


def _variants(parsed: phonenumbers.PhoneNumber) -> tuple[str, ...]:
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    out = (e164, e164.lstrip("+"), "".join(ch for ch in national if ch.isdigit()))
    return tuple(dict.fromkeys(v for v in out if v))


@functools.lru_cache(maxsize=4096)
def number_variants(e164: str) -> tuple[str, ...]:
    """The spellings a `Call.number` may have for one E.164 number: E.164 (the dialer's), without the
    plus, and the national digits (what a PBX often reports for a manual call)."""
    try:
        return _variants(phonenumbers.parse(e164))
    except phonenumbers.NumberParseException:
        return (e164,)


def _e164_and_variants(raw: str, region: str) -> tuple[str, tuple[str, ...]] | None:
    """E.164 and its spellings from one parse (the screen pop does this for every call)."""
    try:
        variants = _variants(_parse(raw, region))
    except Invalid:
        return None
    return variants[0], variants


def _try_normalise(raw: str, region: str) -> str | None:
    try:
        return normalise_phone(raw, region=region)
    except Invalid:
        return None


# --- who sees what ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """Who is looking, for the visibility rule."""

    user_id: int
    agent_id: int | None = None
    sees_all: bool = False  # supervisors and admins (and everyone under the `all` rule)
    rule: CrmVisibility = CrmVisibility.OWNER
    call_number: str | None = None  # E.164 of the call the agent is on or wrapping up
    # Selects of contact ids the viewer's current work makes visible too (from feature packages
    # the CRM does not import: a chat they hold, an inbox item of their group).
    also: tuple[Any, ...] = ()


def viewer(
    session: Session,
    *,
    user_id: int,
    agent_id: int | None,
    sees_all: bool,
    rule: CrmVisibility,
    region: str,
    also: Iterable[Any] = (),
) -> Viewer:
    """The viewer for a user, with the number of their current call when they have one."""
    if sees_all or rule is CrmVisibility.ALL:
        return Viewer(user_id=user_id, agent_id=agent_id, sees_all=True, rule=rule)
    number = None
    if agent_id is not None:
        call = session.exec(
            select(Call.number)
            .join(Agent, col(Agent.call_id) == col(Call.id))
            .where(col(Agent.id) == agent_id)
        ).first()
        number = _try_normalise(call, region) if call else None
    return Viewer(user_id=user_id, agent_id=agent_id, rule=rule, call_number=number, also=tuple(also))


def visible(who: Viewer) -> ColumnElement[bool] | None:
    """The condition on `Contact` of what `who` may see; None for everything."""
    if who.sees_all:
        return None
    conditions: list[ColumnElement[bool]] = [col(Contact.owner_id) == who.user_id]
    if who.rule is CrmVisibility.SKILL_GROUP and who.agent_id is not None:
        groups = select(AgentSkill.skill_group_id).where(col(AgentSkill.agent_id) == who.agent_id)
        peers = (
            select(Agent.user_id)
            .join(AgentSkill, col(AgentSkill.agent_id) == col(Agent.id))
            .where(col(AgentSkill.skill_group_id).in_(groups))
        )
        conditions.append(col(Contact.owner_id).in_(peers))
    if who.call_number:
        on_call = select(ContactPhone.contact_id).where(col(ContactPhone.number) == who.call_number)
        conditions.append(col(Contact.id).in_(on_call))
    conditions.extend(col(Contact.id).in_(ids) for ids in who.also)
    return or_(*conditions)


def check_visible(session: Session, *, who: Viewer, contact_id: int) -> None:
    """`NotFound` unless the contact exists and `who` may see it (the same answer either way)."""
    stmt = select(Contact.id).where(col(Contact.id) == contact_id)
    condition = visible(who)
    if condition is not None:
        stmt = stmt.where(condition)
    if session.exec(stmt).first() is None:
        raise NotFound("no such contact")


def like_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its own `%`, `_` and `\\` taken literally (escape `\\`).

    >>> like_pattern("100%_a")
    '%100\\\\%\\\\_a%'
    """
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


# --- reading -------------------------------------------------------------------------------------


@dataclass
class ContactView:
    """A contact with its phones and tags, as the API and the screen pop show it."""

    id: int | None
    name: str
    company: str
    email: str
    owner_id: int | None
    phones: list[str]
    tags: list[str]
    created_at: float | None = None
    updated_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# The read path's statements are built once, with bound parameters: the screen pop runs them for
# every connected call, and building a statement costs more than running it on an indexed column.
# They run on the session's connection (Core), so they see what the session has flushed; they are
# SQLAlchemy's `select`, typed for any number of columns (SQLModel's is typed for four at most).
_CONTACT_COLUMNS = (
    col(Contact.id),
    col(Contact.name),
    col(Contact.company),
    col(Contact.email),
    col(Contact.owner_id),
    col(Contact.created_at),
    col(Contact.updated_at),
)
_CONTACT_BY_ID = sa.select(*_CONTACT_COLUMNS).where(col(Contact.id) == bindparam("contact_id"))
_CONTACT_BY_NUMBER = (
    sa.select(*_CONTACT_COLUMNS)
    .join(ContactPhone, col(ContactPhone.contact_id) == col(Contact.id))
    .where(col(ContactPhone.number) == bindparam("number"))
)
_PHONES = (
    select(col(ContactPhone.number))
    .where(col(ContactPhone.contact_id) == bindparam("contact_id"))
    .order_by(col(ContactPhone.id))
)
_TAGS = (
    select(col(Tag.name))
    .join(ContactTag, col(ContactTag.tag_id) == col(Tag.id))
    .where(col(ContactTag.contact_id) == bindparam("contact_id"))
    .order_by(func.lower(Tag.name))
)
_NOTES = (
    sa.select(
        col(Note.id),
        col(Note.created_at),
        col(Note.body),
        col(Note.call_id),
        col(Note.author_id),
        col(User.display_name),
    )
    .outerjoin(User, col(User.id) == col(Note.author_id))
    .where(col(Note.contact_id) == bindparam("contact_id"))
    .order_by(col(Note.created_at).desc(), col(Note.id).desc())
    .limit(bindparam("limit"))
)
_CALLS = (
    sa.select(
        col(Call.id),
        col(Call.created_at),
        col(Call.direction),
        col(Call.number),
        col(Call.result),
        col(Call.disposition),
        col(Call.connected_at),
        col(Call.ended_at),
        col(Campaign.name),
        col(Agent.extension),
    )
    .outerjoin(Campaign, col(Campaign.id) == col(Call.campaign_id))
    .outerjoin(Agent, col(Agent.id) == col(Call.agent_id))
    .where(col(Call.number).in_(bindparam("numbers", expanding=True)), col(Call.id) != bindparam("exclude"))
    .order_by(col(Call.created_at).desc())
    .limit(bindparam("limit"))
)


def _conn(db: Session | Connection) -> Connection:
    return db.connection() if isinstance(db, Session) else db


def _view(conn: Connection, row: Any) -> ContactView:
    phones = conn.execute(_PHONES, {"contact_id": row.id}).scalars().all()
    tags = conn.execute(_TAGS, {"contact_id": row.id}).scalars().all()
    return ContactView(
        id=row.id,
        name=row.name,
        company=row.company,
        email=row.email,
        owner_id=row.owner_id,
        phones=list(phones),
        tags=list(tags),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def get_contact(session: Session | Connection, *, contact_id: int) -> ContactView:
    conn = _conn(session)
    row = conn.execute(_CONTACT_BY_ID, {"contact_id": contact_id}).first()
    if row is None:
        raise NotFound("no such contact")
    return _view(conn, row)


def find_by_phone(session: Session | Connection, *, number: str, region: str) -> ContactView | None:
    """The contact owning this number (one lookup on the unique E.164 index), or None."""
    e164 = _try_normalise(number, region)
    if e164 is None:
        return None
    conn = _conn(session)
    row = conn.execute(_CONTACT_BY_NUMBER, {"number": e164}).first()
    return _view(conn, row) if row else None


def _contact_id_by_e164(session: Session, e164: str) -> int | None:
    row = _conn(session).execute(_CONTACT_BY_NUMBER, {"number": e164}).first()
    return row.id if row else None


def search_contacts(
    session: Session, *, query: str = "", region: str, limit: int = 50, who: Viewer | None = None
) -> list[ContactView]:
    """Contacts `who` may see whose name, company or email contains `query` (as typed: `%` and `_`
    are characters), or whose phone is `query`. `who` None: every contact (internal use)."""
    stmt = (
        sa.select(*_CONTACT_COLUMNS).order_by(col(Contact.updated_at).desc()).limit(max(1, min(limit, 200)))
    )
    condition = visible(who) if who is not None else None
    if condition is not None:
        stmt = stmt.where(condition)
    q = query.strip()
    if q:
        like = like_pattern(q)
        conditions = [
            col(Contact.name).ilike(like, escape="\\"),
            col(Contact.company).ilike(like, escape="\\"),
            col(Contact.email).ilike(like, escape="\\"),
        ]
        e164 = _try_normalise(q, region) if any(ch.isdigit() for ch in q) else None
        if e164:
            conditions.append(
                col(Contact.id).in_(select(ContactPhone.contact_id).where(col(ContactPhone.number) == e164))
            )
        stmt = stmt.where(or_(*conditions))
    conn = _conn(session)
    return [_view(conn, row) for row in conn.execute(stmt).all()]


def list_tags(session: Session) -> list[str]:
    return list(session.exec(select(Tag.name).order_by(func.lower(Tag.name))).all())


def _calls_for_numbers(
    conn: Connection, numbers: Sequence[str], *, exclude_call_id: str | None, limit: int
) -> list[dict[str, Any]]:
    if not numbers:
        return []
    rows = conn.execute(
        _CALLS, {"numbers": list(numbers), "exclude": exclude_call_id or "", "limit": limit}
    ).all()
    return [
        {
            "call_id": cid,
            "at": at,
            "direction": direction,
            "number": number,
            "result": result,
            "disposition": disposition,
            "talk_s": round(ended - connected, 1) if connected and ended else None,
            "campaign_name": campaign,
            "extension": ext,
        }
        for cid, at, direction, number, result, disposition, connected, ended, campaign, ext in rows
    ]


def contact_calls(
    session: Session | Connection, *, contact_id: int, limit: int = 100
) -> list[dict[str, Any]]:
    """The calls to or from any of the contact's phones, newest first."""
    view = get_contact(session, contact_id=contact_id)
    numbers = [v for phone in view.phones for v in number_variants(phone)]
    return _calls_for_numbers(_conn(session), numbers, exclude_call_id=None, limit=limit)


def contact_notes(
    session: Session | Connection, *, contact_id: int, limit: int = 100
) -> list[dict[str, Any]]:
    """The contact's notes with their author's name, newest first."""
    rows = _conn(session).execute(_NOTES, {"contact_id": contact_id, "limit": limit}).all()
    return [
        {"id": nid, "at": at, "body": body, "call_id": call_id, "author_id": aid, "author": author or ""}
        for nid, at, body, call_id, aid, author in rows
    ]


# --- the screen pop's CRM part ------------------------------------------------------------------


def prefill_from_lead(lead_fields: Mapping[str, Any]) -> dict[str, str]:
    """Name / company / email for a new contact, taken from the lead's own columns when it has them."""
    lowered = {str(k).strip().lower(): v for k, v in lead_fields.items()}
    out = {}
    for target, keys in _PREFILL_KEYS.items():
        value = next((lowered[k] for k in keys if lowered.get(k) not in (None, "")), "")
        out[target] = str(value)[:128]
    return out


def pop_context(
    session: Session | Connection,
    *,
    number: str,
    region: str,
    lead_fields: Mapping[str, Any] | None = None,
    exclude_call_id: str | None = None,
) -> dict[str, Any]:
    """What the CRM knows about a caller: the contact (or a new one pre-filled from the lead), earlier
    calls (all the contact's phones) and notes. Two indexed queries for an unknown number, five for a
    known one, all on pre-built statements."""
    conn = _conn(session)
    parsed = _e164_and_variants(number, region)
    e164 = parsed[0] if parsed else None
    row = conn.execute(_CONTACT_BY_NUMBER, {"number": e164}).first() if e164 else None
    if row is not None:
        view = _view(conn, row)
        notes = contact_notes(conn, contact_id=row.id, limit=POP_NOTES)
        numbers = [v for phone in view.phones for v in number_variants(phone)]
    else:
        prefill = prefill_from_lead(lead_fields or {})
        view = ContactView(
            id=None,
            name=prefill["name"],
            company=prefill["company"],
            email=prefill["email"],
            owner_id=None,
            phones=[e164 or number],
            tags=[],
        )
        notes = []
        numbers = list(parsed[1]) if parsed else [number]
    if number not in numbers:
        numbers.append(number)
    calls = _calls_for_numbers(conn, numbers, exclude_call_id=exclude_call_id, limit=POP_CALLS)
    return {"number_e164": e164 or number, "contact": view.as_dict(), "calls": calls, "notes": notes}


# --- writing -------------------------------------------------------------------------------------


@dataclass
class ContactFields:
    """Input for create / update; None leaves a field as it is on update."""

    name: str | None = None
    company: str | None = None
    email: str | None = None
    phones: list[str] | None = None
    tags: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _clean_email(email: str) -> str:
    email = email.strip()
    if email and ("@" not in email or any(ch.isspace() for ch in email) or len(email) > 254):
        raise Invalid(f"{email!r} is not an e-mail address", field="email")
    return email


def _clean_tags(tags: Iterable[str]) -> list[str]:
    out: list[str] = []
    for tag in tags:
        name = " ".join(str(tag).split())
        if not name:
            continue
        if len(name) > 64:
            raise Invalid("a tag has at most 64 characters", field="tags")
        if name.lower() not in (t.lower() for t in out):
            out.append(name)
    if len(out) > MAX_TAGS:
        raise Invalid(f"at most {MAX_TAGS} tags", field="tags")
    return out


def _add_phone(session: Session, *, contact_id: int, e164: str) -> None:
    """Attach a number; `Conflict` when another contact owns it (the unique index decides races)."""
    owner = session.exec(select(ContactPhone.contact_id).where(col(ContactPhone.number) == e164)).first()
    if owner is not None:
        if owner == contact_id:
            return
        raise Conflict(f"{e164} belongs to another contact", field="phones")
    try:
        with session.begin_nested():
            session.add(ContactPhone(contact_id=contact_id, number=e164))
    except IntegrityError:
        raise Conflict(f"{e164} belongs to another contact", field="phones") from None


def set_tags(session: Session, *, contact_id: int, tags: Iterable[str]) -> list[str]:
    """Replace the contact's tags; unknown tag names are created, known ones are matched without
    regard to case (the existing spelling wins). Answers the contact's tags as stored."""
    names = _clean_tags(tags)
    session.execute(delete(ContactTag).where(col(ContactTag.contact_id) == contact_id))
    stored = []
    for name in names:
        tag = session.exec(select(Tag).where(func.lower(Tag.name) == name.lower())).first()
        if tag is None:
            try:
                with session.begin_nested():
                    tag = Tag(name=name)
                    session.add(tag)
            except IntegrityError:  # created by someone else meanwhile
                tag = session.exec(select(Tag).where(col(Tag.name) == name)).one()
        assert tag.id is not None
        session.add(ContactTag(contact_id=contact_id, tag_id=tag.id))
        stored.append(tag.name)
    session.flush()
    return sorted(stored, key=str.lower)


def create_contact(
    session: Session, *, fields: ContactFields, owner_id: int | None, region: str
) -> ContactView:
    """Create a contact; its phones are normalised to E.164 and must not belong to another contact."""
    phones = [normalise_phone(p, region=region) for p in (fields.phones or []) if p.strip()]
    contact = Contact(
        name=(fields.name or "").strip()[:128],
        company=(fields.company or "").strip()[:128],
        email=_clean_email(fields.email or ""),
        owner_id=owner_id,
    )
    session.add(contact)
    session.flush()
    assert contact.id is not None
    for e164 in dict.fromkeys(phones):
        _add_phone(session, contact_id=contact.id, e164=e164)
    if fields.tags is not None:
        set_tags(session, contact_id=contact.id, tags=fields.tags)
    session.flush()
    return get_contact(session, contact_id=contact.id)


def update_contact(session: Session, *, contact_id: int, fields: ContactFields, region: str) -> ContactView:
    """Change the given fields; `phones`, when given, replaces the contact's phones."""
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise NotFound("no such contact")
    if fields.name is not None:
        contact.name = fields.name.strip()[:128]
    if fields.company is not None:
        contact.company = fields.company.strip()[:128]
    if fields.email is not None:
        contact.email = _clean_email(fields.email)
    if fields.phones is not None:
        wanted = list(dict.fromkeys(normalise_phone(p, region=region) for p in fields.phones if p.strip()))
        session.execute(
            delete(ContactPhone).where(
                col(ContactPhone.contact_id) == contact_id, col(ContactPhone.number).not_in(wanted)
            )
        )
        for e164 in wanted:
            _add_phone(session, contact_id=contact_id, e164=e164)
    if fields.tags is not None:
        set_tags(session, contact_id=contact_id, tags=fields.tags)
    contact.updated_at = now()
    session.add(contact)
    session.flush()
    return get_contact(session, contact_id=contact_id)


def add_note(
    session: Session, *, contact_id: int, author_id: int | None, body: str, call_id: str | None = None
) -> dict[str, Any]:
    body = body.strip()
    if not body:
        raise Invalid("a note must not be empty", field="note")
    if len(body) > 4000:
        raise Invalid("a note has at most 4000 characters", field="note")
    if session.get(Contact, contact_id) is None:
        raise NotFound("no such contact")
    note = Note(contact_id=contact_id, author_id=author_id, body=body, call_id=call_id)
    session.add(note)
    session.flush()
    author = session.get(User, author_id) if author_id else None
    return {
        "id": note.id,
        "at": note.created_at,
        "body": note.body,
        "call_id": call_id,
        "author_id": author_id,
        "author": author.display_name if author else "",
    }


def upsert_by_phone(
    session: Session, *, number: str, fields: ContactFields, owner_id: int | None, region: str
) -> ContactView:
    """The contact owning `number`, updated with `fields`, or a new one with that phone. Two agents
    saving the same new number at once end with one contact: the loser of the unique index re-reads."""
    e164 = normalise_phone(number, region=region)
    for _ in range(2):
        existing = _contact_id_by_e164(session, e164)
        if existing is not None:
            return update_contact(
                session,
                contact_id=existing,
                fields=ContactFields(
                    name=fields.name, company=fields.company, email=fields.email, tags=fields.tags
                ),
                region=region,
            )
        try:
            with session.begin_nested():
                created = create_contact(
                    session,
                    fields=ContactFields(
                        name=fields.name,
                        company=fields.company,
                        email=fields.email,
                        phones=[e164],
                        tags=fields.tags,
                    ),
                    owner_id=owner_id,
                    region=region,
                )
            return created
        except Conflict:
            continue  # another session created it between our read and our insert
    raise Conflict(f"could not save the contact for {e164}; try again", field="phones")


# --- the one-click save from the workstation ----------------------------------------------------


def call_dispositions(session: Session, call: Call) -> list[str]:
    """The outcomes an agent may pick for this call: the task's list, or the default list for a
    manual call (the same default a new task gets)."""
    if call.campaign_id is None:
        return list(DEFAULT_DISPOSITIONS)
    values = session.exec(select(Campaign.dispositions).where(col(Campaign.id) == call.campaign_id)).first()
    return [str(v) for v in values] if isinstance(values, list) else []


@dataclass
class CallOutcome:
    contact: ContactFields
    disposition: str = ""
    note: str = ""


def save_call_outcome(
    session: Session,
    *,
    call_id: str,
    agent_id: int,
    user_id: int,
    outcome: CallOutcome,
    region: str,
) -> dict[str, Any]:
    """The workstation's one click: upsert the contact by the call's number, set its tags, add the
    note, set the call's disposition. Only the agent who took the call may save it."""
    call = session.get(Call, call_id)
    if call is None or call.agent_id != agent_id:
        raise NotFound("no such call on your workstation")
    disposition = outcome.disposition.strip()
    if disposition and disposition not in call_dispositions(session, call):
        raise Invalid(f"{disposition!r} is not an outcome of this task", field="disposition")
    contact = upsert_by_phone(
        session, number=call.number, fields=outcome.contact, owner_id=user_id, region=region
    )
    assert contact.id is not None
    note = None
    if outcome.note.strip():
        note = add_note(session, contact_id=contact.id, author_id=user_id, body=outcome.note, call_id=call_id)
    call.disposition = disposition[:64]
    session.add(call)
    session.flush()
    return {
        "call_id": call_id,
        "disposition": call.disposition,
        "contact": contact.as_dict(),
        "note": note,
    }


# --- links and history (the chat module links visitors to contacts and adds its rooms) ----------------


def find_by_email(session: Session | Connection, *, email: str) -> ContactView | None:
    """The most recently updated contact with this e-mail address (compared without regard to case)."""
    email = email.strip()
    if not email:
        return None
    conn = _conn(session)
    row = conn.execute(
        sa.select(*_CONTACT_COLUMNS)
        .where(func.lower(Contact.email) == email.lower())
        .order_by(col(Contact.updated_at).desc())
        .limit(1)
    ).first()
    return _view(conn, row) if row else None


def find_or_create(
    session: Session,
    *,
    name: str = "",
    phone: str = "",
    email: str = "",
    region: str,
    owner_id: int | None = None,
) -> tuple[ContactView, bool]:
    """The contact owning `phone`, else the one with `email`, else a new one with both: (contact,
    created). A contact found is completed with what it lacks (name, e-mail), never overwritten."""
    email = _clean_email(email)
    e164 = normalise_phone(phone, region=region) if phone.strip() else None
    if e164 is None and not email:
        raise Invalid("give a phone number or an e-mail address", field="phone")
    found = find_by_phone(session, number=e164, region=region) if e164 else None
    if found is None and email:
        found = find_by_email(session, email=email)
    if found is None:
        if e164:
            view = upsert_by_phone(
                session,
                number=e164,
                fields=ContactFields(name=name, email=email),
                owner_id=owner_id,
                region=region,
            )
        else:
            view = create_contact(
                session, fields=ContactFields(name=name, email=email), owner_id=owner_id, region=region
            )
        return view, True
    contact_id = found.id
    assert contact_id is not None
    changes = ContactFields(
        name=name if name.strip() and not found.name else None,
        email=email if email and not found.email else None,
    )
    if e164 and e164 not in found.phones:
        try:
            with session.begin_nested():
                _add_phone(session, contact_id=contact_id, e164=e164)
        except Conflict:
            pass  # the number is another contact's: keep the one matched by e-mail as it is
    if changes.name is not None or changes.email is not None:
        update_contact(session, contact_id=contact_id, fields=changes, region=region)
    return get_contact(session, contact_id=contact_id), False


def contact_history(
    session: Session | Connection,
    *,
    contact_id: int,
    limit: int = 100,
    extra: Iterable[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """A contact's calls and, beside them, the entries other modules add (`extra`: the chat module's
    rooms, each a mapping with `kind` and `at`), newest first, as one list. Calls get `kind` "call"."""
    items = [{"kind": "call", **c} for c in contact_calls(session, contact_id=contact_id, limit=limit)]
    items += [dict(e) for e in extra]
    items.sort(key=lambda item: float(item.get("at") or 0.0), reverse=True)
    return items[: max(1, limit)]
