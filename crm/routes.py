"""CRM API under `/api/crm`: contacts (search, lookup by phone, create, edit), tags, notes and the
calls of a contact. Every route needs the `crm` permission, and sees only the contacts the viewer may
(`crm.services.Viewer`; CALLCENTER_CRM_VISIBILITY): a route naming a contact takes its id through
`visible_contact`, a search or lookup is filtered, so another's contact is a 404 like a missing one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlmodel import Session

from callcenter.accounts import Principal
from callcenter.errors import NotFound
from callcenter.http import get_ctx, get_session, require
from callcenter.models import Permission
from crm import services

router = APIRouter(prefix="/api/crm", dependencies=[require(Permission.CRM)])


class ContactCreate(BaseModel):
    name: str = Field("", max_length=128)
    company: str = Field("", max_length=128)
    email: str = Field("", max_length=254)
    phones: list[str] = Field(default_factory=list, max_length=10)
    tags: list[str] = Field(default_factory=list, max_length=services.MAX_TAGS)


class ContactUpdate(BaseModel):
    name: str | None = Field(None, max_length=128)
    company: str | None = Field(None, max_length=128)
    email: str | None = Field(None, max_length=254)
    phones: list[str] | None = Field(None, max_length=10)
    tags: list[str] | None = Field(None, max_length=services.MAX_TAGS)


class ContactPublic(BaseModel):
    id: int
    name: str
    company: str
    email: str
    owner_id: int | None
    phones: list[str]
    tags: list[str]
    created_at: float | None = None
    updated_at: float | None = None


class NotePublic(BaseModel):
    id: int
    at: float
    body: str
    call_id: str | None
    author_id: int | None
    author: str


class CallPublic(BaseModel):
    call_id: str
    at: float
    direction: str
    number: str
    result: str
    disposition: str
    talk_s: float | None
    campaign_name: str | None
    extension: str | None


class ContactDetail(BaseModel):
    contact: ContactPublic
    notes: list[NotePublic]
    calls: list[CallPublic]


class NoteCreate(BaseModel):
    body: str = Field(min_length=1, max_length=4000)


class TagsPut(BaseModel):
    tags: list[str] = Field(max_length=services.MAX_TAGS)


class LookupPublic(BaseModel):
    number: str
    contact: ContactPublic | None


def _region(request: Request) -> str:
    return get_ctx(request).settings.default_region


def _public(view: services.ContactView) -> ContactPublic:
    return ContactPublic.model_validate(view.as_dict())


def _fields(body: ContactCreate | ContactUpdate) -> services.ContactFields:
    return services.ContactFields(
        name=body.name, company=body.company, email=body.email, phones=body.phones, tags=body.tags
    )


# `AppContext.extras[ALSO_VISIBLE]`: callables (principal) -> a select of contact ids, or None, that
# feature packages the CRM does not import register (webui registers chat's).
ALSO_VISIBLE = "crm_also_visible"
AlsoVisible = Callable[[Principal], Any]


def get_viewer(
    request: Request,
    principal: Principal = require(Permission.CRM),
    session: Session = Depends(get_session),
) -> services.Viewer:
    """Who is looking: supervisors (monitor) and admins see every contact, agents what the rule
    allows plus their current call's and their other current work's."""
    ctx = get_ctx(request)
    providers: list[AlsoVisible] = ctx.extras.get(ALSO_VISIBLE, [])
    return services.viewer(
        session,
        user_id=principal.user_id,
        agent_id=principal.agent_id,
        sees_all=principal.can(Permission.MONITOR) or principal.can(Permission.ADMIN),
        rule=ctx.settings.crm_visibility,
        region=ctx.settings.default_region,
        also=[ids for ids in (provider(principal) for provider in providers) if ids is not None],
    )


def visible_contact(
    contact_id: int,
    who: services.Viewer = Depends(get_viewer),
    session: Session = Depends(get_session),
) -> int:
    """The path's contact id, once the viewer may see it (else 404, as for a contact that is not).
    Any route of any package that names a contact takes it through this."""
    services.check_visible(session, who=who, contact_id=contact_id)
    return contact_id


@router.get("/contacts")
def search(
    request: Request,
    q: str = Query("", max_length=128),
    limit: int = Query(50, ge=1, le=200),
    who: services.Viewer = Depends(get_viewer),
    session: Session = Depends(get_session),
) -> list[ContactPublic]:
    views = services.search_contacts(session, query=q, region=_region(request), limit=limit, who=who)
    return [_public(v) for v in views]


@router.post("/contacts", status_code=201)
def create(
    request: Request,
    body: ContactCreate,
    principal: Principal = require(Permission.CRM),
    session: Session = Depends(get_session),
) -> ContactPublic:
    view = services.create_contact(
        session, fields=_fields(body), owner_id=principal.user_id, region=_region(request)
    )
    return _public(view)


@router.get("/lookup")
def lookup(
    request: Request,
    phone: str = Query(..., min_length=2, max_length=32),
    who: services.Viewer = Depends(get_viewer),
    session: Session = Depends(get_session),
) -> LookupPublic:
    """The contact owning a phone number (any spelling; compared in E.164), or null - also when the
    viewer may not see it."""
    region = _region(request)
    view = services.find_by_phone(session, number=phone, region=region)
    if view is not None and view.id is not None:
        try:
            services.check_visible(session, who=who, contact_id=view.id)
        except NotFound:
            view = None
    return LookupPublic(
        number=services.normalise_phone(phone, region=region), contact=_public(view) if view else None
    )


@router.get("/contacts/{contact_id}")
def detail(
    contact_id: int = Depends(visible_contact), session: Session = Depends(get_session)
) -> ContactDetail:
    view = services.get_contact(session, contact_id=contact_id)
    notes: Any = services.contact_notes(session, contact_id=contact_id)
    calls: Any = services.contact_calls(session, contact_id=contact_id)
    return ContactDetail(contact=_public(view), notes=notes, calls=calls)


@router.patch("/contacts/{contact_id}")
def update(
    request: Request,
    body: ContactUpdate,
    contact_id: int = Depends(visible_contact),
    session: Session = Depends(get_session),
) -> ContactPublic:
    view = services.update_contact(
        session, contact_id=contact_id, fields=_fields(body), region=_region(request)
    )
    return _public(view)


@router.post("/contacts/{contact_id}/notes", status_code=201)
def add_note(
    body: NoteCreate,
    contact_id: int = Depends(visible_contact),
    principal: Principal = require(Permission.CRM),
    session: Session = Depends(get_session),
) -> NotePublic:
    note = services.add_note(session, contact_id=contact_id, author_id=principal.user_id, body=body.body)
    return NotePublic.model_validate(note)


@router.put("/contacts/{contact_id}/tags")
def put_tags(
    body: TagsPut, contact_id: int = Depends(visible_contact), session: Session = Depends(get_session)
) -> list[str]:
    return services.set_tags(session, contact_id=contact_id, tags=body.tags)


@router.get("/contacts/{contact_id}/calls")
def calls(
    contact_id: int = Depends(visible_contact), session: Session = Depends(get_session)
) -> list[CallPublic]:
    return [CallPublic.model_validate(c) for c in services.contact_calls(session, contact_id=contact_id)]


@router.get("/tags")
def tags(session: Session = Depends(get_session)) -> list[str]:
    return services.list_tags(session)
