"""This instance's standing at its parent (SPEC 6): whether the parent refused it, deactivating it there, as the
deactivate direct method asks (SPEC 4), and which of its endpoints is in use (issue 16)."""

from __future__ import annotations

from connected_registry.status import StatusBoard
from connected_registry.sync.endpoints import ParentEndpoints
from connected_registry.sync.parent_client import ParentClient, ParentError

REFUSED_BY_PARENT = ("DEACTIVATED", "ALREADY_ACTIVE", "MODE_INCOMPATIBLE")


def refused_by_parent(status: StatusBoard) -> bool:
    """The parent refused this instance (deactivated, a clone of an active one, an incompatible mode): it neither
    syncs nor fills on demand."""
    return any(status.has(code) for code in REFUSED_BY_PARENT)


async def deactivate_at_parent(parent: ParentClient, name: str) -> tuple[int, dict]:
    """(status, answer) for the caller: 200 once the parent made `name` Inactive, else why not."""
    try:
        status, body = await parent.control("POST", f"/registries/{name}/deactivate")
    except ParentError as error:
        return 502, {"message": f"{error}; try again when the parent answers"}
    if status != 200:
        return status, {"message": f"the parent {parent.endpoint} answered {status} to deactivating {name}: {body}"}
    return 200, {"status": "Inactive", "message": f"{name} is Inactive at {parent.endpoint}: this instance stops "
                                                  "syncing; run `connected-registry reset-identity` on its data "
                                                  "volume before it activates again"}


def endpoint_switched(status: StatusBoard, endpoints: ParentEndpoints, failback_interval: str) -> None:
    """A warning stands while an alternate endpoint is in use, saying why the last one was left."""
    switch = endpoints.last_switch
    if endpoints.current == endpoints.first or switch is None:
        status.clear("PARENT_ENDPOINT_ALTERNATE")
        return
    status.set("PARENT_ENDPOINT_ALTERNATE", reason=switch.reason, current=endpoints.current, first=endpoints.first,
               interval=failback_interval)
