"""When to sync (SPEC 7.4): the instance is in a window exactly when the latest time the cron schedule
fired, plus syncWindow, is later than now. Overlapping windows merge. No syncWindow: always in a window.
Pure logic: time is always passed in (UTC, timezone-aware)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from croniter import croniter

_MAX_MERGES = 10_000  # a window extended by this many overlapping fires is treated as ending there


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime | None  # None: continuous


class SyncSchedule:
    def __init__(self, schedule: str = "* * * * *", sync_window: timedelta | None = None) -> None:
        if len(schedule.split()) != 5 or not croniter.is_valid(schedule):
            raise ValueError(f"{schedule!r} is not a 5-field cron expression")
        self.schedule = schedule
        self.sync_window = sync_window

    @classmethod
    def from_settings(cls, sync_properties) -> "SyncSchedule":
        from connected_registry.durations import parse_duration

        window = parse_duration(sync_properties.syncWindow) if sync_properties.syncWindow else None
        return cls(sync_properties.schedule, window)

    def _latest_fire(self, now: datetime) -> datetime:
        """The latest fire at or before now."""
        probe = now + timedelta(microseconds=1)
        return croniter(self.schedule, probe).get_prev(datetime)

    def _merged_end(self, start: datetime) -> datetime:
        end = start + self.sync_window
        following = croniter(self.schedule, start)
        for _ in range(_MAX_MERGES):
            fire = following.get_next(datetime)
            if fire >= end:
                break
            end = max(end, fire + self.sync_window)
        return end

    def current_window(self, now: datetime) -> Window | None:
        if self.sync_window is None:
            return Window(now, None)
        latest = self._latest_fire(now)
        if latest + self.sync_window <= now:
            return None
        # walk back over earlier fires whose windows still reach this one, to find where the merged window opened
        start = latest
        earlier = croniter(self.schedule, start)
        for _ in range(_MAX_MERGES):
            previous = earlier.get_prev(datetime)
            if previous + self.sync_window < start:
                break
            start = previous
        return Window(start, self._merged_end(latest))

    def next_window(self, now: datetime) -> Window:
        current = self.current_window(now)
        if current is not None:
            return current
        start = croniter(self.schedule, now).get_next(datetime)
        return Window(start, self._merged_end(start))

    def seconds_until_next_window(self, now: datetime) -> float:
        return max((self.next_window(now).start - now).total_seconds(), 0.0) if self.current_window(now) is None else 0.0
