"""The desired properties from the module twin (inside IoT Edge), by SPEC 3's patch rules.

The raw desired document is kept as IoT Hub has it. A patch is merged into it (JSON merge patch: null
deletes) when it is the next `$version`; a patch that is not newer than the applied version is skipped
(the SDK's full redelivery after a reconnect, with nothing new, changes nothing); a patch that skips
versions, or a reconnect, means something was missed, so the whole twin is read again and replaces the
document. The whole result is validated: a document that does not validate changes nothing and is
reported as CONFIG_INVALID; the next patch that fixes it applies.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable

from connected_registry.edge.module_client import ModuleConnection
from connected_registry.settings import ConfigInvalid, DesiredProperties, validate_desired
from connected_registry.status import StatusBoard

log = logging.getLogger("connected_registry.config")


def merge_patch(target: dict, patch: dict) -> dict:
    """RFC 7386 JSON merge patch applied to a copy of `target`."""
    merged = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_patch(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class DesiredDocument:
    """The raw desired document and its `$version`: pure patch bookkeeping, no I/O."""

    def __init__(self) -> None:
        self.document: dict = {}
        self.version: int | None = None  # of `document`, valid or not

    def replace(self, desired: dict) -> bool:
        """A full document (a twin GET). False when it is the one we have already."""
        version = desired.get("$version")
        if version is not None and version == self.version and desired == self.document:
            return False
        self.document, self.version = copy.deepcopy(desired), version
        return True

    def offer(self, patch: dict) -> str:
        """'skip' (not newer), 'merged' (the next version, merged in) or 'refetch' (versions were missed)."""
        version = patch.get("$version")
        if not isinstance(version, int) or self.version is None:
            return "refetch"
        if version <= self.version:
            return "skip"
        if version != self.version + 1:
            return "refetch"
        self.document = merge_patch(self.document, patch)
        self.version = version
        return "merged"


class TwinConfigSource:
    """Same interface as FileConfigSource (`load_initial`, `watch`, `write_reported`, `applied_version`)."""

    def __init__(self, status: StatusBoard, apply: Callable[[DesiredProperties], None],
                 connection: ModuleConnection | None = None) -> None:
        self.status = status
        self.apply = apply
        self.connection = connection or ModuleConnection()
        self.desired = DesiredDocument()
        self.applied_version: int | None = None
        self.on_applied: Callable[[], None] = lambda: None

    # --- the first configuration ---------------------------------------------------------------------

    async def load_initial(self) -> DesiredProperties:
        """Connect (retried with backoff until edgeHub answers), read the twin, and wait for a valid document:
        without a last good configuration there is nothing to run with, so CONFIG_INVALID is reported through
        the twin until a patch fixes it."""
        await self.connection.connect()
        backoff = 1.0
        while not await self._refetch_quietly():  # edgeHub may answer before it has the twin
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
        while True:
            try:
                settings = self._validate()
            except ConfigInvalid as invalid:
                self._note_invalid(invalid)
                await self._report_before_start()
                await self._next_document()
                continue
            self.status.clear("CONFIG_INVALID")
            self.applied_version = self.desired.version
            log.info("configuration from the module twin, $version %s", self.desired.version)
            return settings

    async def _report_before_start(self) -> None:
        try:
            await self.connection.patch_reported({"connectionState": "Unhealthy", "activation": {"status": "Inactive"},
                                                  "statusDetails": self.status.details()})
        except Exception as error:  # noqa: BLE001 - the log says it too
            log.warning("could not report CONFIG_INVALID through the twin: %s", error)

    async def _next_document(self) -> None:
        """Wait for the next event that may change the document (a patch, a reconnect) and take it in."""
        while True:
            kind, value = await self.connection.events.get()
            if kind == "connected":
                if not value:
                    log.warning("lost the connection to edgeHub; the SDK reconnects, and the twin is read again then")
                    continue
                log.info("connected to edgeHub again: reading the twin for changes made meanwhile")
                if await self._refetch_quietly():
                    return
                continue
            decision = self.desired.offer(value)
            if decision == "merged":
                return
            if decision == "refetch" and await self._refetch_quietly():
                return
            if decision == "skip":
                log.info("desired $version %s is not newer than the $version %s held here (a redelivery after a "
                         "reconnect): nothing changes", value.get("$version"), self.desired.version)

    async def _refetch(self) -> bool:
        twin = await self.connection.get_twin()
        return self.desired.replace(twin.get("desired") or {})

    async def _refetch_quietly(self) -> bool:
        try:
            return await self._refetch()
        except Exception as error:  # noqa: BLE001 - the next patch or reconnect tries again
            log.warning("could not read the module twin (%s: %s); the current configuration stays",
                        type(error).__name__, error)
            return False

    # --- later changes -----------------------------------------------------------------------------------

    async def watch(self) -> None:
        while True:
            await self._next_document()
            try:
                self._apply_current()
            except Exception:  # one bad document must not end the watch
                log.exception("applying desired $version %s failed; the watch goes on", self.desired.version)

    def _apply_current(self) -> None:
        try:
            settings = self._validate()
        except ConfigInvalid as invalid:
            self._note_invalid(invalid)
            self.on_applied()
            return
        self.status.clear("CONFIG_INVALID")
        self.apply(settings)
        self.applied_version = self.desired.version
        log.info("applied desired $version %s from the module twin", self.desired.version)
        self.on_applied()

    def _validate(self) -> DesiredProperties:
        settings = validate_desired(self.desired.document)
        if settings.unknown_keys:
            self.status.set("CONFIG_UNKNOWN_KEYS", source="the desired properties",
                            keys=", ".join(settings.unknown_keys))
        else:
            self.status.clear("CONFIG_UNKNOWN_KEYS")
        return settings

    def _note_invalid(self, invalid: ConfigInvalid) -> None:
        self.status.set("CONFIG_INVALID", rejected=f"desired $version {self.desired.version}",
                        kept=f" ($version {self.applied_version})", problems="; ".join(invalid.problems))

    # --- the reporter's way out ------------------------------------------------------------------------

    async def write_reported(self, patch: dict, document: dict) -> None:
        await self.connection.patch_reported(patch)

    async def close(self) -> None:
        await self.connection.close()
