"""The supervisor monitor's task part in real Chromium: current numbers at once on connect, counters
and chart moving by push, pause / resume / stop from the card, cards appearing and leaving with the
task's state, PBX link alerts, and a refused listen-in showing why. The dialer's side is published
exactly as the dialer does it (`Notifier`); the end-to-end test runs the real dialer."""

from __future__ import annotations

import time
import uuid
from typing import TypedDict

import pytest
from playwright.sync_api import Locator, Page, expect
from sqlalchemy.engine import Engine

from callcenter import campaigns
from callcenter.bus import Bus
from callcenter.campaigns import CampaignEvent
from callcenter.db import session_scope
from callcenter.messages import GatewayState, GatewayStatus, TaskStats
from callcenter.models import Call, CallState, CampaignState
from callcenter.notifier import Notifier
from tests.web import sim
from tests.web.conftest import LiveServer, Pages
from tests.web.test_task_pages import task_row

pytestmark = pytest.mark.browser


def stats(campaign_id: int, **counters: object) -> TaskStats:
    """A `task_stats` message as the dialer builds it (`DialerCore.snapshot`)."""
    base: dict[str, object] = {"state": "running", "pacing_mode": "ratio", "at": time.time()}
    return TaskStats.model_validate({"campaign_id": campaign_id, **base, **counters})


class CallRow(TypedDict, total=False):
    """The columns of a `Call` the tests set, beside its id, task and number."""

    state: str
    created_at: float
    answered_at: float
    connected_at: float
    ended_at: float
    result: str
    cause: int


def calls(engine: Engine, campaign_id: int, rows: list[CallRow]) -> None:
    with session_scope(engine) as s:
        for r in rows:
            s.add(Call(id=str(uuid.uuid4()), campaign_id=campaign_id, number="+8613800000000", **r))


def card_value(page: Page, task_id: int, counter: str) -> Locator:
    return page.locator(f'#task-{task_id} .kpi[data-counter="{counter}"] .value')


