"""ISO 8601 durations as the twin spells them (PT1H, P2D), without heavy imports."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION_RE = re.compile(
    r"^P(?!$)(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(value: str) -> timedelta:
    """ISO 8601 duration without years and months (their length varies): PnW, PnDTnHnMnS."""
    match = _DURATION_RE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not an ISO 8601 duration such as PT1H, P2D or P1DT12H")
    parts = {key: float(number) for key, number in match.groupdict().items() if number}
    return timedelta(**parts)


def duration_seconds(value: str) -> float:
    return parse_duration(value).total_seconds()
