"""CRM services on SQLite and PostgreSQL: E.164 phones with a unique index, tags, notes, a contact's
calls, the screen pop's CRM part and the one-click save."""

from __future__ import annotations

import pytest
import redis
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from callcenter import accounts
from callcenter.db import session_scope
from callcenter.errors import Conflict, Invalid, NotFound
from callcenter.models import Call
from crm import services
from crm.models import Contact, ContactPhone, Note
from tests.web import sim

CN = "CN"


def _agent(engine: Engine, username: str, extension: str) -> tuple[int, int]:
    with session_scope(engine) as s:
        user = accounts.create_user(s, username=username, password="password-123", roles=["agent"])
        agent = accounts.create_agent(s, user_id=user.id or 0, extension=extension)
        return user.id or 0, agent.id or 0


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("13800138000", "+8613800138000"),
        ("138 0013 8000", "+8613800138000"),
        ("+86 138-0013-8000", "+8613800138000"),
        ("008613800138000", "+8613800138000"),
        ("010 6552 9988", "+861065529988"),
        ("+1 (415) 555-2671", "+14155552671"),
    ],
)
def test_phones_are_normalised_to_e164(raw: str, e164: str) -> None:
    assert services.normalise_phone(raw, region=CN) == e164


@pytest.mark.parametrize("raw", ["", "abc", "12", "+86 1", "1\r\n2"])
def test_impossible_numbers_are_refused(raw: str) -> None:
    with pytest.raises(Invalid):
        services.normalise_phone(raw, region=CN)


def test_number_variants_cover_what_a_pbx_reports() -> None:
    assert services.number_variants("+8613800138000") == ("+8613800138000", "8613800138000", "13800138000")
    assert services.number_variants("+861065529988")[-1] == "01065529988"  # with the trunk prefix


def test_contact_is_found_by_any_spelling_of_its_phone(engine: Engine) -> None:
    with session_scope(engine) as s:
        created = services.create_contact(
            s,
            fields=services.ContactFields(
                name="Wang Fang",
                company="ACME",
                email="wf@example.com",
                phones=["138 0013 8000"],
                tags=["vip"],
            ),
            owner_id=None,
            region=CN,
        )
    assert created.phones == ["+8613800138000"] and created.tags == ["vip"]
    with Session(engine) as s:
        for spelling in ("13800138000", "+8613800138000", "0086 138 0013 8000"):
            found = services.find_by_phone(s, number=spelling, region=CN)
            assert found is not None and found.id == created.id
        assert services.find_by_phone(s, number="13900139000", region=CN) is None
        assert services.find_by_phone(s, number="not a number", region=CN) is None


def test_a_phone_belongs_to_one_contact_only(engine: Engine) -> None:
    with session_scope(engine) as s:
        services.create_contact(
            s, fields=services.ContactFields(name="A", phones=["13800138000"]), owner_id=None, region=CN
        )
    with pytest.raises(Conflict), session_scope(engine) as s:
        services.create_contact(
            s, fields=services.ContactFields(name="B", phones=["+8613800138000"]), owner_id=None, region=CN
        )
    with Session(engine) as s:
        assert s.exec(select(Contact).where(col(Contact.name) == "B")).first() is None
    # The database itself refuses a second row for the number (the unique index the lookup uses).
    with pytest.raises(IntegrityError), session_scope(engine) as s:
        other = Contact(name="C")
        s.add(other)
        s.flush()
        s.add(ContactPhone(contact_id=other.id or 0, number="+8613800138000"))
        s.flush()


def test_tags_are_replaced_deduplicated_and_shared(engine: Engine) -> None:
    with session_scope(engine) as s:
        a = services.create_contact(s, fields=services.ContactFields(name="A"), owner_id=None, region=CN)
        b = services.create_contact(s, fields=services.ContactFields(name="B"), owner_id=None, region=CN)
        assert services.set_tags(s, contact_id=a.id or 0, tags=["VIP", " vip ", "call  back", ""]) == [
            "call back",
            "VIP",
        ]
        services.set_tags(s, contact_id=b.id or 0, tags=["vip"])
        services.set_tags(s, contact_id=a.id or 0, tags=["new"])
    with Session(engine) as s:
        assert services.get_contact(s, contact_id=a.id or 0).tags == ["new"]
        assert services.get_contact(s, contact_id=b.id or 0).tags == ["VIP"]
        assert services.list_tags(s) == ["call back", "new", "VIP"]
    with pytest.raises(Invalid), session_scope(engine) as s:
        services.set_tags(s, contact_id=a.id or 0, tags=[f"t{i}" for i in range(services.MAX_TAGS + 1)])


def test_notes_keep_author_and_time_newest_first(engine: Engine) -> None:
    user_id, _ = _agent(engine, "ann", "1001")
    with session_scope(engine) as s:
        c = services.create_contact(s, fields=services.ContactFields(name="A"), owner_id=user_id, region=CN)
        services.add_note(s, contact_id=c.id or 0, author_id=user_id, body="first")
        services.add_note(s, contact_id=c.id or 0, author_id=user_id, body="second")
        with pytest.raises(Invalid):
            services.add_note(s, contact_id=c.id or 0, author_id=user_id, body="   ")
        with pytest.raises(NotFound):
            services.add_note(s, contact_id=9999, author_id=user_id, body="x")
    with Session(engine) as s:
        notes = services.contact_notes(s, contact_id=c.id or 0)
    assert [n["body"] for n in notes] == ["second", "first"]
    assert notes[0]["author"] == "ann" and notes[0]["at"] >= notes[1]["at"] > 0


