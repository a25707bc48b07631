"""The fault suites: crashes, power cuts, link faults, a full disk, hostile input and floods, and attacks on the
boundary between layers (issues 8 and 14).

Each suite counts what it inflicted and checked into `figures`; the totals are printed at the end of the
run, so the numbers quoted in the closing note come from the run itself. `CONNECTED_REGISTRY_SOAK=1`
runs many more rounds, bounded by `CONNECTED_REGISTRY_SOAK_SECONDS` per suite (default 600).
"""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest

figures: Counter = Counter()


def soaking() -> bool:
    return os.environ.get("CONNECTED_REGISTRY_SOAK") == "1"


class Budget:
    """Rounds bounded by a count and a wall-clock budget: `quick` rounds by default, more when soaking."""

    def __init__(self, quick_rounds: int, quick_seconds: float, soak: bool) -> None:
        self.rounds = 10_000 if soak else quick_rounds
        self.seconds = float(os.environ.get("CONNECTED_REGISTRY_SOAK_SECONDS", "600")) if soak else quick_seconds
        self.start = time.monotonic()
        self.done = 0

    def __iter__(self):
        while self.done < self.rounds and (self.done == 0 or time.monotonic() - self.start < self.seconds):
            yield self.done
            self.done += 1


def pytest_collection_modifyitems(items) -> None:
    """Soaking outlasts the suite's per-test timeout: give the fault tests their budget and some."""
    if soaking():
        limit = float(os.environ.get("CONNECTED_REGISTRY_SOAK_SECONDS", "600")) + 600
        for item in items:
            if "tests/faults/" in str(item.fspath).replace(os.sep, "/"):
                item.add_marker(pytest.mark.timeout(limit))


@pytest.fixture
def budget():
    """`budget(quick_rounds, quick_seconds)`: the rounds of one suite."""
    return lambda rounds, seconds: Budget(rounds, seconds, soaking())


def pytest_terminal_summary(terminalreporter) -> None:
    if not figures:
        return
    terminalreporter.section("fault figures: faults, attacks (tried, held), losses")
    for key in sorted(figures):
        terminalreporter.write_line(f"{key:60} {figures[key]}")
