"""Pure rules about leads: what an attempt's result means for the next one, and when a lead may be
called (its calling window, in its own time zone)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, time
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callcenter.errors import Invalid
from callcenter.models import CallResult, LeadStatus

R = CallResult
# UK (Ofcom): after an abandoned call, no repeat call within 72 hours unless an agent is guaranteed.
ABANDON_REDIAL_MIN_S = 72 * 3600
# Results that say nothing about the customer: the attempt is given back and the lead dialled again soon.
NOT_AN_ATTEMPT = frozenset({R.CANCELLED, R.SKIPPED, R.NOT_DIALLED, R.REFUSED})
RETRYABLE = frozenset({R.BUSY, R.NO_ANSWER, R.CONGESTION, R.FAILED, R.LOST, R.MACHINE, R.ABANDONED})
REQUEUE_DELAY_S = 5.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    delays: Mapping[str, float]  # result -> seconds before the next attempt; absent = never retried

    @staticmethod
    def parse(max_attempts: int, given: str | Mapping[str, Any]) -> RetryPolicy:
        """From a task's settings: `delays` as a mapping or its JSON text."""
        raw: Any = given
        if isinstance(given, str):
            try:
                raw = json.loads(given or "{}")
            except json.JSONDecodeError:
                raise Invalid("retry delays must be a JSON object", field="retry_delays") from None
        if not isinstance(raw, Mapping):
            raise Invalid("retry delays must be a JSON object {result: seconds}", field="retry_delays")
        delays: dict[str, float] = {}
        for key, value in raw.items():
            if key not in {r.value for r in RETRYABLE}:
                raise Invalid(
                    f"{key!r} cannot be retried (retryable: {sorted(r.value for r in RETRYABLE)})",
                    field="retry_delays",
                )
            if not isinstance(value, int | float) or value < 0:
                raise Invalid(f"retry delay for {key} must be seconds >= 0", field="retry_delays")
            delays[key] = float(value)
        if max_attempts < 1:
            raise Invalid("max attempts must be at least 1", field="max_attempts")
        return RetryPolicy(max_attempts, delays)


def after_attempt(
    result: CallResult, *, attempts: int, policy: RetryPolicy, now: float, agent_guaranteed: bool = False
) -> tuple[LeadStatus, float, int]:
    """(status, next_at, attempts) of a lead after an attempt that ended with `result`.

    `attempts` counts this attempt. Cancelled / not-dialled attempts are given back.

    >>> after_attempt(CallResult.BUSY, attempts=1, policy=RetryPolicy(3, {"busy": 600.0}), now=0)
    (<LeadStatus.PENDING: 'pending'>, 600.0, 1)
    """
    if result in NOT_AN_ATTEMPT:
        return LeadStatus.PENDING, now + REQUEUE_DELAY_S, max(0, attempts - 1)
    if result is R.DNC:
        return LeadStatus.DNC, now, attempts
    delay = policy.delays.get(result.value)
    if result is R.ANSWERED or delay is None or attempts >= policy.max_attempts:
        return LeadStatus.DONE, now, attempts
    if result is R.ABANDONED and not agent_guaranteed:
        delay = max(delay, ABANDON_REDIAL_MIN_S)
    return LeadStatus.PENDING, now + delay, attempts


# --- calling windows ---------------------------------------------------------------------------

_HHMM = re.compile(r"([01][0-9]|2[0-4]):([0-5][0-9])")
UNKNOWN_ZONE = "Etc/Unknown"


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _parse_hhmm(value: str, field: str) -> time:
    m = _HHMM.fullmatch(value or "")
    if not m:
        raise Invalid(f"{field} must be HH:MM, got {value!r}", field=field)
    h, mi = int(m.group(1)), int(m.group(2))
    if h == 24:
        if mi:
            raise Invalid(f"{field} must be at most 24:00", field=field)
        return time.max
    return time(h, mi)


def validate_window(start: str, end: str, days: str, tz: str) -> None:
    s, e = _parse_hhmm(start, "window_start"), _parse_hhmm(end, "window_end")
    if s >= e:
        raise Invalid("window_start must be before window_end", field="window_start")
    if not days or any(d not in "0123456" for d in days):
        raise Invalid("window_days lists weekdays as digits, Monday=0 ... Sunday=6", field="window_days")
    try:
        zone(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(f"unknown time zone {tz!r}", field="timezone") from None


@dataclass(frozen=True)
class Window:
    start: time
    end: time
    days: frozenset[int]
    default_tz: str

    @staticmethod
    def of(start: str, end: str, days: str, default_tz: str) -> Window:
        return Window(
            _parse_hhmm(start, "window_start"),
            _parse_hhmm(end, "window_end"),
            frozenset(int(d) for d in days),
            default_tz,
        )

    def open_in(self, tz: str, now: float) -> bool:
        """Is it calling time at `now` in zone `tz`? A key naming several zones ('A|B', a number whose
        region spans zones) is open only when every one of them is."""
        names = [n for n in (tz or "").split("|") if n and n != UNKNOWN_ZONE] or [self.default_tz]
        for name in names:
            local = datetime.fromtimestamp(now, zone(name))
            if local.weekday() not in self.days:
                return False
            t = local.time()
            if not (self.start <= t < self.end or (self.end == time.max and t >= self.start)):
                return False
        return True

    def open_keys(self, keys: Iterable[str], now: float) -> list[str]:
        return [k for k in keys if self.open_in(k, now)]
