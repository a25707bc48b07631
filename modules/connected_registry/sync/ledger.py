"""The download-failure ledger: content the parent could not give (a broken image there must not hold up the
rest of a sync, nor eat a metered link by being asked for again and again). Which repositories failed and why,
and when to ask again: RETRY_FIRST_SECONDS after a new failure, the wait doubling after every retry that
fails again, up to RETRY_MAX_SECONDS. A sync-now retries at once (`due(now, force=True)`).

Pure: the caller passes the time (monotonic seconds), logs, reports and stores `to_data()` where it likes;
nothing here waits or writes. The reasons survive a restart; the backoff starts afresh."""

from __future__ import annotations

from dataclasses import dataclass, field

RETRY_FIRST_SECONDS = 5  # content the parent could not give: asked again after this, doubling...
RETRY_MAX_SECONDS = 1800  # ...up to this (a broken image at the parent must not eat a metered link)
REASONS_KEPT = 2  # of one repository's failures, the first ones are kept to show; the rest are counted


@dataclass
class DownloadFailures:
    reasons: dict[str, str] = field(default_factory=dict)  # repository -> why some of its content is missing
    retry_delay: float = RETRY_FIRST_SECONDS  # the wait after the next retry that fails again
    retry_at: float = 0.0  # the next retry is due then

    @classmethod
    def from_data(cls, data: dict[str, str]) -> DownloadFailures:
        """The ledger as `to_data` gave it (before a restart): the failures are retried soon, and with backoff."""
        return cls(dict(data))

    def to_data(self) -> dict[str, str]:
        return dict(self.reasons)

    def __bool__(self) -> bool:
        return bool(self.reasons)

    def __contains__(self, repository: str) -> bool:
        return repository in self.reasons

    def record(self, repository: str, failures: list[str], now: float) -> bool:
        """What a copy of `repository` found: its failures, or none when it is whole now. A repository that newly
        fails is asked again RETRY_FIRST_SECONDS from now. Returns whether the ledger changed (to be saved)."""
        before = dict(self.reasons)
        if failures:
            more = f" (and {len(failures) - REASONS_KEPT} more)" if len(failures) > REASONS_KEPT else ""
            self.reasons[repository] = "; ".join(failures[:REASONS_KEPT]) + more
            if repository not in before:
                self.retry_delay, self.retry_at = RETRY_FIRST_SECONDS, now + RETRY_FIRST_SECONDS
        else:
            self.reasons.pop(repository, None)
        changed = self.reasons != before
        if changed and not self.reasons:
            self.retry_delay = RETRY_FIRST_SECONDS
        return changed

    def due(self, now: float, force: bool = False) -> bool:
        """Whether a retry of the failed repositories is due (`force`: a sync-now, at once if any failed)."""
        return bool(self.reasons) and (force or now >= self.retry_at)

    def retried(self, now: float) -> None:
        """A retry ended: what still fails is asked again after the current wait, which doubles for the next."""
        if self.reasons:
            self.retry_at = now + self.retry_delay
            self.retry_delay = min(self.retry_delay * 2, RETRY_MAX_SECONDS)

    def tried(self, now: float) -> None:
        """A full reconcile asked for everything: it counts as a try, so the next retry waits at least the current
        wait (the wait itself does not grow)."""
        if self.reasons:
            self.retry_at = max(self.retry_at, now + self.retry_delay)

    def poll_seconds(self, now: float, longest: int) -> int:
        """How long a long poll may wait (at most `longest`, at least 1 s) so that the next retry is not late."""
        if not self.reasons:
            return longest
        return max(1, min(longest, round(self.retry_at - now)))
