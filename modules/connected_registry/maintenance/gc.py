"""Garbage collection as a running instance does it (SPEC 11, 12): at the fires of `garbageCollection.schedule`
(a UTC cron, `0 5 * * *` without a configuration) and when asked (the gc direct method and control route). What a
run collects is storage/gc.py's; the last run, scheduled or asked for, is what the status document shows."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timezone

from croniter import croniter

from connected_registry.instance import Instance
from connected_registry.storage import RegistryStore
from connected_registry.storage.coordination import GARBAGE_COLLECTION
from connected_registry.storage.gc import collect_garbage
from connected_registry.timefmt import utc_timestamp

log = logging.getLogger("connected_registry")

DEFAULT_SCHEDULE = "0 5 * * *"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class GarbageCollection:
    def __init__(self, core: Instance, store: RegistryStore) -> None:
        self.core, self.store = core, store
        self.last_run: dict | None = None  # the latest run, scheduled or asked for (status document)
        self._schedule: asyncio.Task | None = None

    def follow_settings(self, *_changed: object) -> None:
        """Start the schedule again from the live settings (the embedded default collects on the default one)."""
        if self._schedule is not None:
            self._schedule.cancel()
            self._schedule = None
        settings = self.core.settings
        if settings is None:
            self._schedule = self._spawn_schedule(DEFAULT_SCHEDULE)
        elif settings.garbageCollection.enabled:
            self._schedule = self._spawn_schedule(settings.garbageCollection.schedule)

    def _spawn_schedule(self, schedule: str) -> asyncio.Task:
        """The schedule runs on the replica that holds its lease; a run asked for runs where it was asked."""
        hold = self.store.coordination.hold(GARBAGE_COLLECTION, lambda: self._on_schedule(schedule))
        return self.core.tasks.spawn(hold, "gc")

    def run_now(self) -> str:
        """Garbage collection at once; joins one that is running. Returns its operation id."""
        if self.last_run is None or self.last_run["state"] != "Running":
            self.core.tasks.spawn(self._run(self._started()), "gc-now")
        return self.last_run["operationId"]

    async def _on_schedule(self, schedule: str) -> None:
        while True:
            now = datetime.fromtimestamp(self.core.clock(), timezone.utc)
            next_run = croniter(schedule, now).get_next(datetime)
            await asyncio.sleep((next_run - now).total_seconds())
            await self._run(self._started())

    def _started(self) -> dict:
        """A run starting now, visible at once in the status document."""
        self.last_run = {"operationId": str(uuid.uuid4()), "state": "Running",
                         "startedAt": utc_timestamp(self.core.clock())}
        return self.last_run

    async def _run(self, run: dict) -> None:
        try:
            report = await collect_garbage(self.store, read_only=self.core.mode == "ReadOnly")
            run.update(state="Succeeded", **{_camel(key): value for key, value in vars(report).items()})
        except Exception as error:  # one failed run must not end the schedule
            log.exception("garbage collection failed; it runs again at the next scheduled time")
            run.update(state="Failed", error=str(error))
        finally:
            run["finishedAt"] = utc_timestamp(self.core.clock())
