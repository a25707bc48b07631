"""This instance's standing at its parent (SPEC 6): whether the parent refused it, and deactivating it there, as
the deactivate direct method asks (SPEC 4)."""

from __future__ import annotations

from connected_registry.status import StatusBoard
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