def test_monitor_shows_current_numbers_at_once_then_follows_pushes(
    pages: Pages, live_server: LiveServer
) -> None:
    live_server.user("sue", ["supervisor"])
    group = live_server.skill_group("Sales")
    eng = live_server.engine
    running = task_row(eng, name="Renewals", group_id=group, state=CampaignState.RUNNING, leads=3)
    paused = task_row(eng, name="Winback", group_id=group, state=CampaignState.PAUSED, leads=2)
    task_row(eng, name="Done", group_id=group, state=CampaignState.STOPPED)
    now = time.time()
    ended = CallState.ENDED.value
    calls(
        eng,
        running,
        [
            {
                "state": ended,
                "created_at": now - 900,
                "answered_at": now - 890,
                "connected_at": now - 889,
                "ended_at": now - 800,
                "result": "answered",
            },
            {
                "state": ended,
                "created_at": now - 300,
                "answered_at": now - 295,
                "ended_at": now - 290,
                "result": "abandoned",
            },
            {
                "state": ended,
                "created_at": now - 120,
                "ended_at": now - 100,
                "result": "no_answer",
                "cause": 19,
            },
        ],
    )
    notifier = Notifier(Bus(live_server.redis))
    # What the dialer published a moment ago: the page must show it at once, before the next push.
    notifier.publish(stats(running, dialled=7, connected=3, answered=4, leads_left=12, name="Renewals"))

    page = pages.open("sue", "/monitor")
    expect(page.locator("#task-cards .task-card")).to_have_count(2)
    card = page.locator(f"#task-{running}")
    expect(card_value(page, running, "dialled")).to_have_text("7")
    expect(card_value(page, running, "leads_left")).to_have_text("12")
    expect(card.locator(".pill.sim")).to_have_text("Simulated PBX")
    expect(card.locator(".task-state")).to_have_text("Running")
    # No dialer has published for the paused task: its numbers are counted from the rows.
    expect(card_value(page, paused, "leads_left")).to_have_text("2")
    expect(page.locator(f"#task-{paused} .task-state")).to_have_text("Paused")
    expect(page.locator(f'#task-{paused} button[data-action="resume"]')).to_be_enabled()

    # The chart starts from the rows of the last hour.
    page.wait_for_function(f"CC.monitor.tasks.get({running}).series !== null")
    expect(card.locator(".chart canvas")).to_have_count(1)
    assert page.evaluate(f"CC.monitor.tasks.get({running}).series.dialled.reduce((a, b) => a + b, 0)") == 3
    assert page.evaluate(f"CC.monitor.tasks.get({running}).series.t.length") == 60

    page.evaluate("window.__same_page = true")
    notifier.publish(stats(running, dialled=8, connected=3, abandoned=0, name="Renewals"))
    expect(card_value(page, running, "dialled")).to_have_text("8")
    notifier.publish(
        stats(
            running,
            dialled=11,
            ringing=2,
            answered=6,
            connected=4,
            abandoned=1,
            abandon_pct=20.0,
            failed_by_cause={"busy (17)": 2, "no_answer (19)": 1},
            leads_left=9,
            lines_per_agent=1.5,
            name="Renewals",
        )
    )
    expect(card_value(page, running, "dialled")).to_have_text("11")
    expect(card_value(page, running, "abandon_pct")).to_have_text("20.0%")
    expect(card.locator('.kpi[data-counter="abandon_pct"]')).to_have_class("kpi over")  # over the 3 % target
    expect(card_value(page, running, "lines_per_agent")).to_have_text("1.50")
    expect(card.locator('.chip.cause[data-cause="busy (17)"]')).to_have_text("Busy (17) 2")
    expect(card.locator(".chart")).to_have_attribute("data-dialled", "6")  # 3 from the rows + 3 pushed

    # Pause from the card; the card stays with Resume.
    card.locator('button[data-action="pause"]').click()
    expect(card.locator(".task-state")).to_have_text("Paused")
    expect(card.locator('button[data-action="resume"]')).to_be_enabled()
    expect(card.locator('button[data-action="pause"]')).to_be_hidden()

    # A task started elsewhere appears; one stopped here (after confirming) leaves.
    stopped = task_row(eng, name="Fresh", group_id=group, state=CampaignState.STOPPED)
    with session_scope(eng) as s:
        moves = campaigns.transition(
            s, campaign_id=stopped, event=CampaignEvent.START, actor="x", now=time.time()
        )
    for m in moves:
        notifier.publish(m.message())
    expect(page.locator(f"#task-{stopped} .task-state")).to_have_text("Running")
    expect(page.locator("#task-cards .task-card")).to_have_count(3)
    page.locator(f'#task-{paused} button[data-action="stop"]').click()
    expect(page.locator("#confirm-text")).to_contain_text("Winback")
    page.click("#confirm-yes")
    expect(page.locator(f"#task-{paused}")).to_have_count(0)

    notifier.publish(
        GatewayStatus(gateway="default", state=GatewayState.DOWN, detail="connection refused", at=time.time())
    )
    expect(page.locator('#gateway-alerts [data-gateway="default"]')).to_contain_text("default")
    expect(page.locator('#gateway-alerts [data-gateway="default"]')).to_have_attribute(
        "title", "connection refused"
    )
    notifier.publish(GatewayStatus(gateway="default", state=GatewayState.UP, at=time.time()))
    expect(page.locator('#gateway-alerts [data-gateway="default"]')).to_have_count(0)
    assert page.evaluate("window.__same_page") is True


def test_a_refused_listen_in_shows_why(pages: Pages, live_server: LiveServer) -> None:
    pages.allow("status of 422")
    pages.allow("status of 503")
    live_server.user("ann", ["agent"], extension="1001")
    live_server.user("sue", ["supervisor"])  # no extension of her own
    ann = sim.agent_id(live_server.engine, "1001")
    page = pages.open("sue", "/monitor")
    row = page.locator(f'#agents-grid tr[data-agent-id="{ann}"]')
    expect(row.locator('button[data-spy="listen"]')).to_be_disabled()  # nothing to listen to
    sim.connect(live_server.engine, live_server.redis, agent=ann, number="+8613800138000")
    expect(row.locator('button[data-spy="listen"]')).to_be_enabled()

    row.locator('button[data-spy="whisper"]').click()
    status = page.locator("#spy-status")
    expect(status).to_have_attribute("data-state", "error")
    expect(status).to_contain_text("no extension of your own")
    page.fill("#spy-extension", "1900")
    row.locator('button[data-spy="listen"]').click()
    expect(status).to_contain_text("no dialer is running")
