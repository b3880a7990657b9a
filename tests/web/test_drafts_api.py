"""The workstation keeps every outcome: drafts per call, the wrap-up view with its hold and "extend",
not-ready reasons in the state log, and the supervisor's saved phone."""

from __future__ import annotations

import time

from sqlalchemy import text
from sqlmodel import Session

from callcenter import agents as agent_table
from callcenter.engine import wrapup
from callcenter.models import Agent, Call, CallResult, CallState, Campaign
from callcenter.stats import snapshot_from_db
from tests.conftest import WebHarness
from tests.web import sim

NUMBER = "+8613964221019"
PANEL = {
    "contact": {"name": "Wang Fang", "company": "ACME", "email": ""},
    "tags": ["vip"],
    "note": "call back after lunch",
    "disposition": "interested",
}


def _on_call(web: WebHarness, username: str = "ann", extension: str = "1001") -> tuple[int, int, str]:
    web.user(username, ["agent"], extension=extension)
    agent = sim.agent_id(web.engine, extension)
    task = sim.campaign(web.engine, name="Renewals", dispositions=["interested", "not interested"])
    call_id = sim.connect(web.engine, web.redis, agent=agent, number=NUMBER, campaign_id=task, publish=False)
    return agent, task, call_id


def test_a_draft_is_kept_per_call_listed_until_saved_and_settled_by_the_save(web: WebHarness) -> None:
    _, _, call_id = _on_call(web)
    h = web.headers("ann")
    assert web.client.get(f"/api/workstation/calls/{call_id}/draft", headers=h).json() is None
    resp = web.client.put(f"/api/workstation/calls/{call_id}/draft", json=PANEL, headers=h)
    assert resp.status_code == 200, resp.text
    got = web.client.get(f"/api/workstation/calls/{call_id}/draft", headers=h).json()
    assert got["body"]["note"] == "call back after lunch" and got["settled"] is False
    listed = web.client.get("/api/workstation/drafts", headers=h).json()
    assert [(d["call_id"], d["number"], d["body"]["disposition"]) for d in listed] == [
        (call_id, NUMBER, "interested")
    ]

    saved = web.client.post(f"/api/workstation/calls/{call_id}/save", json=PANEL, headers=h)
    assert saved.status_code == 200, saved.text
    assert web.client.get("/api/workstation/drafts", headers=h).json() == []
    assert web.client.get(f"/api/workstation/calls/{call_id}/draft", headers=h).json()["settled"] is True
    # Typing again after the save opens the draft once more (the outcome on screen is not saved).
    web.client.put(f"/api/workstation/calls/{call_id}/draft", json={**PANEL, "note": "more"}, headers=h)
    assert [d["call_id"] for d in web.client.get("/api/workstation/drafts", headers=h).json()] == [call_id]
    assert web.client.delete(f"/api/workstation/calls/{call_id}/draft", headers=h).status_code == 200
    assert web.client.get("/api/workstation/drafts", headers=h).json() == []


def test_nobody_reads_or_writes_another_agents_draft(web: WebHarness) -> None:
    _, _, call_id = _on_call(web)
    web.user("bob", ["agent"], extension="1002")
    bob = web.headers("bob")
    web.client.put(f"/api/workstation/calls/{call_id}/draft", json=PANEL, headers=web.headers("ann"))
    assert web.client.get(f"/api/workstation/calls/{call_id}/draft", headers=bob).status_code == 404
    assert (
        web.client.put(f"/api/workstation/calls/{call_id}/draft", json=PANEL, headers=bob).status_code == 404
    )
    assert web.client.delete(f"/api/workstation/calls/{call_id}/draft", headers=bob).status_code == 404
    assert web.client.get("/api/workstation/drafts", headers=bob).json() == []


