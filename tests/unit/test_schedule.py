"""Sync windows exactly as SPEC 7.4 defines them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from connected_registry.sync.schedule import SyncSchedule


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


DAILY = SyncSchedule("0 9 * * *", timedelta(hours=3))


@pytest.mark.parametrize("moment,inside", [
    ("2026-11-28T08:59:59", False), ("2026-11-28T09:00:00", True), ("2026-11-28T10:30:00", True),
    ("2026-11-28T11:59:59", True), ("2026-11-28T12:00:00", False), ("2026-11-28T23:00:00", False),
])
def test_daily_window_boundaries_end_exclusive(moment, inside):
    assert (DAILY.current_window(at(moment)) is not None) is inside


def test_a_device_booting_mid_window_is_inside_with_the_right_end():
    window = DAILY.current_window(at("2026-11-28T10:00:00"))
    assert window.start == at("2026-11-28T09:00:00") and window.end == at("2026-11-28T12:00:00")


def test_outside_the_next_window_is_the_next_fire():
    window = DAILY.next_window(at("2026-11-28T13:00:00"))
    assert window.start == at("2026-11-29T09:00:00") and window.end == at("2026-11-29T12:00:00")
    assert DAILY.seconds_until_next_window(at("2026-11-29T08:59:00")) == 60
    assert DAILY.seconds_until_next_window(at("2026-11-29T09:30:00")) == 0


def test_windows_cross_midnight_and_month_ends():
    late = SyncSchedule("0 22 * * *", timedelta(hours=4))
    assert late.current_window(at("2026-11-30T23:30:00")).end == at("2026-12-01T02:00:00")
    assert late.current_window(at("2026-12-01T01:59:00")) is not None
    assert late.current_window(at("2026-12-01T02:00:00")) is None


def test_overlapping_windows_merge():
    hourly = SyncSchedule("0 * * * *", timedelta(hours=2))
    window = hourly.current_window(at("2026-11-28T10:15:00"))
    assert window is not None and window.end - window.start > timedelta(days=1)


def test_weekday_schedules():
    weekdays = SyncSchedule("0 6 * * 1-5", timedelta(hours=1))
    assert weekdays.current_window(at("2026-11-30T06:30:00")) is not None  # a Monday
    assert weekdays.current_window(at("2026-11-29T06:30:00")) is None  # a Sunday
    assert weekdays.next_window(at("2026-11-28T07:00:00")).start == at("2026-11-30T06:00:00")  # Saturday -> Monday


def test_continuous_without_a_window():
    continuous = SyncSchedule()
    window = continuous.current_window(at("2026-11-28T10:00:00"))
    assert window is not None and window.end is None
    assert continuous.seconds_until_next_window(at("2026-11-28T10:00:00")) == 0


def test_six_field_cron_is_refused():
    with pytest.raises(ValueError, match="5-field"):
        SyncSchedule("0 0 9 * * *", timedelta(hours=1))
