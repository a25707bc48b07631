"""What the control API keeps (SPEC 6, 11): this instance's identity and sync state, its children's
activations and reports, and the retention of the event log."""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass

from connected_registry.storage.metadata import MetadataDB


@dataclass
class Child:
    name: str
    status: str  # Active | Inactive
    instance_id: str | None
    device_id: str | None
    mode: str | None
    version: str | None
    message_ttl: str | None
    repositories: list[str]
    revoked: list[str]
    activated: str | None
    report: dict | None
    reported: str | None


_CHILD_COLUMNS = ("display_name, status, instance_id, device_id, mode, version, message_ttl, repositories, revoked, "
                  "activated, report, reported")


def _child(row: tuple) -> Child:
    return Child(row[0], row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7] or "[]"),
                 json.loads(row[8] or "[]"), row[9], json.loads(row[10]) if row[10] else None, row[11])


class ControlState:
    def __init__(self, metadata: MetadataDB) -> None:
        self.metadata = metadata

    # --- key/value state (instanceId, sync cursor, ...) ------------------------------------------

    def get(self, key: str) -> str | None:
        row = self.metadata.read_one("SELECT value FROM state WHERE key = ?", (key,))
        return row[0] if row else None

    async def set(self, key: str, value: str) -> None:
        await self.metadata.write(
            lambda db: db.execute("INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                                  "value = excluded.value", (key, value)))

    async def forget(self, key: str) -> None:
        await self.metadata.write(lambda db: db.execute("DELETE FROM state WHERE key = ?", (key,)))

    def set_now(self, key: str, value: str) -> None:
        """Synchronous variant for start-up and for commands that run without an event loop."""
        self.metadata.transaction(
            lambda db: db.execute("INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                                  "value = excluded.value", (key, value)))

    def instance_id(self) -> str:
        """Created at first start and kept in the data volume (SPEC 6)."""
        current = self.get("instanceId")
        if current is None:
            current = str(uuid.uuid4())
            self.set_now("instanceId", current)
        return current

    def reset_identity(self) -> str:
        new = str(uuid.uuid4())
        self.set_now("instanceId", new)
        self.set_now("activation", "{}")
        return new

    # --- children ----------------------------------------------------------------------------------

    def child(self, name: str) -> Child | None:
        row = self.metadata.read_one(f"SELECT {_CHILD_COLUMNS} FROM children WHERE name = ?", (name.lower(),))
        return _child(row) if row else None

    def children(self) -> list[Child]:
        return [_child(row) for row in self.metadata.read(f"SELECT {_CHILD_COLUMNS} FROM children ORDER BY name")]

    async def activate(self, name: str, document: dict, now: str) -> str:
        """'Active' (newly or again), or 'ALREADY_ACTIVE' / 'DEACTIVATED' (SPEC 6)."""

        def work(db: sqlite3.Connection) -> str:
            row = db.execute("SELECT status, instance_id, device_id, revoked FROM children WHERE name = ?",
                             (name.lower(),)).fetchone()
            instance_id, device_id = document["instanceId"], document["deviceId"]
            if row is not None:
                status, current_instance, current_device, revoked = row
                if instance_id in json.loads(revoked):
                    return "DEACTIVATED"
                if status == "Active" and (current_instance != instance_id or current_device != device_id):
                    return "ALREADY_ACTIVE"
            values = (name.lower(), name, instance_id, device_id, document.get("mode"), document.get("version"),
                      document.get("messageTtl"), json.dumps(document.get("repositories") or []), now)
            db.execute(
                "INSERT INTO children (name, display_name, status, instance_id, device_id, mode, version, message_ttl, "
                "repositories, activated) VALUES (?, ?, 'Active', ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                "display_name = excluded.display_name, status = 'Active', instance_id = excluded.instance_id, "
                "device_id = excluded.device_id, mode = excluded.mode, version = excluded.version, "
                "message_ttl = excluded.message_ttl, repositories = excluded.repositories, "
                "activated = CASE WHEN children.status = 'Active' THEN children.activated ELSE excluded.activated END",
                values,
            )
            return "Active"

        return await self.metadata.write(work)

    async def deactivate(self, name: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT instance_id, revoked FROM children WHERE name = ?", (name.lower(),)).fetchone()
            if row is None:
                return False
            revoked = json.loads(row[1])
            if row[0] and row[0] not in revoked:
                revoked.append(row[0])
            db.execute("UPDATE children SET status = 'Inactive', revoked = ? WHERE name = ?",
                       (json.dumps(revoked[-100:]), name.lower()))
            return True

        return await self.metadata.write(work)

    async def record_report(self, name: str, report: dict, now: str) -> None:
        await self.metadata.write(lambda db: db.execute(
            "UPDATE children SET report = ?, reported = ? WHERE name = ?", (json.dumps(report), now, name.lower())))

    # --- event retention ---------------------------------------------------------------------------

    def event_bounds(self) -> tuple[int, int]:
        """(oldest seq still kept, next seq to be written)."""
        head = self.metadata.read_one("SELECT COALESCE(MAX(seq), 0) FROM events")[0]
        pruned = int(self.get("eventsPrunedThrough") or 0)
        return pruned + 1, max(head, pruned) + 1

    async def prune_events(self, older_than: str) -> int:
        """Drop events older than an ISO timestamp; a cursor before what is left then gets 410."""

        def work(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT MAX(seq) FROM events WHERE time < ?", (older_than,)).fetchone()
            if row[0] is None:
                return 0
            count = db.execute("DELETE FROM events WHERE seq <= ?", (row[0],)).rowcount
            db.execute("INSERT INTO state (key, value) VALUES ('eventsPrunedThrough', ?) ON CONFLICT (key) DO UPDATE "
                       "SET value = excluded.value", (str(row[0]),))
            return count

        return await self.metadata.write(work)
