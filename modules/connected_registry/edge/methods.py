"""Direct methods (SPEC 4), each answered within 5 s: syncNow and gc start work and answer 202 with an
operation id; deactivate asks the parent to deactivate this instance; status is the reported document."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connected_registry.runtime import Runtime

log = logging.getLogger("connected_registry.edge")

METHODS = ("syncNow", "gc", "deactivate", "status")


async def answer_direct_method(runtime: "Runtime", name: str, payload: object) -> tuple[int, object]:
    """(status, payload) for one direct method call."""
    log.info("direct method %s", name)
    if name == "status":
        return 200, runtime.status_document()
    if name == "gc":
        return 202, {"status": 202, "operationId": runtime.gc_now()}
    if name in ("syncNow", "deactivate") and runtime.engine is None:
        return 400, {"message": f"{runtime.name} is a root (no parent in its desired properties or environment): "
                                f"there is nothing to {'sync with' if name == 'syncNow' else 'deactivate it at'}"}
    if name == "syncNow":
        return 202, {"status": 202, "operationId": runtime.sync_now()}
    if name == "deactivate":
        from connected_registry.sync.parent_client import ParentError

        parent = runtime.engine.parent
        try:
            status, body = await parent.control("POST", f"/registries/{runtime.name}/deactivate")
        except ParentError as error:
            return 502, {"message": f"{error}; try again when the parent answers"}
        if status != 200:
            return status, {"message": f"the parent {parent.endpoint} answered {status} to deactivating "
                                       f"{runtime.name}: {body}"}
        return 200, {"status": "Inactive", "message": f"{runtime.name} is Inactive at {parent.endpoint}: this instance "
                                                      "stops syncing; run `connected-registry reset-identity` on its "
                                                      "data volume before it activates again"}
    return 404, {"message": f"unknown method {name!r}: use one of {', '.join(METHODS)}"}
