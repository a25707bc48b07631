"""What the control API and the sync keep (SPEC 6, 11): this instance's identity and control state, the transfers
that resume after a cut, its children's activations and reports, and the retention of the event log."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from connected_registry.storage.metadata import MetadataStore, MetadataWrites
from connected_registry.storage.records import Child, ControlState, TransferKey

_REVOKED_KEPT = 100  # instance ids of a child refused after a deactivation, newest kept


def update_control_state(tx: MetadataWrites, **changes: Any) -> ControlState:
    """Inside a write: change these fields of the control state (by their names), keep the others."""
    state = replace(tx.control_state(), **changes)
    tx.save_control_state(state)
    return state


def _first_instance_id(tx: MetadataWrites) -> str:
    """The instanceId, made when there is none: looked for again inside the write, so replicas of one registry
    starting together make one between them."""
    return tx.control_state().instance_id or update_control_state(tx, instance_id=str(uuid.uuid4())).instance_id


class ControlStore:
    def __init__(self, metadata: MetadataStore) -> None:
        self.metadata = metadata

    # --- the control state -------------------------------------------------------------------------

    def state(self) -> ControlState:
        return self.metadata.control_state()

    async def update_state(self, **changes: Any) -> ControlState:
        """Change these fields (`ControlState` names them), keep the others: `update_state(sync_cursor=12)`."""
        return await self.metadata.write(lambda tx: update_control_state(tx, **changes))

    def instance_id(self) -> str:
        """Created at first start and kept in the data volume (SPEC 6)."""
        current = self.state().instance_id
        return current if current is not None else self.metadata.write_now(_first_instance_id)

    def reset_identity(self) -> str:
        """A new instanceId, not Active anywhere yet; the sync starts again from the parent's first event."""
        new = str(uuid.uuid4())
        self.metadata.write_now(lambda tx: update_control_state(tx, instance_id=new, sync_cursor=None,
                                                                activated_since=None, registry_sync={}))
        return new

    # --- transfers that resume after a cut ----------------------------------------------------------

    def transfer_session(self, key: TransferKey) -> str | None:
        return self.metadata.transfer_session(key)

    async def remember_transfer_session(self, key: TransferKey, session: str) -> None:
        await self.metadata.write(lambda tx: tx.remember_transfer_session(key, session))

    async def forget_transfer_session(self, key: TransferKey) -> None:
        await self.metadata.write(lambda tx: tx.forget_transfer_session(key))

    # --- children ----------------------------------------------------------------------------------

    def child(self, name: str) -> Child | None:
        return self.metadata.child(name)

    def children(self) -> list[Child]:
        return self.metadata.children()

    async def activate(self, name: str, document: dict, now: str) -> str:
        """'Active' (newly or again), or 'ALREADY_ACTIVE' / 'DEACTIVATED' (SPEC 6)."""

        def work(tx: MetadataWrites) -> str:
            child = tx.child(name)
            if child is not None:
                if document["instanceId"] in child.revoked:
                    return "DEACTIVATED"
                if child.status == "Active" and (child.instance_id, child.device_id) != (document["instanceId"],
                                                                                         document["deviceId"]):
                    return "ALREADY_ACTIVE"
            tx.save_activation(name, document, now)
            return "Active"

        return await self.metadata.write(work)

    async def deactivate(self, name: str) -> bool:
        def work(tx: MetadataWrites) -> bool:
            child = tx.child(name)
            if child is None:
                return False
            revoked = child.revoked
            if child.instance_id and child.instance_id not in revoked:
                revoked.append(child.instance_id)
            tx.save_deactivation(name, revoked[-_REVOKED_KEPT:])
            return True

        return await self.metadata.write(work)

    async def remember_child_key(self, name: str, key: str) -> None:
        """The key a child's outbox bundles are signed with, as it gave it at activation."""

        def work(tx: MetadataWrites) -> None:
            keys = dict(tx.control_state().child_keys)
            if keys.get(name.lower()) != key:
                update_control_state(tx, child_keys={**keys, name.lower(): key})

        await self.metadata.write(work)

    async def record_report(self, name: str, report: dict, now: str) -> None:
        await self.metadata.write(lambda tx: tx.record_child_report(name, report, now))

    # --- event retention ---------------------------------------------------------------------------

    def event_bounds(self) -> tuple[int, int]:
        """(oldest seq still kept, next seq to be written)."""
        head = self.metadata.event_head()
        pruned = self.state().events_pruned_through
        return pruned + 1, max(head, pruned) + 1

    async def prune_events(self, older_than: str) -> int:
        """Drop events older than an ISO timestamp; a cursor before what is left then gets 410."""

        def work(tx: MetadataWrites) -> int:
            newest = tx.last_event_before(older_than)
            if newest is None:
                return 0
            count = tx.remove_events_through(newest)
            update_control_state(tx, events_pruned_through=newest)
            return count

        return await self.metadata.write(work)
