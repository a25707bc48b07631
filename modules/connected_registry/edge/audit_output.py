"""Audit records to IoT Hub through edgeHub. Inside IoT Edge the records of the audit trail (audit.py) go out as
module output messages on the output `auditLogs`, which the deployment's route
`FROM /messages/modules/<module>/outputs/auditLogs INTO $upstream` carries to IoT Hub (and from there to Azure
Monitor): oldest first, each message a JSON array of records within IoT Hub's 256 KB, at most one message a second.
While edgeHub is away the records wait in the data volume (bounded, audit.py) and go once it is back. A message
whose acknowledgement was lost is sent again: a receiver drops a repeat by its records' `seq`."""

from __future__ import annotations

import asyncio
import logging

from connected_registry.audit import AuditTrail, Batch
from connected_registry.edge.module_client import ModuleConnection

log = logging.getLogger("connected_registry.edge")

OUTPUT = "auditLogs"
MAX_MESSAGE_BYTES = 240 << 10  # IoT Hub's 256 KB for a device-to-cloud message, less room for its properties
SEND_INTERVAL = 1.0  # seconds between two messages, at least
MAX_BACKOFF = 10.0  # seconds between two tries while edgeHub does not take a message


class AuditForwarder:
    """Sends what the trail holds after the last record edgeHub took, and marks it sent."""

    def __init__(self, trail: AuditTrail, connection: ModuleConnection) -> None:
        self.trail, self.connection = trail, connection
        self._failing = False

    async def run(self) -> None:
        sent = await asyncio.to_thread(self.trail.sent_mark)
        backoff = SEND_INTERVAL
        while True:
            self.trail.appended.clear()  # before reading: a record written meanwhile wakes the wait below
            batch = await asyncio.to_thread(self.trail.read_after, sent, MAX_MESSAGE_BYTES)
            if batch is None:
                await self.trail.appended.wait()
                continue
            if not await self._send(batch):
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff, sent = SEND_INTERVAL, batch.last
            await asyncio.to_thread(self.trail.mark_sent, sent)
            await asyncio.sleep(SEND_INTERVAL)

    async def _send(self, batch: Batch) -> bool:
        try:
            if not self.connection.connected:
                raise ConnectionError("not connected to edgeHub")
            await self.connection.send_output(OUTPUT, batch.json_array(), f"audit-{batch.first}-{batch.last}")
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - anything edgeHub does not take is tried again
            if not self._failing:
                log.warning("audit records from %d on wait in the data volume: edgeHub did not take them (%s: %s); "
                            "they are sent once it does", batch.first, type(error).__name__, error)
            self._failing = True
            return False
        if self._failing:
            log.info("edgeHub takes audit records again, from %d on", batch.first)
        self._failing = False
        return True
