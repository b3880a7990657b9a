"""Task pages in real Chromium against a live server: create with the upload and import progress and
the row-error report (a real rq worker imports the list), the API's field errors next to their field,
the list's buttons enabled per state and changed by push, confirmation before stop and delete, the
deleted tasks, the edit page (pacing settings only) and the do-not-call page. Every wait is on a DOM
condition."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import select

from callcenter import campaigns
from callcenter.bus import Bus
from callcenter.campaigns import ACTIONS, CampaignEvent
from callcenter.db import session_scope
from callcenter.models import Campaign, CampaignState, Lead
from callcenter.notifier import Notifier
from tests.web.conftest import LiveServer, Pages

pytestmark = pytest.mark.browser

ALL_BUTTONS = ("start", "pause", "resume", "stop", "monitor", "edit", "delete")
CSV = "phone,name,plan\n13800000001,韩梅梅,Gold\n123,Bad,x\n13800000002,Li Lei,Silver\n13800000001,Dup,y\n"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def open_form(page: Page, group: str, name: str, csv_path: str) -> None:
    page.goto("/tasks/new")
    expect(page.locator("body")).to_have_attribute("data-ready", "1")
    page.fill("#task-form input[name=name]", name)
    page.select_option("#task-form select[name=skill_group_id]", label=group)
    page.set_input_files("#task-form input[name=file]", csv_path)


def task_row(engine: Engine, *, name: str, group_id: int, state: CampaignState, leads: int = 1) -> int:
    """A task in `state` with `leads` pending numbers, written as the API and the import would."""
    with session_scope(engine) as s:
        row = Campaign(name=name, state=state.value, skill_group_id=group_id, list_filename="list.csv")
        row.import_total = row.import_done = row.import_ok = leads
        s.add(row)
        s.flush()
        assert row.id is not None
        for i in range(leads):
            s.add(Lead(campaign_id=row.id, row_no=i + 2, number=f"+86138000{row.id:03d}{i:02d}"))
        return row.id


def enabled_buttons(page: Page, task_id: int) -> set[str | None]:
    row = page.locator(f'#tasks-table tr[data-task-id="{task_id}"]')
    return {
        b.get_attribute("data-action") for b in row.locator("button[data-action]").all() if b.is_enabled()
    }


def expect_buttons(page: Page, task_id: int, state: CampaignState) -> None:
    row = page.locator(f'#tasks-table tr[data-task-id="{task_id}"]')
    expect(row).to_have_attribute("data-state", state.value)
    for action in ALL_BUTTONS:
        button = row.locator(f'button[data-action="{action}"]')
        if action in ACTIONS[state]:
            expect(button).to_be_enabled()
        else:
            expect(button).to_be_disabled()


def test_admin_creates_a_task_and_follows_the_import_to_the_report(
    pages: Pages, live_server: LiveServer, tmp_path: Path
) -> None:
    live_server.user("root", ["admin"])
    live_server.skill_group("Sales")
    page = pages.open("root", "/tasks/new")
    open_form(page, "Sales", "Renewals", write(tmp_path, "renewals.csv", CSV))
    expect(page.locator("#task-form select[name=gateway_id] option").first).to_contain_text("Simulated PBX")
    page.fill("#task-form input[name=max_concurrency]", "4")
    page.select_option("#task-form select[name=pacing_mode]", "progressive")
    page.fill("#task-form input[name=caller_id]", "+861012345678")
    page.fill("#task-form input[name=window_start]", "09:00")
    page.fill("#task-form input[name=window_end]", "20:30")
    page.uncheck('#task-form input[name=window_days][value="6"]')
    page.fill('#task-form input[data-retry="busy"]', "120")
    page.fill('#task-form input[data-retry="no_answer"]', "")
    page.fill("#task-form textarea[name=dispositions]", "有意向\n无意向")
    page.click("#create-task")

    # The list is queued for import and nothing has imported it yet: the task is initializing.
    progress = page.locator("#progress")
    expect(progress).to_have_attribute("data-state", "import")
    expect(page.locator("#upload-pct")).to_have_text("100%")
    expect(page.locator("#import-row")).to_be_visible()
    task_id = int(progress.get_attribute("data-task-id") or 0)
    with session_scope(live_server.engine) as s:
        task = s.get(Campaign, task_id)
        assert task is not None and task.state == "initializing"
        assert (task.max_concurrency, task.pacing_mode, task.caller_id) == (4, "progressive", "+861012345678")
        assert (task.window_start, task.window_end, task.window_days) == ("09:00", "20:30", "012345")
        assert task.retry_delays == {"busy": 120, "congestion": 1800, "failed": 3600, "lost": 300}
        assert task.dispositions == ["有意向", "无意向"]

    live_server.run_imports()
    expect(progress).to_have_attribute("data-state", "done")
    expect(page.locator("#import-pct")).to_have_text("100%")
    summary = page.locator("#import-summary")
    expect(summary).to_have_attribute("data-imported", "2")
    expect(summary).to_have_attribute("data-rejected", "2")
    expect(page.locator("#import-rate")).to_contain_text("rows/s")
    link = page.locator("#report-link")
    expect(link).to_be_visible()
    report = page.request.get(link.get_attribute("href") or "")
    assert report.ok
    lines = report.text().lstrip("\ufeff").strip().splitlines()
    assert lines[1].startswith("3,123,invalid") and lines[2].startswith("5,13800000001,duplicate")

    page.click("#to-list")
    row = page.locator(f'#tasks-table tr[data-task-id="{task_id}"]')
    expect_buttons(page, task_id, CampaignState.STOPPED)
    expect(row.locator(".name")).to_contain_text("Simulated PBX")
    expect(row.locator(".list a.report")).to_have_text("rejected 2")
    expect(row.locator(".pacing")).to_contain_text("Progressive")


def test_the_list_shows_an_import_in_progress_until_it_ends(
    pages: Pages, live_server: LiveServer, tmp_path: Path
) -> None:
    live_server.user("root", ["admin"])
    live_server.skill_group("Sales")
    page = pages.open("root", "/tasks/new")
    open_form(page, "Sales", "Queued", write(tmp_path, "q.csv", CSV))
    page.click("#create-task")
    expect(page.locator("#progress")).to_have_attribute("data-state", "import")
    task_id = int(page.locator("#progress").get_attribute("data-task-id") or 0)

    page.goto("/tasks")
    row = page.locator(f'#tasks-table tr[data-task-id="{task_id}"]')
    expect(row).to_have_attribute("data-state", "initializing")
    expect(row.locator(".import-progress progress")).to_be_visible()
    expect_buttons(page, task_id, CampaignState.INITIALIZING)  # nothing may be done while importing
    live_server.run_imports()
    expect_buttons(page, task_id, CampaignState.STOPPED)
    expect(row.locator(".imported")).to_have_text("imported 2")


def test_api_field_errors_are_shown_next_to_the_field(
    pages: Pages, live_server: LiveServer, tmp_path: Path
) -> None:
    pages.allow("status of 422")
    live_server.user("root", ["admin"])
    live_server.skill_group("Sales")
    page = pages.open("root", "/tasks/new")
    open_form(page, "Sales", "Bad", write(tmp_path, "l.csv", CSV))
    page.fill("#task-form input[name=ring_timeout_s]", "10")
    page.fill("#task-form input[name=max_concurrency]", "0")
    page.click("#create-task")
    expect(page.locator('.field-error[data-for="ring_timeout_s"]')).to_contain_text("15")
    expect(page.locator('.field-error[data-for="max_concurrency"]')).to_contain_text("greater than 0")
    expect(page.locator("#task-form input[name=ring_timeout_s]")).to_have_class("invalid")
    expect(page.locator("#create-task")).to_be_enabled()

    page.fill("#task-form input[name=ring_timeout_s]", "25")
    page.fill("#task-form input[name=max_concurrency]", "3")
    page.fill('#task-form input[data-retry="busy"]', "-5")
    page.click("#create-task")
    expect(page.locator('.field-error[data-for="retry_delays"]')).to_contain_text("busy")
    expect(page.locator('.field-error[data-for="ring_timeout_s"]')).to_have_text("")

    page.fill('#task-form input[data-retry="busy"]', "60")
    page.fill("#task-form input[name=window_end]", "07:00")
    page.click("#create-task")
    expect(page.locator('.field-error[data-for="window_start"]')).to_contain_text("before window_end")

    page.fill("#task-form input[name=window_end]", "21:00")
    page.set_input_files("#task-form input[name=file]", write(tmp_path, "nophone.csv", "name,city\nann,x\n"))
    page.click("#create-task")
    expect(page.locator('.field-error[data-for="phone_column"]')).to_contain_text("no phone column")
    with session_scope(live_server.engine) as s:
        assert s.exec(select(func.count()).select_from(Campaign)).one() == 0


def test_buttons_follow_the_state_and_state_changes_arrive_by_push(
    pages: Pages, live_server: LiveServer
) -> None:
    live_server.user("root", ["admin"])
    group = live_server.skill_group("Sales")
    live_server.user("ann", ["agent"], extension="1001", skill_group_ids=[group])
    eng = live_server.engine
    ids = {
        state: task_row(eng, name=f"T {state.value}", group_id=group, state=state) for state in CampaignState
    }
    page = pages.open("root", "/tasks")
    for state in (
        CampaignState.INITIALIZING,
        CampaignState.STOPPED,
        CampaignState.RUNNING,
        CampaignState.PAUSED,
    ):
        expect_buttons(page, ids[state], state)
    expect(page.locator(f'#tasks-table tr[data-task-id="{ids[CampaignState.DELETED]}"]')).to_have_count(0)
    page.evaluate("window.__same_page = true")

    stopped = ids[CampaignState.STOPPED]
    page.locator(f'tr[data-task-id="{stopped}"] button[data-action="start"]').click()
    expect_buttons(page, stopped, CampaignState.RUNNING)

    # Someone else pauses it (another browser, the API): the row changes by push.
    with session_scope(eng) as s:
        moves = campaigns.transition(
            s, campaign_id=stopped, event=CampaignEvent.PAUSE, actor="sue", now=time.time()
        )
    for m in moves:
        Notifier(Bus(live_server.redis)).publish(m.message())
    expect_buttons(page, stopped, CampaignState.PAUSED)

    # Stop asks first; cancelling changes nothing.
    page.locator(f'tr[data-task-id="{stopped}"] button[data-action="stop"]').click()
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text("T stopped")
    page.click("#confirm-no")
    expect(page.locator("#confirm")).to_be_hidden()
    expect_buttons(page, stopped, CampaignState.PAUSED)
    page.locator(f'tr[data-task-id="{stopped}"] button[data-action="stop"]').click()
    page.click("#confirm-yes")
    expect_buttons(page, stopped, CampaignState.STOPPED)

    # Deleting a running task stops it first; the row leaves the list for the deleted tasks.
    running = ids[CampaignState.RUNNING]
    page.locator(f'tr[data-task-id="{running}"] button[data-action="delete"]').click()
    expect(page.locator("#confirm-title")).to_have_text("Delete this task?")
    page.click("#confirm-yes")
    expect(page.locator(f'#tasks-table tr[data-task-id="{running}"]')).to_have_count(0)
    assert page.evaluate("window.__same_page") is True

    page.click("text=Deleted tasks")
    deleted = page.locator("#deleted-table tbody tr")
    expect(deleted).to_have_count(2)
    expect(page.locator(f'#deleted-table tr[data-task-id="{running}"]')).to_contain_text("T running")


def test_a_supervisor_controls_tasks_but_cannot_create_edit_or_delete(
    pages: Pages, live_server: LiveServer
) -> None:
    live_server.user("sue", ["supervisor"])
    group = live_server.skill_group("Sales")
    task = task_row(live_server.engine, name="Renewals", group_id=group, state=CampaignState.PAUSED)
    page = pages.open("sue", "/tasks")
    row = page.locator(f'#tasks-table tr[data-task-id="{task}"]')
    expect(row).to_have_attribute("data-state", "paused")
    shown = {b.get_attribute("data-action") for b in row.locator("button").all()}
    assert shown == {"start", "pause", "resume", "stop", "monitor"}
    assert enabled_buttons(page, task) == {"resume", "stop", "monitor"}
    expect(page.locator("#new-task")).to_have_count(0)
    row.locator('button[data-action="monitor"]').click()
    page.wait_for_url(f"**/monitor#task-{task}")
    expect(page.locator(f"#task-{task}")).to_have_class("task-card focus")


def test_edit_changes_pacing_settings_and_refuses_while_running(
    pages: Pages, live_server: LiveServer
) -> None:
    pages.allow("status of 422")
    live_server.user("root", ["admin"])
    group = live_server.skill_group("Sales")
    task = task_row(live_server.engine, name="Renewals", group_id=group, state=CampaignState.STOPPED)
    running = task_row(live_server.engine, name="Busy", group_id=group, state=CampaignState.RUNNING)
    page = pages.open("root", "/tasks")
    page.locator(f'tr[data-task-id="{task}"] button[data-action="edit"]').click()
    page.wait_for_url(f"**/tasks/{task}/edit")
    expect(page.locator("body")).to_have_attribute("data-ready", "1")
    expect(page.locator("#edit-form input[name=name]")).to_have_count(0)  # pacing settings only
    page.fill("#edit-form input[name=agent_ratio]", "0")
    page.click("#save-task")
    expect(page.locator('.field-error[data-for="agent_ratio"]')).to_contain_text("greater than 0")
    page.fill("#edit-form input[name=agent_ratio]", "2.5")
    page.fill("#edit-form input[name=max_concurrency]", "7")
    page.select_option("#edit-form select[name=pacing_mode]", "predictive")
    page.click("#save-task")
    expect(page.locator("#save-status")).to_have_attribute("data-state", "saved")
    with session_scope(live_server.engine) as s:
        row = s.get(Campaign, task)
        assert row is not None and (row.agent_ratio, row.max_concurrency, row.pacing_mode) == (
            2.5,
            7,
            "predictive",
        )

    page.goto(f"/tasks/{running}/edit")
    expect(page.locator("#not-editable")).to_be_visible()
    expect(page.locator("#save-task")).to_be_disabled()


def test_do_not_call_page_adds_uploads_searches_and_removes(
    pages: Pages, live_server: LiveServer, tmp_path: Path
) -> None:
    live_server.user("root", ["admin"])
    page = pages.open("root", "/dnc")
    expect(page.locator("body")).to_have_attribute("data-ready", "1")
    expect(page.locator("#dnc-none")).to_be_visible()
    page.fill("#dnc-add textarea[name=numbers]", "13800138000\n+86 139 0013 9000\n999")
    page.fill("#dnc-add input[name=note]", "asked by phone")
    page.click("#dnc-add-btn")
    result = page.locator("#dnc-result-text")
    expect(result).to_have_attribute("data-added", "2")
    expect(result).to_have_attribute("data-rejected", "1")
    expect(page.locator("#dnc-rejected li")).to_contain_text("999")
    expect(page.locator("#dnc-table tbody tr")).to_have_count(2)
    expect(page.locator('#dnc-table tr[data-number="+8613800138000"]')).to_contain_text("asked by phone")

    page.set_input_files(
        "#dnc-upload input[name=file]", write(tmp_path, "dnc.csv", "手机\n13700137000\nabc\n")
    )
    page.click("#dnc-upload-btn")
    expect(result).to_have_attribute("data-added", "1")
    expect(page.locator("#dnc-rejected li")).to_contain_text("Row 3")
    expect(page.locator("#dnc-table tbody tr")).to_have_count(3)

    page.fill("#dnc-search", "139")
    expect(page.locator("#dnc-table tbody tr")).to_have_count(1)
    page.locator('#dnc-table button[data-remove="+8613900139000"]').click()
    expect(page.locator("#dnc-table tbody tr")).to_have_count(0)
    page.fill("#dnc-search", "")
    expect(page.locator("#dnc-table tbody tr")).to_have_count(2)
