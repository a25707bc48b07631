"""SQLite (and PostgreSQL, which runs these same queries): the control state (one row of the `state` table per
field), the resumable transfers, the children.

The `state` table's keys and value encodings are those the first schema wrote, so a volume keeps its cursor,
identity and transfers across the upgrade to the typed record.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Callable

from connected_registry.storage.records import Child, ControlState, ResumableDownload, TransferKey

# ControlState field -> (its key in `state`, text -> value, value -> text)
_STATE_KEYS: dict[str, tuple[str, Callable[[str], Any], Callable[[Any], str]]] = {
    "instance_id": ("instanceId", str, str),
    "sync_cursor": ("cursor", int, str),
    "download_failures": ("download_failures", json.loads, json.dumps),
    "pending_removal": ("pendingRemoval", json.loads, json.dumps),
    "events_pruned_through": ("eventsPrunedThrough", int, str),
    "disk_checked": ("diskChecked", str, str),
    "activated_since": ("activatedSince", str, str),
    "registry_sync": ("registrySync", json.loads, json.dumps),
    "parent_key": ("parentKey", str, str),
    "bundle_cursors": ("bundleCursors", json.loads, json.dumps),
    "last_bundle_import": ("lastBundleImport", json.loads, json.dumps),
    "last_bundle_export": ("lastBundleExport", json.loads, json.dumps),
    "child_keys": ("childKeys", json.loads, json.dumps),
}

_CHILD_COLUMNS = ("display_name, status, instance_id, device_id, mode, version, message_ttl, repositories, revoked, "
                  "activated, report, reported")
_ACTIVATE = (
    "INSERT INTO children (name, display_name, status, instance_id, device_id, mode, version, message_ttl, "
    "repositories, activated) VALUES (?, ?, 'Active', ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
    "display_name = excluded.display_name, status = 'Active', instance_id = excluded.instance_id, "
    "device_id = excluded.device_id, mode = excluded.mode, version = excluded.version, "
    "message_ttl = excluded.message_ttl, repositories = excluded.repositories, "
    "activated = CASE WHEN children.status = 'Active' THEN children.activated ELSE excluded.activated END"
)


def _transfer_key(key: TransferKey) -> str:
    if isinstance(key, ResumableDownload):
        return f"download:{key.digest}"
    return f"upload:{key.parent}/{key.repository}@{key.digest}"  # a new parent: a new session


def _child(row: tuple) -> Child:
    return Child(row[0], row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7] or "[]"),
                 json.loads(row[8] or "[]"), row[9], json.loads(row[10]) if row[10] else None, row[11])


class ControlReads:
    db: sqlite3.Connection

    def control_state(self) -> ControlState:
        by_key = {key: (name, decode) for name, (key, decode, _) in _STATE_KEYS.items()}
        rows = self.db.execute(f"SELECT key, value FROM state WHERE key IN ({', '.join('?' * len(by_key))})",
                               tuple(by_key))
        return ControlState(**{by_key[key][0]: by_key[key][1](value) for key, value in rows})

    def transfer_session(self, key: TransferKey) -> str | None:
        row = self.db.execute("SELECT value FROM state WHERE key = ?", (_transfer_key(key),)).fetchone()
        return row[0] if row else None

    def child(self, name: str) -> Child | None:
        row = self.db.execute(f"SELECT {_CHILD_COLUMNS} FROM children WHERE name = ?", (name.lower(),)).fetchone()
        return _child(row) if row else None

    def children(self) -> list[Child]:
        return [_child(row) for row in self.db.execute(f"SELECT {_CHILD_COLUMNS} FROM children ORDER BY name")]


class ControlWrites:
    db: sqlite3.Connection

    def save_control_state(self, state: ControlState) -> None:
        stored = self.control_state()
        for name, (key, _, encode) in _STATE_KEYS.items():
            value = getattr(state, name)
            if value == getattr(stored, name):
                continue
            if value is None:
                self.db.execute("DELETE FROM state WHERE key = ?", (key,))
            else:
                self._put_state(key, encode(value))

    def remember_transfer_session(self, key: TransferKey, session: str) -> None:
        self._put_state(_transfer_key(key), session)

    def forget_transfer_session(self, key: TransferKey) -> None:
        self.db.execute("DELETE FROM state WHERE key = ?", (_transfer_key(key),))

    def _put_state(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                        "value = excluded.value", (key, value))

    def save_activation(self, name: str, document: dict, now: str) -> None:
        self.db.execute(_ACTIVATE, (name.lower(), name, document["instanceId"], document["deviceId"],
                                    document.get("mode"), document.get("version"), document.get("messageTtl"),
                                    json.dumps(document.get("repositories") or []), now))

    def save_deactivation(self, name: str, revoked: list[str]) -> None:
        self.db.execute("UPDATE children SET status = 'Inactive', revoked = ? WHERE name = ?",
                        (json.dumps(revoked), name.lower()))

    def record_child_report(self, name: str, report: dict, now: str) -> None:
        self.db.execute("UPDATE children SET report = ?, reported = ? WHERE name = ?",
                        (json.dumps(report), now, name.lower()))
