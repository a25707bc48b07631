"""When to sync (SPEC 7.4): pure logic, no I/O and no clock; every `now` is passed in.

The instance is *in a window* exactly when the latest time the cron `schedule` fired (at or before
now), plus `syncWindow`, is later than now. One fire at `f` therefore covers the half-open interval
`[f, f + syncWindow)`: a device that boots in the middle of it is inside at once, and at exactly
`f + syncWindow` it is outside (unless another fire covers that moment).

Overlapping windows merge: the `Window` returned is the whole stretch of time that is in a window
around `now`, from the earliest fire of the merged chain to the end of the last window in it.
Windows that merely touch (a fire exactly at the end of the previous window) merge too, because the
definition above has no gap there: at that moment the new fire has just happened.

Bounds. A chain of windows may never end (`* * * * *` with `P7D`, `0 * * * *` with `PT2H`).
- When the schedule repeats every day or every week (day-of-month and month are `*`, no `#` in the
  weekday), a merged stretch at least one period long is proven endless. Its `start` is then the
  first fire at or after `now - 400 days` and its `end` the window of the last fire at or before
  `now + 400 days`.
- Otherwise the merge walks at most `_MAX_STEPS` steps (each step jumps by up to one syncWindow, so
  a long chain takes few of them) and at most `_HORIZON` (400 days) away from `now`, each way. Where
  it stops, the reported `start`/`end` are the furthest fire/end reached: the instance really is in a
  window all the way from `start` to `end`, but the true window may begin earlier or end later.
In both cases a caller that sleeps until `end` and asks again simply gets the rest of the window.

All datetimes are timezone-aware UTC (an aware `now` in another zone is converted; a naive one is
refused). The cron is UTC and has no daylight saving time.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from croniter import croniter

from connected_registry.durations import parse_duration

DEFAULT_SCHEDULE = "* * * * *"
_HORIZON = timedelta(days=400)  # how far from `now` a merged window is followed, each way
_MAX_STEPS = 10_000  # merge steps each way (one step jumps by up to one syncWindow)
_TICK = timedelta(microseconds=1)
_DAY = timedelta(days=1)
_WEEK = timedelta(days=7)


@dataclass(frozen=True)
class Window:
    start: datetime  # when the (merged) window opened
    end: datetime | None  # exclusive; None: continuous (no syncWindow), never ends


class _Fires:
    """The fire times of one cron expression; a private copy of the parsed schedule per query."""

    def __init__(self, template: croniter) -> None:
        self._cron = copy.copy(template)

    def at_or_before(self, moment: datetime) -> datetime:
        self._cron.set_current(moment + _TICK, force=True)
        return self._cron.get_prev(datetime)

    def at_or_after(self, moment: datetime) -> datetime:
        self._cron.set_current(moment - _TICK, force=True)
        return self._cron.get_next(datetime)

    def after(self, moment: datetime) -> datetime:
        self._cron.set_current(moment, force=True)
        return self._cron.get_next(datetime)


class SyncSchedule:
    """A 5-field UTC cron `schedule` and an optional `sync_window` (None: always in a window)."""

    def __init__(self, schedule: str = DEFAULT_SCHEDULE, sync_window: timedelta | None = None) -> None:
        if not isinstance(schedule, str) or len(schedule.split()) != 5 or not croniter.is_valid(schedule):
            raise ValueError(
                f"{schedule!r} is not a 5-field cron expression (minute hour day-of-month month day-of-week, UTC)"
            )
        if sync_window is not None and sync_window <= timedelta(0):
            raise ValueError(f"the sync window must be longer than zero, not {sync_window}")
        self.schedule = schedule
        self.sync_window = sync_window
        # Parsed once, so fields croniter picks at random ('R') stay the same for this schedule's life.
        self._template = croniter(schedule, datetime(2000, 1, 1, tzinfo=timezone.utc))
        try:
            _Fires(self._template).after(datetime(2000, 1, 1, tzinfo=timezone.utc))
        except ValueError:  # croniter's CroniterBadDateError, e.g. "0 0 30 2 *"
            raise ValueError(f"{schedule!r} never fires") from None
        self._period = self._repeat_period(self._template)

    @classmethod
    def from_settings(cls, sync_properties) -> "SyncSchedule":
        """From `settings.SyncProperties`: `schedule` and `syncWindow` (an ISO 8601 string or None)."""
        window = sync_properties.syncWindow
        return cls(sync_properties.schedule, parse_duration(window) if window else None)

    def __repr__(self) -> str:
        return f"SyncSchedule({self.schedule!r}, {self.sync_window!r})"

    def current_window(self, now: datetime) -> Window | None:
        """The window containing `now`, or None when `now` is outside every window."""
        now = _utc(now)
        fires = _Fires(self._template)
        latest = fires.at_or_before(now)
        if self.sync_window is None:
            return Window(latest, None)
        if latest + self.sync_window <= now:
            return None
        return self._merged(fires, latest, now)

    def next_window(self, now: datetime) -> Window:
        """`current_window(now)` when inside one, else the next window to open."""
        now = _utc(now)
        current = self.current_window(now)
        if current is not None:
            return current
        fires = _Fires(self._template)
        # Outside: every earlier window has ended, so the next one starts exactly at the next fire.
        return self._merged(fires, fires.after(now), now)

    def seconds_until_next_window(self, now: datetime) -> float:
        """0 when inside a window, else the seconds until the next one opens."""
        now = _utc(now)
        if self.current_window(now) is not None:
            return 0.0
        return (self.next_window(now).start - now).total_seconds()

    def _merged(self, fires: _Fires, fire: datetime, now: datetime) -> Window:
        """The merged window around the window of `fire` (see the module docstring for the bounds)."""
        window = self.sync_window
        start, end = fire, fire + window
        endless = self._period is not None and end - start >= self._period
        # Back: the earliest fire whose window reaches `start` extends the chain backwards.
        steps = 0
        while not endless and steps < _MAX_STEPS and start > now - _HORIZON:
            earlier = fires.at_or_after(start - window)
            if earlier >= start:
                break
            start, steps = earlier, steps + 1
            endless = self._period is not None and end - start >= self._period
        # Forward: the latest fire at or before `end` extends the chain while its window reaches further.
        steps = 0
        while not endless and steps < _MAX_STEPS and end < now + _HORIZON:
            later = fires.at_or_before(end)
            if later + window <= end:
                break
            end, steps = later + window, steps + 1
            endless = self._period is not None and end - start >= self._period
        if endless:
            # The fires repeat every period, so a stretch one period long covers all time.
            start = fires.at_or_after(now - _HORIZON)
            end = fires.at_or_before(now + _HORIZON) + window
        return Window(start, end)

    @staticmethod
    def _repeat_period(cron: croniter) -> timedelta | None:
        """One day or one week when the fires repeat exactly with that period (in UTC), else None."""
        minute, hour, day, month, weekday = cron.expanded
        if day != ["*"] or month != ["*"] or cron.nth_weekday_of_month:
            return None
        if weekday == ["*"]:
            return _DAY
        return _WEEK if all(isinstance(value, int) for value in weekday) else None


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment!r} has no time zone: pass a timezone-aware UTC datetime")
    return moment.astimezone(timezone.utc)
