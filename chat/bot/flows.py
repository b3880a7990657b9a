"""Admin-defined multi-turn flows: a small tree (or graph) of steps. Pure: validation and stepping.

A flow is JSON:

    {"start": "ask",
     "steps": {
       "ask":    {"text": "Which order?", "buttons": [{"label": "Not arrived", "next": "late"},
                                                      {"label": "Talk to someone", "action": "handoff"}]},
       "late":   {"text": "Orders ship in 48 h. Did that help?",
                  "buttons": [{"label": "Yes", "action": "resolve"}, {"label": "No", "action": "handoff"}]},
       "thanks": {"text": "Glad to help!", "action": "resolve"}}}

A step shows its text; with buttons it waits for a click, each button going to a step (`next`) or
ending the flow (`action`: `resolve` = the room is completed by the bot, `handoff` = queued for a
human). A step without buttons ends the flow with its own `action`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from callcenter.errors import Invalid

MAX_STEPS = 50
MAX_BUTTONS = 8
MAX_LABEL = 40
MAX_TEXT = 1000
ACTIONS = ("resolve", "handoff")
_STEP_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Button:
    id: str  # "b0", "b1" ... by position
    label: str
    next: str | None = None
    action: str | None = None


@dataclass(frozen=True)
class Step:
    id: str
    text: str
    buttons: tuple[Button, ...] = ()
    action: str | None = None


@dataclass(frozen=True)
class Flow:
    start: str
    steps: dict[str, Step]

    def step(self, step_id: str) -> Step | None:
        return self.steps.get(step_id)


def _bad(message: str) -> Invalid:
    return Invalid(message, field="steps")


def _text(value: Any, where: str, *, limit: int, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise _bad(f"{where} needs a text")
    if len(value) > limit:
        raise _bad(f"{where}: at most {limit} characters")
    return value.strip()


def parse(raw: Any) -> Flow:
    """A validated flow, or `Invalid` naming what is wrong (field `steps`)."""
    if not isinstance(raw, dict):
        raise _bad("a flow is an object with start and steps")
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, dict) or not steps_raw:
        raise _bad("a flow needs at least one step")
    if len(steps_raw) > MAX_STEPS:
        raise _bad(f"a flow has at most {MAX_STEPS} steps")
    steps: dict[str, Step] = {}
    for sid, body in steps_raw.items():
        if not isinstance(sid, str) or not _STEP_ID.match(sid):
            raise _bad(f"step id {sid!r}: 1-64 letters, digits, _ or -")
        if not isinstance(body, dict):
            raise _bad(f"step {sid} is not an object")
        text = _text(body.get("text"), f"step {sid}", limit=MAX_TEXT)
        buttons_raw = body.get("buttons") or []
        if not isinstance(buttons_raw, list) or len(buttons_raw) > MAX_BUTTONS:
            raise _bad(f"step {sid}: buttons is a list of at most {MAX_BUTTONS}")
        buttons = []
        for i, b in enumerate(buttons_raw):
            if not isinstance(b, dict):
                raise _bad(f"step {sid} button {i + 1} is not an object")
            label = _text(b.get("label"), f"step {sid} button {i + 1}", limit=MAX_LABEL)
            nxt, action = b.get("next"), b.get("action")
            if (nxt is None) == (action is None):
                raise _bad(f"step {sid} button {label!r}: give either next or action")
            if action is not None and action not in ACTIONS:
                raise _bad(f"step {sid} button {label!r}: action is resolve or handoff")
            if nxt is not None and not isinstance(nxt, str):
                raise _bad(f"step {sid} button {label!r}: next names a step")
            buttons.append(Button(f"b{i}", label, nxt, action))
        action = body.get("action")
        if buttons and action is not None:
            raise _bad(f"step {sid}: a step with buttons ends through its buttons, not an action")
        if not buttons and action not in ACTIONS:
            raise _bad(f"step {sid}: a step without buttons needs action resolve or handoff")
        steps[sid] = Step(sid, text, tuple(buttons), action)
    start = raw.get("start")
    if not isinstance(start, str) or start not in steps:
        raise _bad("start names a step of the flow")
    for step in steps.values():
        for b in step.buttons:
            if b.next is not None and b.next not in steps:
                raise _bad(f"step {step.id} button {b.label!r} goes to unknown step {b.next!r}")
    return Flow(start, steps)


def dump(flow: Flow) -> dict[str, Any]:
    """The JSON form of a validated flow (what is stored)."""
    return {
        "start": flow.start,
        "steps": {
            s.id: {
                "text": s.text,
                **(
                    {
                        "buttons": [
                            {"label": b.label, **({"next": b.next} if b.next else {"action": b.action})}
                            for b in s.buttons
                        ]
                    }
                    if s.buttons
                    else {"action": s.action}
                ),
            }
            for s in flow.steps.values()
        },
    }
