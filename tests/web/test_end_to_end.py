"""End to end in real Chromium with the real dialer process: web (a live server) and dialer (a
`callcenter dialer` subprocess) share only the database and the session's real Redis. Customers on the
simulated PBX are scripted (`CALLCENTER_SIM_SCRIPT`), so who answers, and when, is known. Every wait
is on a DOM condition or on a message the dialer sends; there is no fixed sleep."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import select

from callcenter.db import session_scope
from callcenter.models import Agent, Call, Campaign, CampaignState, Lead, PacingMode
from callcenter.stats import snapshot_from_db
from tests.web.conftest import DialerProcess, LiveServer, Pages

pytestmark = [pytest.mark.browser, pytest.mark.processes]

A = "+8613800000001"  # called twice, by two tasks
B = "+8613800000002"
C = "+8613800000003"


def create_task(
    page: Page, tmp_path: Path, *, name: str, csv: str, wrap_up_s: int, dispositions: str = ""
) -> int:
    """Fill the create form as an admin does and wait until the task is waiting for its import."""
    path = tmp_path / f"{name}.csv"
    path.write_text(csv, encoding="utf-8")
    page.goto("/tasks/new")
    expect(page.locator("body")).to_have_attribute("data-ready", "1")
    page.fill("#task-form input[name=name]", name)
    page.select_option("#task-form select[name=skill_group_id]", label="Sales")
    page.set_input_files("#task-form input[name=file]", str(path))
    page.fill("#task-form input[name=wrap_up_s]", str(wrap_up_s))
    page.fill("#task-form input[name=window_start]", "00:00")  # whatever the hour the test runs at
    page.fill("#task-form input[name=window_end]", "24:00")
    if dispositions:
        page.fill("#task-form textarea[name=dispositions]", dispositions)
    page.click("#create-task")
    expect(page.locator("#progress")).to_have_attribute("data-state", "import")
    return int(page.locator("#progress").get_attribute("data-task-id") or 0)


def start_from_list(page: Page, task_id: int) -> None:
    page.goto("/tasks")
    row = page.locator(f'#tasks-table tr[data-task-id="{task_id}"]')
    row.locator('button[data-action="start"]').click()
    expect(row).to_have_attribute("data-state", "running")


def calls_of(engine: Engine, task_id: int) -> int:
    with session_scope(engine) as s:
        return int(s.exec(select(func.count()).select_from(Call).where(Call.campaign_id == task_id)).one())


def seen(page: Page) -> str:
    """Every message this browser received on its socket."""
    return "\n".join(page.evaluate("CC.log.map(m => JSON.stringify(m))"))


def test_task_from_the_admin_page_pops_on_the_agents_screen_and_obeys_the_supervisor(
    pages: Pages, live_server: LiveServer, dialer: DialerProcess, tmp_path: Path
) -> None:
    live_server.user("root", ["admin"])
    live_server.user("sue", ["supervisor"])
    group = live_server.skill_group("Sales")
    live_server.user("ann", ["agent"], extension="1001", skill_group_ids=[group])
    live_server.user("bob", ["agent"], extension="1002", skill_group_ids=[group])
    dialer.start(
        {
            A: {"outcome": "human", "ring_s": 0.3, "talk_s": 4},
            B: {"outcome": "human", "ring_s": 0.3, "talk_s": 120},
            C: {"outcome": "human", "ring_s": 0.3, "talk_s": 120},
        }
    )

    # The admin creates the task from a list with an extra column; a real rq worker imports it.
    admin = pages.open("root", "/tasks")
    first = create_task(
        admin,
        tmp_path,
        name="Renewals",
        csv=f"phone,name,会员等级\n{A[3:]},韩梅梅,VIP3\n999,Nobody,x\n",
        wrap_up_s=0,
        dispositions="有意向\n无意向",
    )
    live_server.run_imports()
    expect(admin.locator("#import-summary")).to_have_attribute("data-imported", "1")
    expect(admin.locator("#import-report")).to_be_visible()

    # Ann goes ready; Bob is signed in but not ready.
    ann = pages.open("ann", "/workstation")
    ann.click("#btn-ready")
    expect(ann.locator("#agent-state")).to_have_attribute("data-state", "ready")
    bob = pages.open("bob", "/workstation")
    expect(bob.locator("#agent-state")).to_have_attribute("data-state", "offline")

    # The supervisor starts it from the task list and watches it on the monitor.
    sue = pages.open("sue", "/tasks")
    monitor = pages.open("sue", "/monitor")
    start_from_list(sue, first)

    # Ann's screen pops with the lead's own columns.
    panel = ann.locator("#call-panel")
    expect(panel).to_be_visible()
    expect(panel).to_have_attribute("data-phase", "on_call")
    expect(ann.locator("#call-number")).to_have_attribute("data-number", A)
    expect(ann.locator("#call-task")).to_have_text("Renewals")
    expect(ann.locator('#lead-fields tr[data-lead-field="会员等级"] td')).to_have_text("VIP3")
    expect(ann.locator("#contact-name")).to_have_value("韩梅梅")
    expect(ann.locator("#contact-status")).to_have_attribute("data-known", "0")
    first_call = panel.get_attribute("data-call-id")
    card = monitor.locator(f"#task-{first}")
    expect(card.locator(".pill.sim")).to_have_text("Simulated PBX")
    expect(card.locator('.kpi[data-counter="connected"] .value')).to_have_text("1")

    # She records an outcome and a tag, and saves with one click (the customer hangs up meanwhile).
    ann.get_by_text("有意向", exact=True).click()
    ann.fill("#tag-input", "vip")
    ann.press("#tag-input", "Enter")
    ann.fill("#note", "Wants the yearly plan")
    ann.click("#save-call")
    expect(ann.locator("#save-status")).to_have_attribute("data-state", "saved")
    expect(panel).to_have_attribute("data-phase", "wrap_up")
    # Nothing left to dial: the dialer stops the task by itself, and the monitor drops its card.
    expect(card).to_have_count(0, timeout=20_000)
    expect(ann.locator("#agent-state")).to_have_attribute("data-state", "ready")  # no wrap-up time

    # A second task calls the same number: the pop shows what Ann saved.
    second = create_task(
        admin,
        tmp_path,
        name="Upgrade",
        csv=f"phone,plan\n{A[3:]},Platinum\n{B[3:]},Silver\n{C[3:]},Bronze\n",
        wrap_up_s=600,
    )
    live_server.run_imports()
    expect(admin.locator("#progress")).to_have_attribute("data-state", "done")
    start_from_list(sue, second)
    expect(panel).not_to_have_attribute("data-call-id", first_call or "")
    expect(panel).to_have_attribute("data-phase", "on_call")
    expect(ann.locator("#call-number")).to_have_attribute("data-number", A)
    expect(ann.locator("#call-task")).to_have_text("Upgrade")
    expect(ann.locator("#contact-status")).to_have_attribute("data-known", "1")
    expect(ann.locator("#contact-name")).to_have_value("韩梅梅")
    expect(ann.locator('#contact-tags .chip[data-tag="vip"]')).to_be_visible()
    expect(ann.locator(f'#history-calls tr[data-call-id="{first_call}"] .disposition')).to_have_text("有意向")
    expect(ann.locator("#history-notes li .note-body")).to_have_text(["Wants the yearly plan"])
    expect(ann.locator('#lead-fields tr[data-lead-field="plan"] td')).to_have_text("Platinum")

    # The supervisor pauses; Bob goes ready, and still no call is placed.
    card = monitor.locator(f"#task-{second}")
    card.locator('button[data-action="pause"]').click()
    expect(card.locator(".task-state")).to_have_text("Paused")
    bob.click("#btn-ready")
    expect(bob.locator("#agent-state")).to_have_attribute("data-state", "ready")
    with session_scope(live_server.engine) as s:
        bob_ready_at = s.exec(select(Agent.state_since).where(Agent.extension == "1002")).one()
    placed = calls_of(live_server.engine, second)
    # The dialer publishes the task's counters every second, after it has handled what came before;
    # two of them stamped after Bob was ready mean it has seen him ready and still placed nothing.
    # A function, not an expression: Playwright evaluates an expression with eval(), which the
    # pages' Content-Security-Policy forbids.
    monitor.wait_for_function(
        f"""() => CC.log.filter(m => m.type === 'task_stats' && m.campaign_id === {second}
                                 && m.state === 'paused' && m.at > {bob_ready_at} + 1).length >= 2"""
    )
    assert calls_of(live_server.engine, second) == placed == 1
    expect(card.locator('.kpi[data-counter="dialled"] .value')).to_have_text("1")
    expect(bob.locator("#call-panel")).to_be_hidden()

    # Resumed, the next number goes to Bob (Ann is in wrap-up).
    card.locator('button[data-action="resume"]').click()
    expect(card.locator(".task-state")).to_have_text("Running")
    bob_panel = bob.locator("#call-panel")
    expect(bob_panel).to_have_attribute("data-phase", "on_call")
    expect(bob.locator("#call-number")).to_have_attribute("data-number", B)
    expect(bob.locator('#lead-fields tr[data-lead-field="plan"] td')).to_have_text("Silver")
    bob_call = bob_panel.get_attribute("data-call-id") or ""

    # The supervisor listens in on Bob's call through the dialer and the simulated PBX.
    bob_id = sim_agent(live_server.engine, "1002")
    row = monitor.locator(f'#agents-grid tr[data-agent-id="{bob_id}"]')
    expect(row).to_have_attribute("data-state", "on_call")
    monitor.fill("#spy-extension", "1900")
    row.locator('button[data-spy="listen"]').click()
    expect(monitor.locator("#spy-status")).to_have_attribute("data-state", "ok")
    expect(monitor.locator("#spy-status")).to_contain_text("1002")

    # An agent's browser never shows another agent's pop.
    ann_seen, bob_seen = seen(ann), seen(bob)
    assert bob_call not in ann_seen and B not in ann_seen
    assert first_call and first_call not in bob_seen and A not in bob_seen
    for page, agent in ((ann, sim_agent(live_server.engine, "1001")), (bob, bob_id)):
        pops = page.evaluate("CC.log.filter(m => m.type === 'screen_pop').map(m => m.agent_id)")
        assert pops and set(pops) == {agent}


def sim_agent(engine: Engine, extension: str) -> int:
    with session_scope(engine) as s:
        agent_id = s.exec(select(Agent.id).where(Agent.extension == extension)).one()
    assert agent_id is not None
    return agent_id


def test_preview_mode_offers_the_lead_with_dial_and_skip(
    pages: Pages, live_server: LiveServer, dialer: DialerProcess
) -> None:
    group = live_server.skill_group("Sales")
    live_server.user("ann", ["agent"], extension="1001", skill_group_ids=[group])
    with session_scope(live_server.engine) as s:
        task = Campaign(
            name="Preview list",
            state=CampaignState.RUNNING.value,
            skill_group_id=group,
            pacing_mode=PacingMode.PREVIEW.value,
            window_start="00:00",
            window_end="24:00",
            started_at=time.time(),
        )
        s.add(task)
        s.flush()
        assert task.id is not None
        task_id = task.id
        for i, (number, company) in enumerate(((B, "Skipped Ltd"), (C, "Dialled Inc"))):
            s.add(
                Lead(
                    campaign_id=task.id, row_no=i + 2, number=number, fields=json.dumps({"company": company})
                )
            )
    dialer.start(
        {
            B: {"outcome": "human", "ring_s": 0.3, "talk_s": 120},
            C: {"outcome": "human", "ring_s": 0.3, "talk_s": 120},
        }
    )

    page = pages.open("ann", "/workstation")
    page.click("#btn-ready")
    panel = page.locator("#call-panel")
    expect(panel).to_have_attribute("data-phase", "preview")
    expect(page.locator("#call-direction")).to_have_text("Preview")
    expect(page.locator("#call-number")).to_have_attribute("data-number", B)
    expect(page.locator('#lead-fields tr[data-lead-field="company"] td')).to_have_text("Skipped Ltd")
    expect(page.locator("#agent-state")).to_have_attribute("data-state", "reserved")
    expect(page.locator("#agent-state")).to_have_text("Preview")  # not "Connecting": nothing is dialled
    expect(page.locator("#save-call")).to_be_hidden()
    offered = panel.get_attribute("data-call-id")

    # A reload shows the offer again.
    page.reload()
    expect(page.locator("#live-status")).to_have_attribute("data-live", "up")
    expect(panel).to_have_attribute("data-call-id", offered or "")
    expect(panel).to_have_attribute("data-phase", "preview")

    page.click("#preview-skip")
    expect(page.locator("#call-number")).to_have_attribute("data-number", C)  # the next lead is offered
    expect(page.locator('#lead-fields tr[data-lead-field="company"] td')).to_have_text("Dialled Inc")
    expect(page.locator("#preview-status")).to_have_text("")  # nothing of the skipped lead stays beside it
    dialled = panel.get_attribute("data-call-id")
    assert dialled != offered
    page.fill("#note", "typed while previewing")
    page.click("#preview-dial")
    expect(panel).to_have_attribute("data-phase", "on_call")
    expect(panel).to_have_attribute("data-call-id", dialled or "")
    expect(page.locator("#agent-state")).to_have_attribute("data-state", "on_call")
    expect(page.locator("#save-call")).to_be_visible()
    expect(page.locator("#note")).to_have_value("typed while previewing")
    with session_scope(live_server.engine) as s:
        skipped = s.get(Call, offered)
        assert skipped is not None and skipped.result == "skipped"
    with live_server.engine.connect() as c:
        assert snapshot_from_db(c, task_id).dialled == 1  # the skipped lead was never dialled
