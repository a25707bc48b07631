"""Direct methods (SPEC 4), each answered within 5 s: syncNow, resync (a registry sync from scratch, reported in
registrySyncResult) and gc start work and answer 202 with an operation id; deactivate asks the parent to deactivate
this instance; status is the reported document."""

from __future__ import annotations

import logging

from connected_registry.instance import Instance, InstanceControl

log = logging.getLogger("connected_registry.edge")

METHODS = ("syncNow", "resync", "gc", "deactivate", "status")


def _root_refusal(core: Instance, name: str) -> tuple[int, dict]:
    return 400, {"message": f"{core.name} is a root (no parent in its desired properties or environment): "
                            f"there is nothing to {'deactivate it at' if name == 'deactivate' else 'sync with'}"}


async def answer_direct_method(core: Instance, control: InstanceControl, name: str,
                               payload: object) -> tuple[int, object]:
    """(status, payload) for one direct method call."""
    log.info("direct method %s", name)
    if name == "status":
        return 200, control.status_document()
    if name == "gc":
        return 202, {"status": 202, "operationId": control.gc_now()}
    if name == "syncNow":
        operation = control.sync_now()
        return _root_refusal(core, name) if operation is None else (202, {"status": 202, "operationId": operation})
    if name == "resync":
        operation = await control.resync()
        return _root_refusal(core, name) if operation is None else (202, {"status": 202, "operationId": operation})
    if name == "deactivate":
        answer = await control.deactivate()
        return _root_refusal(core, name) if answer is None else answer
    return 404, {"message": f"unknown method {name!r}: use one of {', '.join(METHODS)}"}
