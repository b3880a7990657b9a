"""Retry timing and calling windows in the lead's own time zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from callcenter.errors import Invalid
from callcenter.models import CallResult, LeadStatus
from callcenter.policy import ABANDON_REDIAL_MIN_S, RetryPolicy, Window, after_attempt, validate_window

POLICY = RetryPolicy(3, {"busy": 600.0, "no_answer": 1800.0, "abandoned": 3600.0})


def test_busy_number_is_retried_after_its_delay() -> None:
    assert after_attempt(CallResult.BUSY, attempts=1, policy=POLICY, now=1000.0) == (
        LeadStatus.PENDING,
        1600.0,
        1,
    )


def test_no_more_attempts_after_the_maximum() -> None:
    status, _, attempts = after_attempt(CallResult.NO_ANSWER, attempts=3, policy=POLICY, now=0.0)
    assert (status, attempts) == (LeadStatus.DONE, 3)


def test_results_not_in_the_policy_are_never_retried() -> None:
    assert after_attempt(CallResult.FAILED, attempts=1, policy=POLICY, now=0.0)[0] is LeadStatus.DONE
    assert after_attempt(CallResult.ANSWERED, attempts=1, policy=POLICY, now=0.0)[0] is LeadStatus.DONE


def test_abandoned_lead_waits_72_hours_unless_an_agent_is_guaranteed() -> None:
    status, at, _ = after_attempt(CallResult.ABANDONED, attempts=1, policy=POLICY, now=0.0)
    assert (status, at) == (LeadStatus.PENDING, ABANDON_REDIAL_MIN_S)
    assert (
        after_attempt(CallResult.ABANDONED, attempts=1, policy=POLICY, now=0.0, agent_guaranteed=True)[1]
        == 3600.0
    )


def test_cancelled_attempt_is_given_back() -> None:
    status, _, attempts = after_attempt(CallResult.CANCELLED, attempts=2, policy=POLICY, now=0.0)
    assert (status, attempts) == (LeadStatus.PENDING, 1)


def test_dnc_at_dial_time_marks_the_lead() -> None:
    assert after_attempt(CallResult.DNC, attempts=1, policy=POLICY, now=0.0)[0] is LeadStatus.DNC


def test_bad_retry_policy_names_its_field() -> None:
    for bad in ('{"answered": 10}', '{"busy": -1}', "[1]", "nope"):
        with pytest.raises(Invalid) as info:
            RetryPolicy.parse(3, bad)
        assert info.value.field == "retry_delays"


def _at(year: int, month: int, day: int, hour: int, minute: int, tz: str) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(tz)).timestamp()


def test_calling_window_follows_each_leads_time_zone() -> None:
    window = Window.of("08:00", "21:00", "0123456", "Asia/Shanghai")
    now = _at(2026, 11, 25, 9, 0, "Asia/Shanghai")  # 09:00 in Shanghai is 20:00 the day before in New York
    assert window.open_in("Asia/Shanghai", now)
    assert window.open_in("America/New_York", now)
    later = _at(2026, 11, 25, 11, 0, "Asia/Shanghai")  # 22:00 in New York
    assert window.open_in("Asia/Shanghai", later)
    assert not window.open_in("America/New_York", later)
    assert window.open_keys(["Asia/Shanghai", "America/New_York", ""], later) == ["Asia/Shanghai", ""]


def test_number_spanning_zones_is_called_only_when_all_are_open() -> None:
    window = Window.of("08:00", "21:00", "0123456", "UTC")
    now = _at(2026, 7, 1, 20, 30, "America/Chicago")  # 21:30 in New York, 20:30 in Chicago
    assert window.open_in("America/Chicago", now)
    assert not window.open_in("America/Chicago|America/New_York", now)


def test_window_respects_weekdays_and_dst() -> None:
    weekdays = Window.of("09:00", "17:00", "01234", "Europe/London")
    saturday = _at(2026, 3, 28, 12, 0, "Europe/London")
    assert not weekdays.open_in("Europe/London", saturday)
    after_dst = _at(2026, 3, 30, 9, 30, "Europe/London")  # BST began on 29 March
    assert weekdays.open_in("Europe/London", after_dst)
    assert not weekdays.open_in("Europe/London", after_dst - 3600)


def test_window_validation_names_fields() -> None:
    for args, field in [
        (("8", "21:00", "0", "UTC"), "window_start"),
        (("09:00", "08:00", "0", "UTC"), "window_start"),
        (("08:00", "21:00", "9", "UTC"), "window_days"),
        (("08:00", "21:00", "0", "Mars/Base"), "timezone"),
    ]:
        with pytest.raises(Invalid) as info:
            validate_window(*args)
        assert info.value.field == field
