"""The desired properties from a JSON file (outside IoT Edge), re-read when the file changes.

A document that does not validate changes nothing: the last good configuration stays and
`CONFIG_INVALID` names each bad field. The reported properties go to `reported.json` beside the file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable

from connected_registry.settings import ConfigInvalid, DesiredProperties, validate_desired
from connected_registry.status import StatusBoard

log = logging.getLogger("connected_registry.config")

POLL_SECONDS = 0.5


def read_desired(path: str) -> tuple[DesiredProperties, int | None]:
    """The validated document and its `$version`, if it has one."""
    try:
        with open(path, "rb") as file:
            raw = file.read(1 << 20)
    except OSError as error:
        raise ConfigInvalid([f"cannot read {path}: {error.strerror or error}"]) from None
    try:
        document = json.loads(raw)
    except ValueError as error:
        raise ConfigInvalid([f"{path} is not valid JSON: {error}"]) from None
    version = document.get("$version") if isinstance(document, dict) else None
    return validate_desired(document), version if isinstance(version, int) else None


class FileConfigSource:
    """Same interface as TwinConfigSource (`load_initial`, `watch`, `write_reported`, `applied_version`)."""

    def __init__(self, path: str, status: StatusBoard, apply: Callable[[DesiredProperties], None]) -> None:
        self.path = path
        self.status = status
        self.apply = apply
        self._signature: tuple | None = None
        self.applied_version: int | None = None
        self.on_applied: Callable[[], None] = lambda: None
        self.reported_path = os.path.join(os.path.dirname(os.path.abspath(path)), "reported.json")

    def _current_signature(self) -> tuple | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    async def load_initial(self) -> DesiredProperties:
        """The first document must validate: there is no last good one to keep."""
        self._signature = self._current_signature()
        settings, self.applied_version = read_desired(self.path)
        self._note_unknown_keys(settings)
        return settings

    def _note_unknown_keys(self, settings: DesiredProperties) -> None:
        if settings.unknown_keys:
            self.status.set("CONFIG_UNKNOWN_KEYS", source=self.path, keys=", ".join(settings.unknown_keys))
        else:
            self.status.clear("CONFIG_UNKNOWN_KEYS")

    def reload_if_changed(self) -> bool:
        signature = self._current_signature()
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            settings, version = read_desired(self.path)
        except ConfigInvalid as invalid:
            self.status.set("CONFIG_INVALID", rejected=self.path, kept="", problems="; ".join(invalid.problems))
            self.on_applied()
            return False
        self.status.clear("CONFIG_INVALID")
        self._note_unknown_keys(settings)
        self.apply(settings)
        self.applied_version = version
        log.info("applied the configuration in %s", self.path)
        self.on_applied()
        return True

    async def write_reported(self, patch: dict, document: dict) -> None:
        """reported.json beside the configuration file: the whole document, replaced atomically."""
        await asyncio.to_thread(self._write_reported, document)

    def _write_reported(self, document: dict) -> None:
        temporary = f"{self.reported_path}.tmp"
        # 0600, as everything the instance writes: readable by its own user only
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as file:
            json.dump(document, file, indent=2)
            file.write("\n")
        os.replace(temporary, self.reported_path)

    async def close(self) -> None:
        pass

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                self.reload_if_changed()
            except Exception:  # one bad read must not end the watch
                log.exception("reading %s failed; watching on", self.path)
