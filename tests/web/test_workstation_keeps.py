"""The workstation keeps every outcome, in real Chromium: a draft survives a reload and the next call,
wrap-up counts down with "extend" and holds for the outcome, a not-ready reason reaches the monitor,
numbers and times are shown for people."""

from __future__ import annotations

import re

import phonenumbers
import pytest
from playwright.sync_api import expect
from sqlalchemy import text
from sqlmodel import Session

from callcenter.models import Call
from tests.web import sim
from tests.web.conftest import LiveServer, Pages

pytestmark = pytest.mark.browser

FIRST = "+8613964221019"
SECOND = "+8613800138000"


def test_an_unsaved_draft_survives_a_reload_and_the_next_call(pages: Pages, live_server: LiveServer) -> None:
    live_server.user("ann", ["agent"], extension="1001")
    ann = sim.agent_id(live_server.engine, "1001")
    task = sim.campaign(live_server.engine, name="Renewals", dispositions=["有意向", "无意向"])
    page = pages.open("ann", "/workstation")
    page.click("#btn-ready")
    expect(page.locator("#agent-state")).to_have_attribute("data-state", "ready")
    first = sim.connect(live_server.engine, live_server.redis, agent=ann, number=FIRST, campaign_id=task)
    expect(page.locator("#call-panel")).to_have_attribute("data-call-id", first)
    expect(page.locator("#call-number")).to_have_text("+86 139 6422 1019")
    page.fill("#contact-company", "ACME")
    page.get_by_text("有意向", exact=True).click()
    page.fill("#note", "wants the yearly plan")

    page.reload()  # the draft comes back on the same call
    expect(page.locator("#call-panel")).to_have_attribute("data-call-id", first)
    expect(page.locator("#note")).to_have_value("wants the yearly plan")
    expect(page.locator("#contact-company")).to_have_value("ACME")
    expect(page.locator('input[name=disposition][value="有意向"]')).to_be_checked()
    expect(page.locator("#save-status")).to_have_attribute("data-state", "draft")

    # Another browser has no copy of its own: what it shows comes from the server.
    other = pages.open("ann", "/workstation")
    expect(other.locator("#note")).to_have_value("wants the yearly plan")

    sim.hang_up(live_server.engine, live_server.redis, agent=ann, call_id=first)
    expect(page.locator("#call-panel")).to_have_attribute("data-phase", "wrap_up")
    page.click("#btn-ready")  # the agent goes on without saving: the next call takes the panel
    expect(page.locator("#agent-state")).to_have_attribute("data-state", "ready")
    second = sim.connect(live_server.engine, live_server.redis, agent=ann, number=SECOND, campaign_id=task)
    expect(page.locator("#call-panel")).to_have_attribute("data-call-id", second)
    expect(page.locator("#note")).to_have_value("")
    row = page.locator(f'#drafts-list tr[data-call-id="{first}"]')
    expect(row).to_be_visible()
    expect(row.locator(".note")).to_have_text("wants the yearly plan")
    expect(row.locator(".mono")).to_have_text("+86 139 6422 1019")

    page.reload()  # still there after a reload during the next call
    row = page.locator(f'#drafts-list tr[data-call-id="{first}"]')
    expect(row.locator(".disposition")).to_have_text("有意向")
    row.locator(".draft-save").click()
    expect(page.locator("#drafts")).to_be_hidden()
    with Session(live_server.engine) as s:
        call = s.get(Call, first)
        assert call is not None and call.disposition == "有意向"


