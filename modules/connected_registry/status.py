"""Status details (SPEC 4): what is wrong or worth knowing, by component, as the reported properties carry them."""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass, field

from connected_registry.timefmt import Clock, utc_timestamp

log = logging.getLogger("connected_registry.status")


@dataclass
class StatusDetail:
    type: str  # Config, Parent, Sync, Disk, Auth
    severity: str  # Error, Warning, Information
    code: str
    description: str
    timestamp: str
    correlationId: str = field(default_factory=lambda: str(uuid.uuid4()))


class StatusBoard:
    """The current status details, one per code. Setting or clearing one is logged once."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock  # when a detail was set: its timestamp
        self._details: dict[str, StatusDetail] = {}
        self.on_change = lambda: None  # the reporter: status details are reported at once (SPEC 4)

    def set(self, type_: str, severity: str, code: str, description: str) -> None:
        current = self._details.get(code)
        if current and current.description == description and current.severity == severity:
            return
        self._details[code] = StatusDetail(type_, severity, code, description, utc_timestamp(self.clock()))
        self.on_change()
        level = {"Error": logging.ERROR, "Warning": logging.WARNING}.get(severity, logging.INFO)
        log.log(level, "%s %s: %s", severity, code, description)

    def clear(self, code: str) -> None:
        if self._details.pop(code, None) is not None:
            log.info("resolved %s", code)
            self.on_change()

    def details(self) -> list[dict]:
        return [asdict(detail) for detail in self._details.values()]

    def has(self, code: str) -> bool:
        return code in self._details