def test_wrap_up_shows_its_end_holds_for_the_outcome_and_extends_within_bounds(web: WebHarness) -> None:
    ann, task, call_id = _on_call(web)
    h = web.headers("ann")
    assert web.client.get("/api/workstation/wrap", headers=h).json() is None  # on the call: no wrap-up
    assert web.client.post("/api/workstation/wrap/extend", headers=h).status_code == 409
    sim.hang_up(web.engine, web.redis, agent=ann, call_id=call_id)
    with Session(web.engine) as s:
        agent = s.get(Agent, ann)
        task_row = s.get(Campaign, task)
        assert agent is not None and task_row is not None
        since, wrap_s = agent.state_since, task_row.wrap_up_s
    view = web.client.get("/api/workstation/wrap", headers=h).json()
    assert view["call_id"] == call_id and view["hold"] is True and view["saved"] is False
    assert view["ends_at"] == since + wrap_s and view["can_extend"] is True

    steps = int(wrapup.MAX_EXTRA_S // wrapup.EXTEND_STEP_S)
    for i in range(1, steps + 1):
        resp = web.client.post("/api/workstation/wrap/extend", headers=h)
        assert resp.status_code == 200, resp.text
        assert resp.json()["ends_at"] == since + wrap_s + i * wrapup.EXTEND_STEP_S
    assert resp.json()["can_extend"] is False
    assert web.client.post("/api/workstation/wrap/extend", headers=h).status_code == 409  # bounded

    web.client.post(f"/api/workstation/calls/{call_id}/save", json=PANEL, headers=h)
    assert web.client.get("/api/workstation/wrap", headers=h).json()["saved"] is True
    # The next state change clears what was added: the next wrap-up starts from the task's time.
    with Session(web.engine) as s:
        agent_table.apply(s, agent_id=ann, event=agent_table.AgentEvent.SET_READY, now=time.time())
        s.commit()
        agent = s.get(Agent, ann)
        assert agent is not None and agent.wrap_extra_s == 0.0


def test_a_not_ready_reason_is_kept_on_the_row_and_in_the_state_log(web: WebHarness) -> None:
    web.user("ann", ["agent"], extension="1001")
    web.user("root", ["admin"])
    ann = sim.agent_id(web.engine, "1001")
    h = web.headers("ann")
    codes = [r["code"] for r in web.client.get("/api/not-ready-reasons", headers=h).json()]
    assert codes == ["break", "lunch", "training"]
    bad = web.client.post("/api/agent/state", json={"state": "not_ready", "reason": "nap"}, headers=h)
    assert bad.status_code == 422
    assert (
        web.client.post(
            "/api/agent/state", json={"state": "not_ready", "reason": "missed_call"}, headers=h
        ).status_code
        == 422
    )

    added = web.client.post(
        "/api/admin/not-ready-reasons",
        json={"code": "coaching", "label": "1:1 coaching"},
        headers=web.headers("root"),
    )
    assert added.status_code == 201, added.text
    assert (
        web.client.post(
            "/api/admin/not-ready-reasons", json={"code": "x", "label": "y"}, headers=h
        ).status_code
        == 403
    )
    assert web.client.get("/api/not-ready-reasons", headers=h).json()[-1] == {
        "code": "coaching",
        "label": "1:1 coaching",
        "builtin": False,
    }
    for reason in ("lunch", "coaching"):
        resp = web.client.post("/api/agent/state", json={"state": "not_ready", "reason": reason}, headers=h)
        assert resp.status_code == 200 and resp.json()["reason"] == reason
        web.client.post("/api/agent/state", json={"state": "ready"}, headers=h)
    with web.engine.connect() as c:
        log = c.execute(
            text("SELECT state, reason FROM agent_state_log WHERE agent_id = :a ORDER BY at, id"), {"a": ann}
        ).all()
    assert [tuple(r) for r in log if r[0] == "not_ready"] == [
        ("not_ready", "lunch"),
        ("not_ready", "coaching"),
    ]
    # Ready carries no reason, and a reason given with another state is not kept.
    resp = web.client.post("/api/agent/state", json={"state": "away", "reason": "lunch"}, headers=h)
    assert resp.json()["reason"] is None


def test_my_phone_is_saved_on_the_supervisors_account_and_prefills_the_monitor(web: WebHarness) -> None:
    web.user("sue", ["supervisor"])
    h = web.headers("sue")
    assert web.client.get("/api/me/phone", headers=h).json() == {"phone": ""}
    assert web.client.put("/api/me/phone", json={"phone": "19 00"}, headers=h).status_code == 422
    assert web.client.put("/api/me/phone", json={"phone": "1900"}, headers=h).json() == {"phone": "1900"}
    assert web.client.get("/api/me/phone", headers=h).json() == {"phone": "1900"}
    page = web.client.get("/monitor", headers=h)
    assert 'id="spy-extension" value="1900"' in page.text and 'placeholder="1900"' not in page.text


def test_a_skipped_preview_is_not_counted_as_dialled(web: WebHarness) -> None:
    task = sim.campaign(web.engine, name="Preview")
    now = time.time()
    with Session(web.engine) as s:
        for i, (state, result) in enumerate(
            [
                (CallState.ENDED, CallResult.SKIPPED),
                (CallState.ENDED, CallResult.NO_ANSWER),
                (CallState.PREVIEW, None),
            ]
        ):
            s.add(
                Call(
                    id=f"c{i}",
                    campaign_id=task,
                    number=NUMBER,
                    state=state.value,
                    result=result.value if result else "",
                    created_at=now,
                )
            )
        s.commit()
    with web.engine.connect() as c:
        assert snapshot_from_db(c, task).dialled == 1
