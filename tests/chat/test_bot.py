"""The queue-stage bot: knowledge base matching in Chinese and English with a threshold, flows, resolve
by the bot, hand-off, the assistant's suggestions, and the external bot over a signed webhook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from callcenter.db import session_scope
from callcenter.errors import Invalid
from chat import services
from chat.bot import admin, flows
from chat.bot.engine import BotState, Click, Handoff, Knowledge, Resolve, Say, Texts, decide, suggestions
from chat.bot.kb import Index, tokenize
from chat.models import RoomState
from tests.chat.conftest import World
from tests.peers.chatbot import bot
from tests.peers.http import serve

KB = [
    (
        "How do I reset my password?",
        ["forgot password", "cannot log in"],
        "Use 'Forgot password' on the login page.",
    ),
    ("What are your opening hours?", ["when are you open"], "We are open 9:00-18:00, Monday to Friday."),
    ("如何退货", ["退货流程", "我想退货"], "请在订单页面点击“申请退货”。"),
    ("忘记密码怎么办", ["密码找回"], "请在登录页点击“忘记密码”。"),
    ("发票怎么开", ["开发票"], "在订单详情中申请电子发票。"),
]
FLOW = {
    "start": "ask",
    "steps": {
        "ask": {
            "text": "Is your order late or damaged?",
            "buttons": [
                {"label": "Late", "next": "late"},
                {"label": "Damaged", "action": "handoff"},
            ],
        },
        "late": {
            "text": "Orders ship within 48 hours. Did that help?",
            "buttons": [{"label": "Yes", "action": "resolve"}, {"label": "No", "action": "handoff"}],
        },
    },
}


def _knowledge(threshold: float = 0.5) -> Knowledge:
    kb = Index((i, p) for i, (q, alts, _) in enumerate(KB, 1) for p in [q, *alts])
    answers = {i: a for i, (_, _, a) in enumerate(KB, 1)}
    flow = flows.parse(FLOW)
    return Knowledge(
        kb=kb,
        answers=answers,
        flows={7: flow},
        triggers=Index([(7, "where is my order")]),
        threshold=threshold,
    )


@pytest.mark.parametrize(
    ("question", "entry"),
    [
        ("I forgot my password", 1),
        ("when are you open on friday", 2),
        ("我想退货，怎么办？", 3),
        ("密码忘了", 4),
        ("怎么开发票", 5),
    ],
)
def test_kb_matches_chinese_and_english_above_the_threshold(question: str, entry: int) -> None:
    hit = _knowledge().kb.best(question, threshold=0.5)
    assert hit is not None and hit.key == entry


@pytest.mark.parametrize("question", ["what is the weather like", "今天天气怎么样", "我要投诉你们", "hello"])
def test_unrelated_questions_stay_below_the_threshold(question: str) -> None:
    assert _knowledge().kb.best(question, threshold=0.5) is None


def test_the_threshold_decides() -> None:
    partial = _knowledge().kb.search("password", limit=1)[0]
    assert 0.5 <= partial.confidence < 0.9
    assert _knowledge().kb.best("password", threshold=0.9) is None


def test_tokens_drop_stopwords_and_segment_chinese() -> None:
    assert tokenize("How do I RESET my passwords?") == ["reset", "password"]
    assert "退货" in tokenize("我想退货")


def test_answer_then_yes_resolves_and_no_hands_off() -> None:
    k, texts = _knowledge(), Texts()
    actions, state = decide("I forgot my password", state=BotState(), knowledge=k, texts=texts)
    assert isinstance(actions[0], Say) and "Forgot password" in actions[0].text
    feedback = actions[1]
    assert getattr(feedback, "meta", None) == {"kb_id": 1}
    yes, _ = decide(Click("yes", {"kb_id": 1}), state=state, knowledge=k, texts=texts)
    assert isinstance(yes[-1], Resolve)
    no, after = decide(Click("no", {"kb_id": 1}), state=state, knowledge=k, texts=texts)
    assert isinstance(no[-1], Handoff) and after.handoff
    assert decide("anything else", state=after, knowledge=k, texts=texts) == ([], after)


def test_unmatched_questions_keep_the_visitor_queued_and_the_bot_says_so_once() -> None:
    k, texts = _knowledge(), Texts(unmatched="queued for a human")
    first, state = decide("what is the weather", state=BotState(), knowledge=k, texts=texts)
    assert first == [Say("queued for a human")] and state.misses == 1 and not state.handoff
    again, state = decide("and tomorrow?", state=state, knowledge=k, texts=texts)
    assert again == [] and state.misses == 2
    human, state = decide("人工", state=state, knowledge=k, texts=texts)
    assert isinstance(human[-1], Handoff)


def test_a_flow_runs_by_clicks() -> None:
    k, texts = _knowledge(), Texts()
    actions, state = decide("where is my order?", state=BotState(), knowledge=k, texts=texts)
    assert state.flow_id == 7 and state.step == "ask" and len(actions) == 1
    late, state = decide(Click("b0", {"flow_id": 7, "step": "ask"}), state=state, knowledge=k, texts=texts)
    assert state.step == "late" and "48 hours" in getattr(late[0], "text", "")
    stale, same = decide(Click("b1", {"flow_id": 7, "step": "ask"}), state=state, knowledge=k, texts=texts)
    assert stale == [] and same == state  # a click on an earlier step is ignored
    done, _ = decide(Click("b0", {"flow_id": 7, "step": "late"}), state=state, knowledge=k, texts=texts)
    assert isinstance(done[-1], Resolve)


@pytest.mark.parametrize(
    ("flow", "message"),
    [
        ({"start": "x", "steps": {}}, "at least one step"),
        ({"start": "a", "steps": {"a": {"text": "hi"}}}, "needs action"),
        (
            {"start": "a", "steps": {"a": {"text": "hi", "buttons": [{"label": "go", "next": "zz"}]}}},
            "unknown step",
        ),
        ({"start": "b", "steps": {"a": {"text": "hi", "action": "resolve"}}}, "start names"),
        ({"start": "a", "steps": {"a": {"text": "x" * 1001, "action": "resolve"}}}, "at most 1000"),
    ],
)
def test_bad_flows_are_refused_naming_the_problem(flow: dict[str, Any], message: str) -> None:
    with pytest.raises(Invalid, match=message) as info:
        flows.parse(flow)
    assert info.value.field == "steps"


def test_suggestions_are_the_top_three_for_the_agent() -> None:
    found = suggestions("password reset login", knowledge=_knowledge())
    assert found and found[0]["kb_id"] == 1 and len(found) <= 3


# --- in rooms ------------------------------------------------------------------------------------


def _seed_kb(world: World) -> None:
    with session_scope(world.engine) as session:
        for question, alts, answer in KB:
            admin.save_entry(
                session,
                entry_id=None,
                skill_group_id=None,
                question=question,
                alternatives=alts,
                answer=answer,
                enabled=True,
                now=world.tick(),
            )
        admin.save_flow(
            session,
            flow_id=None,
            skill_group_id=world.groups["sales"],
            name="late order",
            triggers=["where is my order"],
            flow=FLOW,
            enabled=True,
            now=world.tick(),
        )


def _click(world: World, room_id: int, label: str) -> None:
    buttons = [m for m in world.history(room_id) if m["kind"] == "buttons"][-1]
    button = next(b for b in buttons["content"]["buttons"] if b["label"] == label)
    out = services.Outbox()
    with session_scope(world.engine) as session:
        room = services.load_room(session, room_id)
        services.visitor_clicks(
            session, room=room, seq=buttons["seq"], button_id=button["id"], now=world.tick(), out=out
        )
    world.rt.settle(out, now=world.clock)


def test_the_bot_greets_answers_and_resolves_in_the_queue(world: World) -> None:
    world.group("sales", greeting="Welcome to Sales!")
    _seed_kb(world)
    room_id, _ = world.visit("sales", text="我想退货")
    texts = [(m["sender"], m["kind"], m["text"]) for m in world.history(room_id)]
    assert texts[0] == ("bot", "text", "Welcome to Sales!")
    assert ("bot", "text", "请在订单页面点击“申请退货”。") in texts
    _click(world, room_id, "Yes, thanks")
    room = world.room(room_id)
    assert room.state == RoomState.COMPLETED.value and room.handler == "bot"
    assert world.history(room_id)[-1]["content"]["code"] == "completed"


def test_a_flow_hands_off_to_a_human_who_then_gets_the_room(world: World) -> None:
    world.group("sales")
    _seed_kb(world)
    room_id, _ = world.visit("sales", text="where is my order?")
    _click(world, room_id, "Damaged")
    room = world.room(room_id)
    assert room.state == RoomState.QUEUED.value and room.bot_handoff
    world.say(room_id, "it arrived broken")  # the bot stays quiet after a hand-off
    assert world.history(room_id)[-1]["sender"] == "visitor"
    ann = world.agent("ann", ["sales"])
    world.rt.route_group(world.groups["sales"], now=world.tick(), out=services.Outbox())
    assert world.room(room_id).agent_id == ann
    with Session(world.engine) as session:
        question = services.last_visitor_text(session, room_id=room_id)
        found = suggestions(question, knowledge=world.rt.knowledge(session, world.groups["sales"]))
    assert question == "it arrived broken" and isinstance(found, list)


def test_webhook_bot_is_signed_and_its_actions_apply(world: World, tmp_path: Path) -> None:
    from tests.chat.conftest import _world

    secret = "bot-secret-123"
    seen: list[dict[str, Any]] = []

    def answer(payload: dict[str, Any]) -> dict[str, Any]:
        seen.append(payload)
        if payload["message"]["kind"] == "choice":
            return {"actions": [{"type": "text", "text": "Done!"}, {"type": "resolve"}]}
        return {
            "actions": [
                {
                    "type": "card",
                    "title": "Order 42",
                    "summary": "Shipped",
                    "link": "https://example.com/o/42",
                },
                {"type": "buttons", "text": "Anything else?", "buttons": [{"id": "no", "label": "No"}]},
            ]
        }

    w = _world(world.engine, world.redis, tmp_path, chat_bot_webhook_secret=secret)
    with serve(bot(secret, answer)) as peer:
        w.group("sales", bot_mode="webhook", webhook_url=f"{peer.url}/hook")
        room_id, _ = w.visit("sales", text="order 42?")
        history = w.history(room_id)
        assert [m["kind"] for m in history[-2:]] == ["card", "buttons"]
        assert history[-2]["content"]["link"] == "https://example.com/o/42"
        assert seen[0]["message"]["text"] == "order 42?" and seen[0]["room_id"] == room_id
        assert "x-callcenter-signature" in peer.requests[0].headers
        _click(w, room_id, "No")
    assert w.room(room_id).state == RoomState.COMPLETED.value and w.room(room_id).handler == "bot"


@pytest.mark.parametrize("failure", ["wrong-secret", "timeout", "down"])
def test_a_failing_webhook_falls_back_to_queued_for_a_human(
    world: World, tmp_path: Path, failure: str
) -> None:
    from tests.chat.conftest import _world

    w = _world(
        world.engine, world.redis, tmp_path, chat_bot_webhook_secret="ours", chat_bot_webhook_timeout_s=0.3
    )
    handler = bot(
        "theirs" if failure == "wrong-secret" else "ours",
        lambda p: {"actions": []},
        delay_s=1.0 if failure == "timeout" else 0.0,
    )
    with serve(handler) as peer:
        url = f"{peer.url}/hook" if failure != "down" else "http://127.0.0.1:9/hook"
        w.group("sales", bot_mode="webhook", webhook_url=url, handoff_text="An agent will take over.")
        room_id, _ = w.visit("sales", text="hello?")
    room = w.room(room_id)
    assert room.state == RoomState.QUEUED.value and room.bot_handoff
    assert w.history(room_id)[-1]["text"] == "An agent will take over."


def test_admin_kb_and_flow_edits_reach_the_bot_at_once(world: World) -> None:
    world.group("sales")
    with Session(world.engine) as session:
        assert world.rt.knowledge(session, world.groups["sales"]).kb.best("refund", threshold=0.5) is None
    with session_scope(world.engine) as session:
        admin.save_entry(
            session,
            entry_id=None,
            skill_group_id=world.groups["sales"],
            question="refund policy",
            alternatives=[],
            answer="30 days.",
            enabled=True,
            now=world.tick(),
        )
    with Session(world.engine) as session:
        assert world.rt.knowledge(session, world.groups["sales"]).kb.best("refund", threshold=0.5) is not None
