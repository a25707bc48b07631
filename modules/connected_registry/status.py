"""Status details (SPEC 4): what is wrong or worth knowing, by component, as the reported properties carry them.

Every code is declared once in STATUS_DETAILS with its component, severity and description template; a caller
names the code and fills the template's fields, so a code always reads the same way wherever it is set."""

from __future__ import annotations

import logging
import string
import uuid
from dataclasses import asdict, dataclass, field

from connected_registry.timefmt import Clock, utc_timestamp

log = logging.getLogger("connected_registry.status")


@dataclass(frozen=True)
class DetailKind:
    """What a status-detail code always is; `template` is a str.format text whose fields the caller passes."""

    type: str  # the component: Config, Parent, Sync, Disk
    severity: str  # Error, Warning, Information
    template: str


_PARENT_REFUSED = "{message}"  # the parent's own words: they say what to do there
_DISK = "{error}{outlook}"  # outlook: what goes on meanwhile (nothing at start: the instance stops)

STATUS_DETAILS: dict[str, DetailKind] = {
    "CONFIG_INVALID": DetailKind(
        "Config", "Error", "{rejected} was not applied, the last good configuration{kept} stays: {problems}"),
    "CONFIG_UNKNOWN_KEYS": DetailKind("Config", "Warning", "unknown keys in {source} are ignored: {keys}"),
    "CHANGE_NEEDS_DEACTIVATION": DetailKind(
        "Config", "Warning", "{wanted} not applied while {name} is Active: deactivate it at the parent "
        "(connected-registry deactivate {name} --registry <parent>), then restart it"),
    "MODE_IGNORED_ON_ROOT": DetailKind(
        "Config", "Warning", "mode is ignored on a root registry (no parent): a root is always ReadWrite"),
    "PARENT_UNREACHABLE": DetailKind(
        "Parent", "Warning", "{error}; content already here is still served, and sync resumes when the parent answers"),
    "PARENT_AUTH_FAILED": DetailKind("Parent", "Error", "{error}"),
    "PARENT_ENDPOINT_ALTERNATE": DetailKind(
        "Parent", "Warning", "{reason}: the parent is used at {current}, one of parent.alternateEndpoints; {first} is "
        "asked again every {interval} (parent.failbackInterval) and used again once it answers"),
    "PARENT_NOT_CONNECTED": DetailKind(
        "Parent", "Warning", "{endpoint} is a plain OCI registry: content syncs, but there is no activation or "
        "event feed"),
    "ALREADY_ACTIVE": DetailKind("Parent", "Error", _PARENT_REFUSED),
    "DEACTIVATED": DetailKind("Parent", "Error", _PARENT_REFUSED),
    "MODE_INCOMPATIBLE": DetailKind("Parent", "Error", _PARENT_REFUSED),
    "CURSOR_EXPIRED": DetailKind(
        "Sync", "Information", "the parent no longer had the events since the last sync (away longer than "
        "messageTtl): a full reconcile ran"),
    "CATALOG_REFUSED": DetailKind(
        "Sync", "Warning", "the parent refused its catalog, so the patterns {patterns} cannot be expanded; exact "
        "repository names still sync"),
    "DOWNLOAD_FAILED": DetailKind(
        "Sync", "Warning", "content of {repositories} could not be copied from the parent {endpoint}: {failure}. "
        "Everything else syncs; these are asked again with backoff (at most every 30 minutes) and at every "
        "sync-now. If it lasts, check the image at the parent (a damaged or incomplete push, or a token without "
        "read access to it) and push it there again."),
    "REPOSITORY_PENDING_REMOVAL": DetailKind(
        "Sync", "Warning", "repositories no longer in `repositories` are hidden and will be deleted: {when}; add "
        "them back to keep them"),
    "UPLOAD_REJECTED": DetailKind(
        "Sync", "Error", "the parent refused {operation} of {repository}:{reference}: {error}. Later uploads of "
        "{repository} wait: `connected-registry outbox retry {id}` or `outbox drop {id}`"),
    "UPLOAD_BUDGET_EXCEEDED": DetailKind(
        "Sync", "Error", "{operation} of {repository}:{reference} was not sent to the parent: it {exceeded}. "
        "Later uploads of {repository} wait: {remedy}"),
    "UPLOAD_WAITING_FOR_MANIFESTS": DetailKind(
        "Sync", "Warning", "the index {repository}:{reference} waits to go up: it names manifests held neither here "
        "nor at the parent: {missing}. It goes up once they are here (pull them here, or add their platforms to "
        "`platforms`); later uploads of {repository} wait behind it, or `connected-registry outbox drop {id}`"),
    "DISK_STORAGE_FULL": DetailKind("Disk", "Error", _DISK),
    "DISK_PERMISSION_DENIED": DetailKind("Disk", "Error", _DISK),
    "DISK_ERROR": DetailKind("Disk", "Error", _DISK),
    "DISK_SCHEMA_NEWER": DetailKind("Disk", "Error", _DISK),
}


def detail_kind(code: str) -> DetailKind:
    """The declaration of `code`; an undeclared code is a mistake in the program, not in the operator's input."""
    try:
        return STATUS_DETAILS[code]
    except KeyError:
        raise KeyError(f"status detail {code!r} is not declared: add it to STATUS_DETAILS") from None


def template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def describe(code: str, fields: dict[str, object]) -> str:
    """The description of `code` with its template filled; the fields must be exactly the template's."""
    template = detail_kind(code).template
    expected = template_fields(template)
    if set(fields) != expected:
        raise TypeError(f"status detail {code} takes the fields {sorted(expected)}, not {sorted(fields)}")
    return template.format(**fields)


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

    def set(self, code: str, /, **fields: object) -> None:
        """Make `code` stand, its description filled from `fields` (see STATUS_DETAILS)."""
        kind, description = detail_kind(code), describe(code, fields)
        current = self._details.get(code)
        if current and current.description == description:
            return
        self._details[code] = StatusDetail(kind.type, kind.severity, code, description, utc_timestamp(self.clock()))
        self.on_change()
        level = {"Error": logging.ERROR, "Warning": logging.WARNING}.get(kind.severity, logging.INFO)
        log.log(level, "%s %s: %s", kind.severity, code, description)

    def clear(self, code: str) -> None:
        detail_kind(code)
        if self._details.pop(code, None) is not None:
            log.info("resolved %s", code)
            self.on_change()

    def details(self) -> list[dict]:
        return [asdict(detail) for detail in self._details.values()]

    def has(self, code: str) -> bool:
        detail_kind(code)
        return code in self._details
