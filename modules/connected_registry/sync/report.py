"""Reporting up (SPEC 11): this instance's reported document and its subtree go to a connected parent when
something changed here or below, at least every report interval, and at most every 2 s."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from connected_registry.printable import printable
from connected_registry.sync.feed import check_feed_answer
from connected_registry.sync.state import SyncContext
from connected_registry.waits import wait_event

log = logging.getLogger("connected_registry.sync")

COALESCE_SECONDS = 2  # reports from below come in bursts: one report up for each burst


class ReportUp:
    def __init__(self, sync: SyncContext, report: Callable[[], dict], interval: float) -> None:
        self.sync, self.report, self.interval = sync, report, interval

    async def forever(self) -> None:
        while True:
            self.sync.report_wanted.clear()
            await self.send()
            await wait_event(self.sync.report_wanted, self.interval)
            await asyncio.sleep(COALESCE_SECONDS)

    async def send(self) -> None:
        # Text from elsewhere (a parent's message, a grandchild's report) may carry control characters, which the
        # parent refuses in a report: they go, the rest of the text stays.
        sync = self.sync
        answer = await sync.parent.control("POST", f"/registries/{sync.identity.name}/status",
                                           body=printable(self.report()),
                                           headers={"X-Instance-Id": sync.identity.instance_id})
        if answer.status == 400:  # what this instance said does not fit the parent's schema: syncing goes on anyway
            log.warning("parent %s refused the status report: %s", sync.parent.endpoint,
                        printable(answer.error_message("400")))
        elif answer.status != 204:
            check_feed_answer(sync, answer)
