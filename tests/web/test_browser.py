"""End to end in real Chromium against a live server. The dialer's side is simulated exactly as the
dialer does it (rows, agent moves, `Notifier` messages; see tests/web/sim.py). Every wait is on a DOM
condition."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect
from sqlmodel import Session

from callcenter.models import Call
from tests.web import sim
from tests.web.conftest import LiveServer, Pages

pytestmark = pytest.mark.browser

NUMBER = "+8613800138000"


def test_agent_goes_ready_and_sees_time_in_state(pages: Pages, live_server: LiveServer) -> None:
    live_server.user("ann", ["agent"], extension="1001")
    page = pages.open("ann", "/workstation")
    expect(page.locator("#extension")).to_have_text("1001")
    expect(page.locator("#agent-state")).to_have_attribute("data-state", "offline")
    page.click("#btn-ready")
    expect(page.locator("#agent-state")).to_have_text("Ready")
    expect(page.locator("#btn-ready")).to_have_class(re.compile(r"\bcurrent\b"))
    expect(page.locator("#state-timer")).to_have_text(re.compile(r"^00:0[1-9]$"))  # it counts
    page.click("#btn-away")
    expect(page.locator("#agent-state")).to_have_attribute("data-state", "away")
    expect(page.locator("#c-calls")).to_have_text("0")


def test_a_missed_call_sets_the_agent_not_ready_and_says_why(pages: Pages, live_server: LiveServer) -> None:
    live_server.user("ann", ["agent"], extension="1001")
    ann = sim.agent_id(live_server.engine, "1001")
    page = pages.open("ann", "/workstation")
    page.click("#btn-ready")
    expect(page.locator("#agent-state")).to_have_attribute("data-state", "ready")
    sim.miss(live_server.engine, live_server.redis, ann)
    expect(page.locator("#agent-state")).to_have_attribute("data-state", "not_ready")
    expect(page.locator("#state-error")).to_be_visible()
    expect(page.locator("#state-error")).to_contain_text("You missed a call")
    page.reload()  # the reason is kept on the agent's row until their next move
    expect(page.locator("#state-error")).to_contain_text("You missed a call")
    page.click("#btn-ready")  # back at the desk
    expect(page.locator("#agent-state")).to_have_attribute("data-state", "ready")
    expect(page.locator("#state-error")).to_be_hidden()


def test_pop_save_and_the_next_pop_of_the_number_shows_what_was_saved(
    pages: Pages, live_server: LiveServer
) -> None:
    live_server.user("ann", ["agent"], extension="1001")
    ann = sim.agent_id(live_server.engine, "1001")
    task = sim.campaign(live_server.engine, name="Renewals", dispositions=["有意向", "无意向", "再联系"])
    lead = sim.lead(
        live_server.engine, campaign_id=task, number=NUMBER, fields={"姓名": "韩梅梅", "plan": "Gold"}
    )
    page = pages.open("ann", "/workstation")
    page.click("#btn-ready")
    expect(page.locator("#agent-state")).to_have_attribute("data-state", "ready")

    first = sim.connect(
        live_server.engine, live_server.redis, agent=ann, number=NUMBER, campaign_id=task, lead_id=lead
    )
    panel = page.locator("#call-panel")
    expect(panel).to_be_visible()
    expect(panel).to_have_attribute("data-call-id", first)
    expect(page.locator("#call-number")).to_have_attribute("data-number", NUMBER)
    expect(page.locator("#call-number")).to_have_text("+86 138 0013 8000")
    expect(page.locator("#call-task")).to_have_text("Renewals")
    expect(page.locator('#lead-fields tr[data-lead-field="plan"] td')).to_have_text("Gold")
    expect(page.locator("#contact-name")).to_have_value("韩梅梅")  # a new record, pre-filled from the list
    expect(page.locator("#contact-status")).to_have_attribute("data-known", "0")
    expect(page.locator("#agent-state")).to_have_attribute("data-state", "on_call")
    expect(page.locator("#btn-ready")).to_be_disabled()

    page.fill("#contact-company", "ACME")
    page.get_by_text("有意向", exact=True).click()
    page.fill("#tag-input", "vip")
    page.press("#tag-input", "Enter")
    expect(page.locator('#contact-tags .chip[data-tag="vip"]')).to_be_visible()
    page.fill("#note", "Renews in December")
    page.click("#save-call")
    expect(page.locator("#save-status")).to_have_attribute("data-state", "saved")
    expect(page.locator("#history-notes li")).to_have_count(1)
    expect(page.locator("#contact-status")).to_have_attribute("data-known", "1")
    with Session(live_server.engine) as s:
        call = s.get(Call, first)
        assert call is not None and call.disposition == "有意向"

    sim.hang_up(live_server.engine, live_server.redis, agent=ann, call_id=first, talk_s=65)
    expect(panel).to_have_attribute("data-phase", "wrap_up")
    expect(page.locator("#call-status")).to_have_text("Wrap-up")
    expect(page.locator("#call-timer")).to_have_text("01:05")
    expect(page.locator("#c-calls")).to_have_text("1")
    expect(page.locator("#c-talk")).to_have_text("01:05")
    page.click("#close-call")
    expect(page.locator("#idle")).to_be_visible()
    page.click("#btn-ready")
    expect(page.locator("#agent-state")).to_have_attribute("data-state", "ready")

    lead2 = sim.lead(live_server.engine, campaign_id=task, number=NUMBER, fields={"plan": "Platinum"})
    second = sim.connect(
        live_server.engine, live_server.redis, agent=ann, number=NUMBER, campaign_id=task, lead_id=lead2
    )
    expect(panel).to_have_attribute("data-call-id", second)
    expect(page.locator("#contact-status")).to_have_attribute("data-known", "1")
    expect(page.locator("#contact-name")).to_have_value("韩梅梅")
    expect(page.locator("#contact-company")).to_have_value("ACME")
    expect(page.locator('#contact-tags .chip[data-tag="vip"]')).to_be_visible()
    expect(page.locator('#lead-fields tr[data-lead-field="plan"] td')).to_have_text("Platinum")
    expect(page.locator("#history-notes li .note-body")).to_have_text(["Renews in December"])
    expect(page.locator(f'#history-calls tr[data-call-id="{first}"] .disposition')).to_have_text("有意向")
    expect(page.locator("#note")).to_have_value("")


def test_reload_mid_call_shows_the_call_panel_again(pages: Pages, live_server: LiveServer) -> None:
    live_server.user("ann", ["agent"], extension="1001")
    ann = sim.agent_id(live_server.engine, "1001")
    task = sim.campaign(live_server.engine, name="Renewals")
    lead = sim.lead(live_server.engine, campaign_id=task, number=NUMBER, fields={"plan": "Gold"})
    page = pages.open("ann", "/workstation")
    call_id = sim.connect(
        live_server.engine, live_server.redis, agent=ann, number=NUMBER, campaign_id=task, lead_id=lead
    )
    expect(page.locator("#call-panel")).to_have_attribute("data-call-id", call_id)
    page.fill("#note", "typed before the reload")

    page.reload()
    expect(page.locator("#live-status")).to_have_attribute("data-live", "up")
    panel = page.locator("#call-panel")
    expect(panel).to_be_visible()
    expect(panel).to_have_attribute("data-call-id", call_id)
    expect(panel).to_have_attribute("data-phase", "on_call")
    expect(page.locator('#lead-fields tr[data-lead-field="plan"] td')).to_have_text("Gold")
    expect(page.locator("#agent-state")).to_have_attribute("data-state", "on_call")

    sim.hang_up(live_server.engine, live_server.redis, agent=ann, call_id=call_id)
    expect(panel).to_have_attribute("data-phase", "wrap_up")
    page.reload()
    expect(page.locator("#call-panel")).to_have_attribute("data-phase", "wrap_up")
    expect(page.locator("#agent-state")).to_have_attribute("data-state", "wrap_up")


def test_a_lost_bus_link_resends_state_and_keeps_what_the_agent_typed(
    pages: Pages, live_server: LiveServer
) -> None:
    live_server.user("ann", ["agent"], extension="1001")
    ann = sim.agent_id(live_server.engine, "1001")
    page = pages.open("ann", "/workstation")
    call_id = sim.connect(live_server.engine, live_server.redis, agent=ann, number=NUMBER)
    expect(page.locator("#call-panel")).to_have_attribute("data-call-id", call_id)
    page.fill("#note", "half-typed note")

    assert live_server.redis.client_kill_filter(_type="pubsub") >= 1
    # (a function: Playwright evaluates a bare expression with eval(), which the CSP forbids)
    page.wait_for_function("() => CC.log.filter(m => m.type === 'hello').length >= 2")  # the web's resend
    expect(page.locator("#note")).to_have_value("half-typed note")
    sim.hang_up(live_server.engine, live_server.redis, agent=ann, call_id=call_id)
    expect(page.locator("#call-panel")).to_have_attribute("data-phase", "wrap_up")
    expect(page.locator("#note")).to_have_value("half-typed note")


def test_an_agents_browser_never_shows_another_agents_pop(pages: Pages, live_server: LiveServer) -> None:
    live_server.user("ann", ["agent"], extension="1001")
    live_server.user("bob", ["agent"], extension="1002")
    ann, bob = sim.agent_id(live_server.engine, "1001"), sim.agent_id(live_server.engine, "1002")
    ann_page = pages.open("ann", "/workstation")
    bob_page = pages.open("bob", "/workstation")

    ann_call = sim.connect(live_server.engine, live_server.redis, agent=ann, number=NUMBER)
    expect(ann_page.locator("#call-panel")).to_have_attribute("data-call-id", ann_call)
    # Bob's own pop is published after Ann's: once it is on his screen, Ann's would have been too.
    bob_call = sim.connect(live_server.engine, live_server.redis, agent=bob, number="+8613900139000")
    expect(bob_page.locator("#call-panel")).to_have_attribute("data-call-id", bob_call)
    expect(bob_page.locator("#call-number")).to_have_attribute("data-number", "+8613900139000")

    def seen(page: Page) -> set[str]:
        return set(page.evaluate("CC.log.map(m => JSON.stringify(m))"))

    bob_seen = "\n".join(seen(bob_page))
    assert ann_call not in bob_seen and NUMBER not in bob_seen and f'"agent_id":{ann}' not in bob_seen
    ann_seen = "\n".join(seen(ann_page))
    assert bob_call not in ann_seen and "+8613900139000" not in ann_seen


def test_manual_call_pops_with_a_tone_and_a_notification(pages: Pages, live_server: LiveServer) -> None:
    live_server.user("ann", ["agent"], extension="1001")
    ann = sim.agent_id(live_server.engine, "1001")
    page = pages.open("ann", "/workstation", permissions=["notifications"])
    page.evaluate(
        """() => {
            window.__tones = 0;
            window.__notes = [];
            const osc = AudioContext.prototype.createOscillator;
            AudioContext.prototype.createOscillator = function () {
                window.__tones++;
                return osc.call(this);
            };
            const N = window.Notification;
            window.Notification = function (title, opts) {
                window.__notes.push(title);
                return new N(title, opts);
            };
            window.Notification.permission = N.permission;
        }"""
    )
    page.click("#btn-not-ready")  # a click: what lets a browser play sound
    page.locator('#reason-menu button[data-reason="break"]').click()  # Not ready asks why
    expect(page.locator("#agent-state")).to_have_attribute("data-state", "not_ready")
    call_id = sim.connect(live_server.engine, live_server.redis, agent=ann, number="13800138000")
    expect(page.locator("#call-panel")).to_have_attribute("data-call-id", call_id)
    expect(page.locator("#call-direction")).to_have_text("Manual call")
    expect(page.locator("#call-task")).to_have_text("")
    expect(page.locator("#dispositions .choice")).to_have_count(4)  # the default outcomes
    page.wait_for_function("() => window.__tones >= 2 && window.__notes.length === 1")
    assert page.evaluate("window.__notes[0]").endswith("13800138000")


def test_supervisor_grid_updates_by_push(pages: Pages, live_server: LiveServer) -> None:
    live_server.user("ann", ["agent"], extension="1001")
    live_server.user("bob", ["agent"], extension="1002")
    live_server.user("sue", ["supervisor"])
    ann = sim.agent_id(live_server.engine, "1001")
    task = sim.campaign(live_server.engine, name="Renewals")
    page = pages.open("sue", "/monitor")
    expect(page.locator("#agents-grid tbody tr")).to_have_count(2)
    row = page.locator(f'#agents-grid tr[data-agent-id="{ann}"]')
    expect(row.locator(".state .pill:not(.listened)")).to_have_text("Offline")
    page.evaluate("window.__same_page = true")  # survives only if nothing reloads the page

    sim.set_ready(live_server.engine, live_server.redis, ann)
    expect(row).to_have_attribute("data-state", "ready")
    expect(row.locator(".state .pill:not(.listened)")).to_have_text("Ready")
    expect(page.locator('#agent-summary [data-summary="ready"]')).to_have_text("Ready 1")

    sim.miss(live_server.engine, live_server.redis, ann)  # ann's phone rang unanswered
    expect(row).to_have_attribute("data-state", "not_ready")
    expect(row.locator(".state .pill:not(.listened)")).to_have_text("Not ready · missed a call")
    sim.set_ready(live_server.engine, live_server.redis, ann)
    expect(row.locator(".state .pill:not(.listened)")).to_have_text("Ready")

    sim.connect(live_server.engine, live_server.redis, agent=ann, number=NUMBER, campaign_id=task)
    expect(row).to_have_attribute("data-state", "on_call")
    expect(row.locator(".call")).to_have_text("+86 138 0013 8000")  # formatted for people
    expect(row.locator(".task")).to_have_text("Renewals")
    expect(row.locator(".in-state")).to_have_text(re.compile(r"^00:0\d$"))
    assert page.evaluate("window.__same_page") is True
    expect(page.locator(f"#task-{task} .task-state")).to_have_text("Running")  # the task part too


def test_admin_creates_a_skill_group_and_an_agent(pages: Pages, live_server: LiveServer) -> None:
    live_server.user("root", ["admin"])
    live_server.user("carol", ["agent"])
    page = pages.open("root", "/admin/skill-groups")

    def ready(row_selector: str) -> None:
        """The page reloaded after a save: the row is there and the page's script is live."""
        expect(page.locator(row_selector)).to_be_visible()
        expect(page.locator("body")).to_have_attribute("data-ready", "1")

    page.click("button[data-open=create-group]")
    page.fill("#create-group input[name=name]", "Sales East")
    page.click("#create-group button[type=submit]")
    ready('#groups-table tr[data-group="Sales East"]')

    page.goto("/admin/agents")
    expect(page.locator("body")).to_have_attribute("data-ready", "1")
    page.click("button[data-open=create-agent]")
    page.select_option("#create-agent select[name=user_id]", label="carol")
    page.fill("#create-agent input[name=extension]", "1009")
    page.check("#create-agent input[name=skill_group_ids]")
    page.click("#create-agent button[type=submit]")
    row = page.locator('#agents-table tr[data-extension="1009"]')
    ready('#agents-table tr[data-extension="1009"]')
    expect(row).to_contain_text("Sales East")

    row.locator("button[data-edit]").click()
    page.fill("#edit-agent input[name=extension]", "1001")
    page.click("#edit-agent button[type=submit]")
    ready('#agents-table tr[data-extension="1001"]')
    expect(page.locator('#agents-table tr[data-extension="1001"]')).to_contain_text("carol")

    # A refused change says why, next to the form.
    pages.allow("status of 409")
    live_server.user("dave", ["agent"], extension="1002")
    page.reload()
    ready('#agents-table tr[data-extension="1002"]')
    page.locator('#agents-table tr[data-extension="1001"] button[data-edit]').click()
    page.fill("#edit-agent input[name=extension]", "1002")
    page.click("#edit-agent button[type=submit]")
    expect(page.locator("#edit-agent .form-error")).to_contain_text("already assigned")
