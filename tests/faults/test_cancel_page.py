"""The task list's "Cancel import" button in real Chromium: an admin cancels a stuck import (no worker
runs), after a confirmation; the row turns stopped with the reason; a supervisor has no such button."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from callcenter import accounts, campaigns
from callcenter.db import session_scope
from callcenter.models import CampaignCreate

# The live server, Chromium and signed-in pages of the browser tests.
from tests.web.conftest import LiveServer, Pages, browser, live_overrides, live_server, pages  # noqa: F401

pytestmark = pytest.mark.browser


def stuck_import(live: LiveServer) -> int:
    """A task whose import never started (its worker died before it)."""
    with session_scope(live.engine) as session:
        group = accounts.create_skill_group(session, name="Sales")
        assert group.id is not None
        task = campaigns.create(
            session,
            spec=CampaignCreate(name="Stuck", skill_group_id=group.id, list_filename="big.csv"),
            actor="root",
            now=0.0,
        )
        task.import_job_id, task.import_total, task.import_done = "import-gone", 200_000, 60_000
        session.add(task)
        session.flush()
        assert task.id is not None
        return task.id


def test_an_admin_cancels_a_stuck_import_from_the_task_list(pages: Pages, live_server: LiveServer) -> None:  # noqa: F811
    live_server.user("root", ["admin"])
    live_server.user("sup", ["supervisor"])
    task_id = stuck_import(live_server)

    watcher = pages.open("sup", "/tasks")
    seen = watcher.locator(f'#tasks-table tr[data-task-id="{task_id}"]')
    expect(seen).to_have_attribute("data-state", "initializing")
    expect(seen.locator("button.cancel-import")).to_have_count(0)  # cancelling is task_manage's

    page = pages.open("root", "/tasks")
    row = page.locator(f'#tasks-table tr[data-task-id="{task_id}"]')
    expect(row.locator(".import-progress")).to_contain_text("60000 / 200000")
    row.locator("button.cancel-import").click()
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-title")).to_have_text("Cancel this import?")
    page.click("#confirm-no")
    expect(row).to_have_attribute("data-state", "initializing")

    row.locator("button.cancel-import").click()
    page.click("#confirm-yes")
    expect(row).to_have_attribute("data-state", "stopped")
    expect(row.locator(".import-error")).to_contain_text(
        "import cancelled by root after 60000 of 200000 rows"
    )
    expect(row.locator('button[data-action="delete"]')).to_be_enabled()
    # The supervisor's list follows by push.
    expect(seen).to_have_attribute("data-state", "stopped")
