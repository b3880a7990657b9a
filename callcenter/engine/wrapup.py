"""Wrap-up rules, pure: when an agent's after-call work is over, whether an unsaved outcome holds them
in wrap-up, and how far "extend" may push the end. Times come in as arguments (the clock is the
caller's), so the dialer, the web and the tests share one answer.

An agent leaves wrap-up for ready when its time (the task's `wrap_up_s` plus what the agent added
with "extend") is over, unless the task holds for an unsaved outcome and the call's outcome is not
saved: then they stay until they save it or choose Ready themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

EXTEND_STEP_S = 30.0  # what one click on "extend" adds
MAX_EXTRA_S = 300.0  # at most this much in all, per wrap-up: a wrap-up is not a break


def extended(extra_s: float, *, step: float = EXTEND_STEP_S, cap: float = MAX_EXTRA_S) -> float:
    """The agent's added time after one more "extend", never past `cap`.

    >>> extended(0.0), extended(280.0), extended(300.0)
    (30.0, 300.0, 300.0)
    """
    return min(cap, max(0.0, extra_s) + step)


def ends_at(since: float, wrap_s: float, extra_s: float) -> float:
    """When a wrap-up that began at `since` is due to end."""
    return since + wrap_s + max(0.0, extra_s)


@dataclass(frozen=True)
class WrapView:
    """What the workstation shows of a wrap-up: its end, whether the end waits for the outcome, and
    whether "extend" can still add time."""

    ends_at: float
    hold: bool
    saved: bool
    extra_s: float
    can_extend: bool

    @property
    def held(self) -> bool:
        """Over, and still waiting for the outcome."""
        return self.hold and not self.saved


def view(*, since: float, wrap_s: float, extra_s: float, hold: bool, saved: bool) -> WrapView:
    return WrapView(ends_at(since, wrap_s, extra_s), hold, saved, extra_s, extra_s < MAX_EXTRA_S)


def time_is_up(now: float, *, since: float, wrap_s: float, extra_s: float, timer_fired: bool = False) -> bool:
    """Whether the wrap-up's time is over. A timer the dialer set at the hang-up (possibly shorter
    than `wrap_s`: a simulated agent's sampled wrap-up) counts unless the agent has extended since.

    >>> time_is_up(59.0, since=0.0, wrap_s=60.0, extra_s=0.0)
    False
    >>> time_is_up(59.0, since=0.0, wrap_s=60.0, extra_s=0.0, timer_fired=True)
    True
    >>> time_is_up(61.0, since=0.0, wrap_s=60.0, extra_s=30.0, timer_fired=True)
    False
    """
    if timer_fired and extra_s <= 0:
        return True
    return now >= ends_at(since, wrap_s, extra_s)


def held(*, hold: bool, simulated: bool, saved: bool) -> bool:
    """Whether an agent whose time is up stays in wrap-up: the task holds, the outcome is unsaved,
    and a person is at the desk (a simulated agent never saves anything).

    >>> held(hold=True, simulated=False, saved=False), held(hold=True, simulated=False, saved=True)
    (True, False)
    >>> held(hold=False, simulated=False, saved=False), held(hold=True, simulated=True, saved=False)
    (False, False)
    """
    return hold and not simulated and not saved
