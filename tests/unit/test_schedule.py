"""Sync windows exactly as SPEC 7.4 defines them: in a window exactly when the latest fire of the cron
schedule (at or before now) plus syncWindow is later than now; overlapping windows merge.

Dates used: 2026-11-27 is a Friday, 2026-11-28 a Saturday, 2026-11-30 a Monday.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from connected_registry.settings import SyncProperties
from connected_registry.sync.schedule import SyncSchedule, Window

HOUR = timedelta(hours=1)
TICK = timedelta(microseconds=1)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


DAILY = SyncSchedule("0 9 * * *", timedelta(hours=3))  # 09:00 to 12:00 UTC every day


# --- inside / outside, boundaries ---------------------------------------------------------------

@pytest.mark.parametrize("moment,inside", [
    ("2026-11-28T08:59:00", False), ("2026-11-28T08:59:59.999999", False),
    ("2026-11-28T09:00:00", True), ("2026-11-28T10:30:00", True), ("2026-11-28T11:59:00", True),
    ("2026-11-28T11:59:59.999999", True), ("2026-11-28T12:00:00", False), ("2026-11-28T23:00:00", False),
    ("2026-11-29T00:00:00", False),
])
def test_daily_window_boundaries_start_inclusive_end_exclusive(moment, inside):
    assert (DAILY.current_window(at(moment)) is not None) is inside


@pytest.mark.parametrize("moment", ["2026-11-28T09:00:00", "2026-11-28T10:00:00", "2026-11-28T11:59:00"])
def test_inside_the_window_is_reported_with_its_start_and_end(moment):
    assert DAILY.current_window(at(moment)) == Window(at("2026-11-28T09:00:00"), at("2026-11-28T12:00:00"))
    assert DAILY.next_window(at(moment)) == Window(at("2026-11-28T09:00:00"), at("2026-11-28T12:00:00"))


def test_a_device_booting_mid_window_is_inside_at_once():
    # No fire happens between boot and the check: the fire at 09:00 alone puts it inside.
    window = SyncSchedule("0 9 * * *", timedelta(hours=6)).current_window(at("2026-11-28T14:59:00"))
    assert window == Window(at("2026-11-28T09:00:00"), at("2026-11-28T15:00:00"))


def test_just_before_a_fire_is_outside_and_the_next_window_starts_at_the_fire():
    now = at("2026-11-28T08:59:30")
    assert DAILY.current_window(now) is None
    assert DAILY.next_window(now) == Window(at("2026-11-28T09:00:00"), at("2026-11-28T12:00:00"))
    assert DAILY.seconds_until_next_window(now) == 30


def test_at_the_end_of_a_window_the_next_one_is_tomorrow():
    now = at("2026-11-28T12:00:00")
    assert DAILY.current_window(now) is None
    assert DAILY.next_window(now) == Window(at("2026-11-29T09:00:00"), at("2026-11-29T12:00:00"))
    assert DAILY.seconds_until_next_window(now) == 21 * 3600


def test_seconds_until_next_window():
    assert DAILY.seconds_until_next_window(at("2026-11-28T08:59:00")) == 60
    assert DAILY.seconds_until_next_window(at("2026-11-28T08:59:59.500000")) == 0.5
    assert DAILY.seconds_until_next_window(at("2026-11-28T09:00:00")) == 0
    assert DAILY.seconds_until_next_window(at("2026-11-28T11:59:59")) == 0
    assert DAILY.seconds_until_next_window(at("2026-11-28T13:00:00")) == 20 * 3600


def test_now_in_another_time_zone_is_converted_to_utc():
    paris = timezone(timedelta(hours=1))
    assert DAILY.current_window(datetime(2026, 11, 28, 9, 30, tzinfo=paris)) is None  # 08:30 UTC
    window = DAILY.current_window(datetime(2026, 11, 28, 10, 30, tzinfo=paris))  # 09:30 UTC
    assert window == Window(at("2026-11-28T09:00:00"), at("2026-11-28T12:00:00"))
    assert window.start.utcoffset() == timedelta(0)


def test_a_naive_now_is_refused():
    with pytest.raises(ValueError, match="time zone"):
        DAILY.current_window(datetime(2026, 11, 28, 10, 0))


# --- across days, months, years -----------------------------------------------------------------

def test_windows_cross_midnight_and_month_ends():
    late = SyncSchedule("0 22 * * *", timedelta(hours=4))  # 22:00 to 02:00
    window = Window(at("2026-11-30T22:00:00"), at("2026-12-01T02:00:00"))
    assert late.current_window(at("2026-11-30T21:59:00")) is None
    assert late.current_window(at("2026-11-30T23:30:00")) == window
    assert late.current_window(at("2026-12-01T00:00:00")) == window
    assert late.current_window(at("2026-12-01T01:59:00")) == window
    assert late.current_window(at("2026-12-01T02:00:00")) is None
    assert late.next_window(at("2026-12-01T02:00:00")) == Window(at("2026-12-01T22:00:00"), at("2026-12-02T02:00:00"))


def test_windows_cross_the_year_end():
    late = SyncSchedule("0 22 * * *", timedelta(hours=4))
    assert late.current_window(at("2027-01-01T01:00:00")) == Window(at("2026-12-31T22:00:00"), at("2027-01-01T02:00:00"))


def test_monthly_schedule_finds_the_fire_of_the_previous_month():
    monthly = SyncSchedule("0 0 1 * *", timedelta(days=2))  # the first two days of each month
    assert monthly.current_window(at("2026-12-02T23:59:00")) == Window(at("2026-12-01T00:00:00"), at("2026-12-03T00:00:00"))
    assert monthly.current_window(at("2026-12-03T00:00:00")) is None
    assert monthly.next_window(at("2026-12-15T00:00:00")).start == at("2027-01-01T00:00:00")
    assert monthly.seconds_until_next_window(at("2026-12-31T23:00:00")) == 3600


def test_a_window_after_the_last_day_of_february():
    month_end = SyncSchedule("0 12 28 2 *", timedelta(days=2))
    # 2028 is a leap year: the window 28 Feb 12:00 to 1 Mar 12:00 passes through 29 February.
    assert month_end.current_window(at("2028-02-29T12:00:00")) is not None
    assert month_end.current_window(at("2028-03-01T11:59:00")) is not None
    assert month_end.current_window(at("2028-03-01T12:00:00")) is None
    # 2027 is not: the same window ends on 2 March.
    assert month_end.current_window(at("2027-03-02T11:59:00")) == Window(at("2027-02-28T12:00:00"), at("2027-03-02T12:00:00"))


# --- weekdays -----------------------------------------------------------------------------------

def test_weekday_schedules():
    weekdays = SyncSchedule("0 6 * * 1-5", HOUR)
    assert weekdays.current_window(at("2026-11-30T06:30:00")) == Window(at("2026-11-30T06:00:00"), at("2026-11-30T07:00:00"))  # Monday
    assert weekdays.current_window(at("2026-11-27T06:59:00")) is not None  # Friday
    assert weekdays.current_window(at("2026-11-28T06:30:00")) is None  # Saturday
    assert weekdays.current_window(at("2026-11-29T06:30:00")) is None  # Sunday
    assert weekdays.next_window(at("2026-11-27T07:00:00")).start == at("2026-11-30T06:00:00")  # Friday after -> Monday
    assert weekdays.seconds_until_next_window(at("2026-11-29T06:00:00")) == 24 * 3600


def test_weekday_names_are_accepted():
    assert SyncSchedule("0 6 * * mon-fri", HOUR).next_window(at("2026-11-28T00:00:00")).start == at("2026-11-30T06:00:00")


def test_a_friday_window_runs_over_the_weekend():
    weekend = SyncSchedule("0 18 * * 5", timedelta(days=3))  # Friday 18:00 to Monday 18:00
    window = Window(at("2026-11-27T18:00:00"), at("2026-11-30T18:00:00"))
    assert weekend.current_window(at("2026-11-29T12:00:00")) == window
    assert weekend.current_window(at("2026-11-30T17:59:00")) == window
    assert weekend.current_window(at("2026-11-30T18:00:00")) is None
    assert weekend.next_window(at("2026-12-01T00:00:00")).start == at("2026-12-04T18:00:00")


# --- merging ------------------------------------------------------------------------------------

def test_overlapping_windows_merge_and_start_at_the_first_fire_of_the_chain():
    twice = SyncSchedule("0 9,10 * * *", timedelta(hours=2))  # [09:00, 11:00) and [10:00, 12:00)
    merged = Window(at("2026-11-28T09:00:00"), at("2026-11-28T12:00:00"))
    assert twice.current_window(at("2026-11-28T09:30:00")) == merged  # the 10:00 fire extends the end
    assert twice.current_window(at("2026-11-28T11:30:00")) == merged  # the latest fire is 10:00, the start 09:00
    assert twice.current_window(at("2026-11-28T12:00:00")) is None
    assert twice.next_window(at("2026-11-28T08:00:00")) == merged


def test_merging_crosses_midnight():
    around = SyncSchedule("0 0,22 * * *", timedelta(hours=3))  # [22:00, 01:00) and [00:00, 03:00)
    merged = Window(at("2026-11-30T22:00:00"), at("2026-12-01T03:00:00"))
    assert around.current_window(at("2026-11-30T23:00:00")) == merged
    assert around.current_window(at("2026-12-01T02:00:00")) == merged
    assert around.current_window(at("2026-12-01T03:00:00")) is None
    assert around.next_window(at("2026-12-01T12:00:00")) == Window(at("2026-12-01T22:00:00"), at("2026-12-02T03:00:00"))


def test_touching_windows_merge():
    # [09:00, 11:00) and [11:00, 13:00): at 11:00 the second fire has happened, so there is no gap.
    touching = SyncSchedule("0 9,11 * * *", timedelta(hours=2))
    merged = Window(at("2026-11-28T09:00:00"), at("2026-11-28T13:00:00"))
    assert touching.current_window(at("2026-11-28T10:59:00")) == merged
    assert touching.current_window(at("2026-11-28T11:00:00")) == merged
    assert touching.current_window(at("2026-11-28T13:00:00")) is None


def test_windows_with_a_gap_do_not_merge():
    gapped = SyncSchedule("0 */3 * * *", timedelta(hours=2))  # [00:00, 02:00), [03:00, 05:00), ...
    assert gapped.current_window(at("2026-11-28T01:59:00")) == Window(at("2026-11-28T00:00:00"), at("2026-11-28T02:00:00"))
    assert gapped.current_window(at("2026-11-28T02:00:00")) is None
    assert gapped.current_window(at("2026-11-28T02:59:00")) is None
    assert gapped.current_window(at("2026-11-28T03:00:00")) == Window(at("2026-11-28T03:00:00"), at("2026-11-28T05:00:00"))


def test_weekday_windows_merge_through_the_week_but_not_the_weekend():
    workdays = SyncSchedule("0 9 * * 1-5", timedelta(days=1))  # Monday 09:00 to Saturday 09:00
    week = Window(at("2026-11-30T09:00:00"), at("2026-12-05T09:00:00"))
    assert workdays.current_window(at("2026-12-02T12:00:00")) == week  # Wednesday
    assert workdays.current_window(at("2026-12-05T08:59:00")) == week  # Saturday morning
    assert workdays.current_window(at("2026-12-05T09:00:00")) is None
    assert workdays.current_window(at("2026-11-30T08:59:00")) is None  # Monday before the fire
    assert workdays.next_window(at("2026-12-06T00:00:00")) == Window(at("2026-12-07T09:00:00"), at("2026-12-12T09:00:00"))


@pytest.mark.parametrize("schedule,window", [
    ("0 * * * *", timedelta(hours=2)),  # each hour, two hours long: overlapping
    ("0 */2 * * *", timedelta(hours=2)),  # touching
    ("* * * * *", timedelta(days=7)),  # the largest syncWindow on the default schedule
    ("0 9 * * *", timedelta(days=1)),  # daily windows touching
    ("0 9 * * 1-5", timedelta(days=3)),  # Friday's window reaches Monday's fire
])
def test_windows_that_always_overlap_merge_into_one_endless_window(schedule, window):
    endless = SyncSchedule(schedule, window)
    for minutes in range(0, 8 * 24 * 60, 97):  # a week and a day, including a weekend
        now = at("2026-11-27T00:00:00") + timedelta(minutes=minutes)
        current = endless.current_window(now)
        assert current is not None, now
        # Bounded at 400 days each way; the instance is inside all along.
        assert now - timedelta(days=401) < current.start <= now - timedelta(days=396)  # a fire: not on weekends
        assert now + timedelta(days=399) <= current.end < now + timedelta(days=401) + window
        assert endless.seconds_until_next_window(now) == 0


def test_a_long_chain_that_is_not_weekly_is_followed_to_its_end():
    # Hourly except in December, two hours long: one window from 1 January to 1 December 01:00.
    hourly = SyncSchedule("0 * * 1-11 *", timedelta(hours=2))
    window = Window(at("2026-01-01T00:00:00"), at("2026-12-01T01:00:00"))
    assert hourly.current_window(at("2026-06-15T12:34:00")) == window
    assert hourly.current_window(at("2026-12-01T00:59:00")) == window
    assert hourly.current_window(at("2026-12-01T01:00:00")) is None
    assert hourly.next_window(at("2026-12-15T00:00:00")).start == at("2027-01-01T00:00:00")


def test_an_endless_chain_the_schedule_cannot_prove_endless_stops_at_the_horizon():
    # Every other day of the month, two days long: the windows always touch or overlap (31st -> 1st,
    # 29th/27th -> 1st), but the day-of-month field hides the repetition. The merge stops ~400 days out.
    alternate = SyncSchedule("0 0 */2 * *", timedelta(days=2))
    now = at("2026-11-28T12:00:00")
    window = alternate.current_window(now)
    assert window is not None
    assert now - timedelta(days=403) < window.start <= now - timedelta(days=400)
    assert now + timedelta(days=400) <= window.end < now + timedelta(days=403)
    assert window.start.hour == 0 and window.start.minute == 0 and window.start.day % 2 == 1  # a fire


# --- against a brute-force reading of SPEC 7.4 --------------------------------------------------

ORACLE_CASES = [
    ("0 9 * * *", timedelta(hours=3), lambda t: t.hour == 9 and t.minute == 0),
    ("0 9,10 * * *", timedelta(hours=2), lambda t: t.hour in (9, 10) and t.minute == 0),
    ("0 0,22 * * *", timedelta(hours=3), lambda t: t.hour in (0, 22) and t.minute == 0),
    ("30 */3 * * *", timedelta(hours=2), lambda t: t.hour % 3 == 0 and t.minute == 30),
    ("*/20 8-9 * * 1-5", HOUR, lambda t: 8 <= t.hour <= 9 and t.minute % 20 == 0 and t.weekday() < 5),
    ("45 23 * * 0,6", timedelta(hours=5), lambda t: t.hour == 23 and t.minute == 45 and t.weekday() >= 5),
]


def _inside(fires, window: timedelta, now: datetime) -> bool:
    """SPEC 7.4 literally: some fire f <= now with f + window > now (walk back minute by minute)."""
    minute = now.replace(second=0, microsecond=0)
    while minute + window > now:
        if fires(minute):
            return True
        minute -= timedelta(minutes=1)
    return False


@pytest.mark.parametrize("schedule,window,fires", ORACLE_CASES, ids=[case[0] for case in ORACLE_CASES])
def test_windows_agree_with_the_definition(schedule, window, fires):
    subject = SyncSchedule(schedule, window)
    start = at("2026-11-26T00:00:00")  # Thursday, through the weekend and the end of November
    seen = set()
    for minutes in range(0, 6 * 24 * 60, 23):
        now = start + timedelta(minutes=minutes, seconds=minutes % 60)
        current = subject.current_window(now)
        assert (current is not None) is _inside(fires, window, now), now
        upcoming = subject.next_window(now)
        if current is None:
            assert upcoming.start > now and fires(upcoming.start)
            assert subject.seconds_until_next_window(now) == (upcoming.start - now).total_seconds()
        else:
            assert upcoming == current and subject.seconds_until_next_window(now) == 0
        if upcoming in seen:
            continue
        seen.add(upcoming)
        # A window is one stretch: inside from its start to just before its end, outside just around it.
        assert fires(upcoming.start) and fires(upcoming.end - window)
        assert _inside(fires, window, upcoming.start) and _inside(fires, window, upcoming.end - TICK)
        assert not _inside(fires, window, upcoming.start - TICK) and not _inside(fires, window, upcoming.end)


# --- continuous mode, settings, validation ------------------------------------------------------

def test_continuous_without_a_window():
    continuous = SyncSchedule()
    now = at("2026-11-28T10:00:30")
    window = continuous.current_window(now)
    assert window == Window(at("2026-11-28T10:00:00"), None)  # the latest fire of "* * * * *"
    assert continuous.next_window(now) == window
    assert continuous.seconds_until_next_window(now) == 0


def test_continuous_whatever_the_schedule():
    rare = SyncSchedule("0 9 * * 1", None)
    now = at("2026-11-28T10:00:00")  # Saturday: long after Monday's fire
    assert rare.current_window(now) == Window(at("2026-11-23T09:00:00"), None)
    assert rare.seconds_until_next_window(now) == 0


def test_from_settings():
    scheduled = SyncSchedule.from_settings(SyncProperties(schedule="0 9 * * *", syncWindow="PT3H"))
    assert scheduled.schedule == "0 9 * * *" and scheduled.sync_window == timedelta(hours=3)
    assert scheduled.current_window(at("2026-11-28T11:59:00")) == Window(at("2026-11-28T09:00:00"), at("2026-11-28T12:00:00"))
    assert scheduled.current_window(at("2026-11-28T12:00:00")) is None
    default = SyncSchedule.from_settings(SyncProperties())
    assert default.schedule == "* * * * *" and default.sync_window is None
    assert default.current_window(at("2026-11-28T12:00:00")).end is None


@pytest.mark.parametrize("schedule", ["0 0 9 * * *", "0 9 * *", "@daily", "", "0 9 * * * 2026", "61 * * * *", "a b c d e"])
def test_only_five_field_cron_is_accepted(schedule):
    with pytest.raises(ValueError, match="5-field"):
        SyncSchedule(schedule, HOUR)


def test_a_schedule_that_never_fires_is_refused():
    with pytest.raises(ValueError, match="never fires"):
        SyncSchedule("0 0 30 2 *", HOUR)


@pytest.mark.parametrize("window", [timedelta(0), timedelta(hours=-1)])
def test_an_empty_window_is_refused(window):
    with pytest.raises(ValueError, match="longer than zero"):
        SyncSchedule("0 9 * * *", window)
