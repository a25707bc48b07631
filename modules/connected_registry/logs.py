"""Log lines on stdout, each carrying the id of the request it belongs to (SPEC 12), so one request's story can
be found with one grep. Lines from background work (sync, gc) carry `-`."""

from __future__ import annotations

import contextvars
import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

# Set by the request middleware for the handler's task; tasks it starts inherit it.
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get()
        return True


def configure(level: str | int) -> None:
    """One handler on stdout for the whole process; `connected_registry`'s own level follows the configuration."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_RequestIdFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
