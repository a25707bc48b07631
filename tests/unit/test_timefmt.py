"""One way a moment is written: ISO 8601, UTC, milliseconds, Z; always the moment the caller's clock gave."""

from __future__ import annotations

from datetime import datetime

from connected_registry.timefmt import utc_timestamp


def test_a_moment_is_written_in_utc_to_the_millisecond_with_a_z():
    assert utc_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert utc_timestamp(1_767_225_600.1239) == "2026-01-01T00:00:00.123Z"


def test_the_written_moment_reads_back_as_the_same_instant():
    written = utc_timestamp(1_767_225_600.5)
    assert datetime.fromisoformat(written.replace("Z", "+00:00")).timestamp() == 1_767_225_600.5
