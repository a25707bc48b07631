"""The core of one instance, which every part reads when it needs it: the live settings (name, mode, root and
repository scope are derived from them when read, never copied), the clock, the status board, the signals and
the registry of long-lived tasks. `InstanceControl` is the narrow view of a running instance that edge/ gets."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from connected_registry.environment import with_environment
from connected_registry.status import StatusBoard

if TYPE_CHECKING:  # pydantic loads only with a configuration (idle memory)
    from connected_registry.settings import DesiredProperties

DEFAULT_NAME = "connected-registry"
HELD_WHILE_ACTIVE = ("mode", "name")  # a change waits for a deactivation at the parent (SPEC 3)
LOG_LEVELS = {"Debug": logging.DEBUG, "Information": logging.INFO, "Warning": logging.WARNING,
              "Error": logging.ERROR, "None": logging.CRITICAL + 10}


class Signal:
    """Callbacks called in the order they subscribed, each with what the emitter passes."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[..., None]] = []

    def subscribe(self, callback: Callable[..., None]) -> None:
        self._callbacks.append(callback)

    def emit(self, *arguments: Any) -> None:
        for callback in list(self._callbacks):
            callback(*arguments)


class Tasks:
    """The instance's long-lived tasks (sync, reporter, watches, gc): started here, all cancelled at its stop."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task] = []

    def spawn(self, work: Coroutine, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.append(task)
        return task

    async def cancel_all(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Instance:
    """One instance's live state. `settings` is None for the embedded default (an open root)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # injected: message TTLs, windows and schedules are tested without waiting
        self.settings: DesiredProperties | None = None
        self.instance_id: str | None = None  # from the data volume, once the store is open
        self.status = StatusBoard(clock)
        self.settings_changed = Signal()  # (previous, current) once a configuration is applied
        self.state_changed = Signal()  # what the status document shows at once changed (a detail, the activation)
        self.status.on_change = self.state_changed.emit
        self.tasks = Tasks()
        self.active_at_parent: Callable[[], bool] = lambda: False  # the sync's word, on an instance with a parent

    @property
    def name(self) -> str:
        return (self.settings.name if self.settings else None) or DEFAULT_NAME

    @property
    def is_root(self) -> bool:
        return self.settings is None or self.settings.parent is None or self.settings.parent.endpoint is None

    @property
    def mode(self) -> str:
        return "ReadWrite" if self.is_root else self.settings.mode

    @property
    def blob_redirect(self) -> bool:
        """`blobRedirect`: blob GETs answer 307 to a short-lived read URL of the blob store, where it can sign one."""
        return bool(self.settings and self.settings.blobRedirect)

    @property
    def repositories(self) -> tuple[str, ...]:
        """What a child syncs (names and `prefix/*` patterns); a ReadWrite child takes pushes only there."""
        return tuple(self.settings.repositories) if self.settings else ()

    def apply(self, settings: "DesiredProperties") -> None:
        """A validated configuration, completed from the environment, becomes the live one without a restart;
        every part that follows the settings hears `settings_changed`."""
        settings = self._hold_back_identity_changes(with_environment(settings))
        previous, self.settings = self.settings, settings
        logging.getLogger("connected_registry").setLevel(LOG_LEVELS[settings.logging.logLevel])
        if self.is_root and "mode" in settings.model_fields_set and settings.mode != "ReadWrite":
            self.status.set("MODE_IGNORED_ON_ROOT")
        else:
            self.status.clear("MODE_IGNORED_ON_ROOT")
        self.settings_changed.emit(previous, settings)

    def _hold_back_identity_changes(self, settings: "DesiredProperties") -> "DesiredProperties":
        """A change of mode or name while Active waits for a deactivation (SPEC 3); the rest applies."""
        if self.settings is None or not self.active_at_parent():
            self.status.clear("CHANGE_NEEDS_DEACTIVATION")
            return settings
        held = {key: getattr(self.settings, key) for key in HELD_WHILE_ACTIVE
                if getattr(settings, key) != getattr(self.settings, key)}
        if not held:
            self.status.clear("CHANGE_NEEDS_DEACTIVATION")
            return settings
        wanted = ", ".join(f"{key} {getattr(settings, key)!r}" for key in held)
        self.status.set("CHANGE_NEEDS_DEACTIVATION", wanted=wanted, name=self.name)
        return settings.model_copy(update=held)


class InstanceControl(Protocol):
    """What edge/ (direct methods, the reporter) may do with a running instance, and nothing more."""

    def status_document(self) -> dict:
        """The reported properties (SPEC 4)."""

    def sync_now(self) -> str | None:
        """Starts a full sync round (SPEC 7.4): its operation id; None on a root (no parent to sync with)."""

    async def resync(self) -> str | None:
        """Starts a registry sync from scratch (ManualResync): its operation id; None on a root."""

    def gc_now(self) -> str:
        """Starts garbage collection, or joins the one running: its operation id (SPEC 11)."""

    async def deactivate(self) -> tuple[int, dict] | None:
        """Asks the parent to deactivate this instance: (status, answer) for the caller; None on a root."""

    def spawn(self, work: Coroutine, name: str) -> asyncio.Task:
        """Runs `work` as one of the instance's tasks: cancelled when the instance stops."""

    def spawn_once(self, lease: str, work: Callable[[], Coroutine], name: str) -> asyncio.Task:
        """`spawn`s `work()` for work one replica does for all: run while this replica holds `lease`."""