def test_contact_calls_join_calls_on_every_spelling_of_every_phone(
    engine: Engine, redis_client: redis.Redis
) -> None:
    _, agent = _agent(engine, "ann", "1001")
    task = sim.campaign(engine, name="Spring promo")
    outbound = sim.connect(
        engine, redis_client, agent=agent, number="+8613800138000", campaign_id=task, publish=False
    )
    sim.hang_up(engine, redis_client, agent=agent, call_id=outbound, talk_s=30)
    # A manual call that the PBX reported with national digits, to the contact's second phone.
    with session_scope(engine) as s:
        s.add(Call(id="manual-1", number="01065529988", direction="manual", agent_id=agent, created_at=1e10))
        s.add(Call(id="other", number="+8613900139000", agent_id=agent))
        c = services.create_contact(
            s,
            fields=services.ContactFields(name="A", phones=["13800138000", "+861065529988"]),
            owner_id=None,
            region=CN,
        )
    with Session(engine) as s:
        calls = services.contact_calls(s, contact_id=c.id or 0)
    assert [x["call_id"] for x in calls] == ["manual-1", outbound]
    assert calls[1]["campaign_name"] == "Spring promo" and calls[1]["talk_s"] == 30.0
    assert calls[1]["extension"] == "1001" and calls[0]["campaign_name"] is None


def test_pop_context_prefills_a_new_contact_from_the_lead(engine: Engine) -> None:
    with Session(engine) as s:
        ctx = services.pop_context(
            s,
            number="+8613800138000",
            region=CN,
            lead_fields={"姓名": "李雷", "公司": "韩梅梅贸易", "plan": "Gold"},
        )
    assert ctx["contact"]["id"] is None
    assert (ctx["contact"]["name"], ctx["contact"]["company"]) == ("李雷", "韩梅梅贸易")
    assert ctx["contact"]["phones"] == ["+8613800138000"] and ctx["calls"] == [] and ctx["notes"] == []


def test_one_click_save_upserts_contact_tags_note_and_disposition(
    engine: Engine, redis_client: redis.Redis
) -> None:
    user_id, agent = _agent(engine, "ann", "1001")
    _, other_agent = _agent(engine, "bob", "1002")
    task = sim.campaign(engine, dispositions=["interested", "call back"])
    first = sim.connect(
        engine, redis_client, agent=agent, number="+8613800138000", campaign_id=task, publish=False
    )
    outcome = services.CallOutcome(
        contact=services.ContactFields(name="Wang", company="ACME", email="w@example.com", tags=["vip"]),
        disposition="interested",
        note="wants the gold plan",
    )
    with session_scope(engine) as s:
        saved = services.save_call_outcome(
            s, call_id=first, agent_id=agent, user_id=user_id, outcome=outcome, region=CN
        )
    assert saved["disposition"] == "interested" and saved["contact"]["owner_id"] == user_id
    assert saved["note"]["body"] == "wants the gold plan" and saved["note"]["author"] == "ann"

    # Saving again (say, after the call ended) updates the same contact, never a second one.
    with session_scope(engine) as s:
        again = services.save_call_outcome(
            s,
            call_id=first,
            agent_id=agent,
            user_id=user_id,
            outcome=services.CallOutcome(
                contact=services.ContactFields(
                    name="Wang Fang", company="ACME", email="", tags=["vip", "gold"]
                ),
                disposition="call back",
            ),
            region=CN,
        )
    assert again["contact"]["id"] == saved["contact"]["id"] and again["note"] is None
    with Session(engine) as s:
        assert s.exec(select(Contact)).all().__len__() == 1
        call = s.get(Call, first)
        assert call is not None and call.disposition == "call back"
        assert len(s.exec(select(Note)).all()) == 1
        # What the next pop of the number shows: the saved contact, its note, this call and its outcome.
        ctx = services.pop_context(s, number="13800138000", region=CN, exclude_call_id="next-call")
    assert ctx["contact"]["name"] == "Wang Fang" and ctx["contact"]["tags"] == ["gold", "vip"]
    assert [n["body"] for n in ctx["notes"]] == ["wants the gold plan"]
    assert [(c["call_id"], c["disposition"]) for c in ctx["calls"]] == [(first, "call back")]

    with pytest.raises(NotFound), session_scope(engine) as s:
        services.save_call_outcome(
            s, call_id=first, agent_id=other_agent, user_id=0, outcome=outcome, region=CN
        )
    with pytest.raises(Invalid), session_scope(engine) as s:
        services.save_call_outcome(
            s,
            call_id=first,
            agent_id=agent,
            user_id=user_id,
            outcome=services.CallOutcome(contact=services.ContactFields(), disposition="made up"),
            region=CN,
        )


def test_manual_call_offers_the_default_outcomes(engine: Engine, redis_client: redis.Redis) -> None:
    user_id, agent = _agent(engine, "ann", "1001")
    call_id = sim.connect(engine, redis_client, agent=agent, number="13800138000", publish=False)
    with session_scope(engine) as s:
        saved = services.save_call_outcome(
            s,
            call_id=call_id,
            agent_id=agent,
            user_id=user_id,
            outcome=services.CallOutcome(
                contact=services.ContactFields(name="Li"), disposition="wrong number"
            ),
            region=CN,
        )
    # The PBX reported national digits; the contact's phone is stored in E.164.
    assert saved["contact"]["phones"] == ["+8613800138000"] and saved["disposition"] == "wrong number"
