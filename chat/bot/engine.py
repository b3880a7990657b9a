"""The queue-stage bot's decisions. Pure: from what the visitor said (or clicked), the bot's state in the
room and the group's knowledge, the actions to take and the bot's new state. `chat.bot.runner`
reads the rows, calls `decide` (or the webhook bot), and applies the actions.

The local bot:
- a click on a flow's buttons moves the flow (next step, resolve, hand-off);
- a click on "did this answer your question?" resolves (yes) or hands off (no);
- a text asking for a person ("human", "agent", "人工" ...) hands off;
- a text matching a flow trigger (at or above the threshold) starts that flow;
- a text matching a knowledge base entry answers it and asks whether that helped;
- anything else keeps the visitor queued: the group's unmatched text the first time, then silence.
After a hand-off the bot stays quiet (the visitor waits for a person and may keep typing).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from chat.bot.flows import Flow, Step
from chat.bot.kb import Index

HANDOFF_WORDS = frozenset(
    {"human", "agent", "person", "operator", "representative", "人工", "转人工", "人工客服", "客服", "真人"}
)
DEFAULT_GREETING = "Hello! Ask your question here; an agent will be with you shortly."
DEFAULT_UNMATCHED = "I could not find an answer to that. You are in the queue for an agent."
DEFAULT_HANDOFF = "I am passing you to an agent. Please stay on this page."
DEFAULT_OFFLINE = "Nobody is online right now. Leave a message and we will get back to you."
RESOLVED_TEXT = "Glad I could help. You can rate this chat below."
FEEDBACK_TEXT = "Did this answer your question?"
FEEDBACK_BUTTONS = (("yes", "Yes, thanks"), ("no", "No, I need an agent"))


# --- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Say:
    text: str


@dataclass(frozen=True)
class Buttons:
    text: str
    buttons: tuple[tuple[str, str], ...]  # (id, label)
    meta: dict[str, Any] = field(default_factory=dict)  # what a click refers to: flow step, kb entry


@dataclass(frozen=True)
class Card:
    title: str
    summary: str = ""
    image_url: str = ""
    link: str = ""


@dataclass(frozen=True)
class Resolve:
    pass


@dataclass(frozen=True)
class Handoff:
    pass


Action = Say | Buttons | Card | Resolve | Handoff


@dataclass(frozen=True)
class BotState:
    flow_id: int | None = None
    step: str = ""
    misses: int = 0
    handoff: bool = False


@dataclass(frozen=True)
class Texts:
    unmatched: str = DEFAULT_UNMATCHED
    handoff: str = DEFAULT_HANDOFF


@dataclass(frozen=True)
class Knowledge:
    """The group's knowledge: the KB index (keys = entry ids) with answers, and the flows with an
    index over their triggers (keys = flow ids)."""

    kb: Index
    answers: dict[int, str]
    flows: dict[int, Flow]
    triggers: Index
    threshold: float


@dataclass(frozen=True)
class Click:
    button_id: str
    meta: dict[str, Any]  # the clicked message's `meta`


# --- decisions ----------------------------------------------------------------------------------


def _enter(flow_id: int, step: Step, state: BotState) -> tuple[list[Action], BotState]:
    if step.buttons:
        meta = {"flow_id": flow_id, "step": step.id}
        return [Buttons(step.text, tuple((b.id, b.label) for b in step.buttons), meta)], replace(
            state, flow_id=flow_id, step=step.id
        )
    end: Action = Resolve() if step.action == "resolve" else Handoff()
    done = replace(state, flow_id=None, step="", handoff=isinstance(end, Handoff))
    return [Say(step.text), end], done


def _handoff(state: BotState, texts: Texts) -> tuple[list[Action], BotState]:
    return [Say(texts.handoff), Handoff()], replace(state, flow_id=None, step="", handoff=True)


def decide(
    said: str | Click, *, state: BotState, knowledge: Knowledge, texts: Texts
) -> tuple[list[Action], BotState]:
    """What the bot does about one visitor message while the room is queued."""
    if state.handoff:
        return [], state
    if isinstance(said, Click):
        return _click(said, state=state, knowledge=knowledge, texts=texts)
    words = set(said.lower().split()) | {said.strip().lower()}
    if words & HANDOFF_WORDS:
        return _handoff(state, texts)
    flow_hit = knowledge.triggers.best(said, threshold=knowledge.threshold)
    kb_hit = knowledge.kb.best(said, threshold=knowledge.threshold)
    if flow_hit is not None and (kb_hit is None or flow_hit.confidence >= kb_hit.confidence):
        flow = knowledge.flows[flow_hit.key]
        step = flow.step(flow.start)
        assert step is not None
        return _enter(flow_hit.key, step, replace(state, misses=0))
    if kb_hit is not None:
        answer = knowledge.answers[kb_hit.key]
        feedback = Buttons(FEEDBACK_TEXT, FEEDBACK_BUTTONS, {"kb_id": kb_hit.key})
        return [Say(answer), feedback], replace(state, flow_id=None, step="", misses=0)
    misses = state.misses + 1
    return ([Say(texts.unmatched)] if misses == 1 else []), replace(state, misses=misses)


def _click(
    click: Click, *, state: BotState, knowledge: Knowledge, texts: Texts
) -> tuple[list[Action], BotState]:
    meta = click.meta
    if "kb_id" in meta:
        if click.button_id == "yes":
            return [Say(RESOLVED_TEXT), Resolve()], replace(state, flow_id=None, step="")
        if click.button_id == "no":
            return _handoff(state, texts)
        return [], state
    flow_id, step_id = meta.get("flow_id"), meta.get("step")
    if not isinstance(flow_id, int) or flow_id != state.flow_id or step_id != state.step:
        return [], state  # a click on an old step: ignored
    flow = knowledge.flows.get(flow_id)
    step = flow.step(step_id) if flow is not None and isinstance(step_id, str) else None
    button = next((b for b in step.buttons if b.id == click.button_id), None) if step else None
    if flow is None or button is None:
        return [], state
    if button.action == "resolve":
        return [Say(RESOLVED_TEXT), Resolve()], replace(state, flow_id=None, step="")
    if button.action == "handoff":
        return _handoff(state, texts)
    nxt = flow.step(button.next or "")
    if nxt is None:
        return _handoff(state, texts)
    return _enter(flow_id, nxt, state)


def suggestions(question: str, *, knowledge: Knowledge, limit: int = 3) -> list[dict[str, Any]]:
    """The assistant: the best answers for the visitor's question, for the agent to pick from (no
    threshold: the agent judges)."""
    return [
        {"kb_id": m.key, "answer": knowledge.answers[m.key], "matched": m.phrase, "confidence": m.confidence}
        for m in knowledge.kb.search(question, limit=limit)
    ]
