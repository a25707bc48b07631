"""A sync-now as an operation the status document shows while it runs, so the command line can follow it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from connected_registry.timefmt import utc_timestamp


@dataclass
class SyncOperation:
    """One sync-now, as the status document shows it while it runs (the command line follows it)."""

    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: str = "Queued"  # Queued | Running | Succeeded | Failed
    repository: str | None = None  # the one being reconciled now
    repositoriesDone: int = 0
    repositoriesTotal: int | None = None
    startedAt: str | None = None
    finishedAt: str | None = None
    error: str | None = None

    def start(self, now: float) -> None:
        if self.state == "Queued":
            self.state, self.startedAt = "Running", utc_timestamp(now)

    def finish(self, now: float, error: BaseException | None = None) -> None:
        if self.state in ("Queued", "Running"):
            self.state = "Failed" if error else "Succeeded"
            self.error = str(error) if error else None
            self.finishedAt, self.repository = utc_timestamp(now), None
