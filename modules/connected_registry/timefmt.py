"""How a moment is written: ISO 8601 in UTC, to the millisecond, with a Z (events, outbox entries, status details,
reports, operations). The moment always comes from the caller's clock, so a test that moves its clock sees it."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

Clock = Callable[[], float]  # seconds since the epoch: `time.time`, or a test's clock


def utc_timestamp(seconds: float) -> str:
    return utc_iso(datetime.fromtimestamp(seconds, timezone.utc), "milliseconds")


def utc_iso(moment: datetime, timespec: str = "auto") -> str:
    """A UTC datetime as ISO 8601 with a Z; a sync window's bounds keep their own precision (whole seconds)."""
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")
