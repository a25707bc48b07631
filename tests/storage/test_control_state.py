"""The control state: one typed record, kept in the volume's `state` table under the keys earlier versions wrote."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from connected_registry.storage import RegistryStore
from connected_registry.storage.records import ControlState, ResumableDownload, ResumableUpload
from tests.support.postgres import both_metadata_backends

DIGEST = "sha256:" + "ab" * 32
# What an earlier version left in the `state` table, key by key, as it wrote them.
EARLIER_ROWS = {
    "instanceId": "0b7c7a52-1111-4e3c-9a1c-7d9d2c1e0f00",
    "cursor": "42",
    "download_failures": '{"factory/app": "blob sha256:12 is gone at the parent"}',
    "pendingRemoval": '{"old/repo": 1700000000.5}',
    "eventsPrunedThrough": "7",
    "diskChecked": "2026-01-01T00:00:00.000Z",
    "activation": "{}",  # written by a reset, never read
    f"download:{DIGEST}": "5f0c3b1e-upload-session",
    f"upload:https://parent:8000/factory/app@{DIGEST}": "/v2/factory/app/blobs/uploads/77",
}
EARLIER_STATE = ControlState(
    instance_id="0b7c7a52-1111-4e3c-9a1c-7d9d2c1e0f00", sync_cursor=42,
    download_failures={"factory/app": "blob sha256:12 is gone at the parent"},
    pending_removal={"old/repo": 1700000000.5}, events_pruned_through=7, disk_checked="2026-01-01T00:00:00.000Z")


def _write_rows(data_dir: Path, rows: dict[str, str]) -> None:
    with sqlite3.connect(data_dir / "metadata.db") as connection:
        connection.executemany("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", rows.items())
    connection.close()


def _rows(data_dir: Path) -> dict[str, str]:
    with sqlite3.connect(data_dir / "metadata.db") as connection:
        rows = dict(connection.execute("SELECT key, value FROM state"))
    connection.close()
    return rows


async def test_a_volume_an_earlier_version_wrote_opens_with_its_state_in_the_typed_record(tmp_path: Path):
    RegistryStore(str(tmp_path)).close()
    _write_rows(tmp_path, EARLIER_ROWS)
    async with RegistryStore(str(tmp_path)) as store:
        assert store.control.state() == EARLIER_STATE
        assert store.control.instance_id() == EARLIER_STATE.instance_id
        assert store.control.event_bounds()[0] == 8
        assert store.control.transfer_session(ResumableDownload(DIGEST)) == "5f0c3b1e-upload-session"
        upload = ResumableUpload("https://parent:8000", "factory/app", DIGEST)
        assert store.control.transfer_session(upload) == "/v2/factory/app/blobs/uploads/77"
        assert store.control.transfer_session(ResumableUpload("https://other:8000", "factory/app", DIGEST)) is None


async def test_the_state_is_written_under_the_keys_and_encodings_earlier_versions_read(tmp_path: Path):
    async with RegistryStore(str(tmp_path)) as store:
        await store.control.update_state(sync_cursor=42, download_failures=dict(EARLIER_STATE.download_failures),
                                         pending_removal=dict(EARLIER_STATE.pending_removal),
                                         events_pruned_through=7, disk_checked="2026-01-01T00:00:00.000Z",
                                         instance_id=EARLIER_STATE.instance_id)
        await store.control.remember_transfer_session(ResumableDownload(DIGEST), "5f0c3b1e-upload-session")
        await store.control.remember_transfer_session(ResumableUpload("https://parent:8000", "factory/app", DIGEST),
                                                      "/v2/factory/app/blobs/uploads/77")
    written = _rows(tmp_path)
    assert written == {key: value for key, value in EARLIER_ROWS.items() if key != "activation"}
    async with RegistryStore(str(tmp_path)) as store:
        assert store.control.state() == EARLIER_STATE


async def test_changing_one_field_keeps_the_others(tmp_path: Path):
    async with RegistryStore(str(tmp_path)) as store:
        instance_id = store.control.instance_id()
        await store.control.update_state(download_failures={"a/b": "why"})
        await store.control.update_state(sync_cursor=3)
        await store.control.update_state(download_failures={})
        assert store.control.state() == ControlState(instance_id=instance_id, sync_cursor=3)
        await store.control.forget_transfer_session(ResumableDownload(DIGEST))  # nothing to forget: no error
        await store.control.remember_transfer_session(ResumableDownload(DIGEST), "session")
        await store.control.forget_transfer_session(ResumableDownload(DIGEST))
        assert store.control.transfer_session(ResumableDownload(DIGEST)) is None
    assert set(_rows(tmp_path)) == {"instanceId", "cursor", "download_failures"}


@both_metadata_backends
async def test_a_reset_identity_gives_a_new_instance_id_and_starts_the_feed_again(tmp_path: Path):
    async with RegistryStore(str(tmp_path)) as store:
        first = store.control.instance_id()
        assert store.control.instance_id() == first  # kept, not made again
        await store.control.update_state(sync_cursor=12, pending_removal={"old/repo": 5.0})
        new = store.control.reset_identity()
        assert new != first
        assert store.control.state() == ControlState(instance_id=new, pending_removal={"old/repo": 5.0})