def test_wrap_up_counts_down_extends_and_holds_for_the_outcome(pages: Pages, live_server: LiveServer) -> None:
    live_server.user("ann", ["agent"], extension="1001")
    ann = sim.agent_id(live_server.engine, "1001")
    task = sim.campaign(live_server.engine, name="Renewals", dispositions=["ok"])
    with live_server.engine.begin() as c:
        c.execute(text("UPDATE campaign SET wrap_up_s = 20 WHERE id = :t"), {"t": task})
    page = pages.open("ann", "/workstation")
    call_id = sim.connect(live_server.engine, live_server.redis, agent=ann, number=FIRST, campaign_id=task)
    expect(page.locator("#call-panel")).to_have_attribute("data-call-id", call_id)
    expect(page.locator("#wrap-box")).to_be_hidden()
    sim.hang_up(live_server.engine, live_server.redis, agent=ann, call_id=call_id)
    box = page.locator("#wrap-box")
    expect(box).to_be_visible()
    expect(page.locator("#wrap-left")).to_have_text(re.compile(r"^00:(1\d|20)$"))
    page.click("#wrap-extend")
    expect(page.locator("#wrap-left")).to_have_text(re.compile(r"^00:(4\d|50)$"))

    with live_server.engine.begin() as c:  # the time is up (as if 10 minutes went by)
        c.execute(text("UPDATE agent SET state_since = state_since - 600 WHERE id = :a"), {"a": ann})
    page.reload()
    expect(page.locator("#wrap-left")).to_have_text("00:00")
    expect(box).to_have_attribute("data-held", "1")
    expect(page.locator("#wrap-hint")).to_contain_text("Save the outcome")
    page.get_by_text("ok", exact=True).click()
    page.click("#save-call")
    expect(page.locator("#save-status")).to_have_attribute("data-state", "saved")
    expect(box).to_have_attribute("data-held", "0")
    expect(page.locator("#wrap-hint")).to_contain_text("Outcome saved")


def test_a_not_ready_reason_is_chosen_by_the_agent_and_shown_on_the_monitor(
    pages: Pages, live_server: LiveServer
) -> None:
    live_server.user("ann", ["agent"], extension="1001")
    live_server.user("sue", ["supervisor"])
    ann = sim.agent_id(live_server.engine, "1001")
    page = pages.open("ann", "/workstation")
    expect(page.locator("#agent-state")).to_have_attribute("data-state", "offline")
    expect(page.locator("#idle-text")).to_contain_text("You are offline")
    expect(page.locator("#idle-text")).not_to_contain_text("Waiting for the next call")
    monitor = pages.open("sue", "/monitor")
    row = monitor.locator(f'#agents-grid tr[data-agent-id="{ann}"]')

    page.click("#btn-not-ready")
    page.locator('#reason-menu button[data-reason="lunch"]').click()
    expect(page.locator("#agent-state")).to_have_text("Not ready · Lunch")
    expect(page.locator("#idle-text")).to_contain_text("Not ready")
    expect(row).to_have_attribute("data-reason", "lunch")
    expect(row.locator(".state .pill:not(.listened)")).to_have_text("Not ready · Lunch")
    page.click("#btn-ready")
    expect(row.locator(".state .pill:not(.listened)")).to_have_text("Ready")
    expect(page.locator("#idle-text")).to_contain_text("Waiting for the next call")


def test_my_phone_is_prefilled_from_the_account_and_saved_on_change(
    pages: Pages, live_server: LiveServer
) -> None:
    live_server.user("sue", ["supervisor"])
    page = pages.open("sue", "/monitor")
    field = page.locator("#spy-extension")
    expect(field).to_have_value("")
    assert field.get_attribute("placeholder") is None
    field.fill("1900")
    field.press("Enter")
    field.blur()
    expect(page.locator("#spy-ext-status")).to_have_attribute("data-state", "saved")
    page.reload()
    expect(page.locator("#spy-extension")).to_have_value("1900")


def test_numbers_are_formatted_as_libphonenumber_does(pages: Pages, live_server: LiveServer) -> None:
    live_server.user("ann", ["agent"], extension="1001")
    page = pages.open("ann", "/workstation")
    numbers = [
        "+8613964221019",
        "+861012345678",
        "+8657188887777",
        "+12015550123",
        "+447400123456",
        "+442079460958",
        "+85251234567",
        "+6581234567",
        "+8675512345678",
    ]
    shown = page.evaluate("(ns) => ns.map((n) => CC.fmtPhone(n))", numbers)
    expected = [
        phonenumbers.format_number(phonenumbers.parse(n), phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        for n in numbers
    ]
    assert shown == expected
    assert page.evaluate("() => CC.fmtPhone('1003')") == "1003"  # an extension stays as it is
