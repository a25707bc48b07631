"""The event log (SPEC 7.2) and the outbox (SPEC 7.3), written in the transaction of each visible change."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from connected_registry.storage import Disk, RegistryStore
from tests.support.oci import (
    OCI_INDEX,
    OCI_MANIFEST,
    expect_oci_error,
    image_manifest,
    index_manifest,
    push_blob,
    push_image,
    push_manifest,
    serve_store,
    sha256,
)

TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
EVENT_KEYS = {"seq", "type", "repository", "digest", "mediaType", "size", "origin", "time"}


@pytest.fixture
async def outbox_api(tmp_path: Path):
    """A ReadWrite child's store: record_outbox=True, origin "child-1"."""
    async with RegistryStore(str(tmp_path / "outbox-data"), origin="child-1", record_outbox=True) as store:
        async with serve_store(store) as served:
            yield served


def new_events(api, before: list[dict]) -> list[dict]:
    after = before[-1]["seq"] if before else 0
    return api.store.events(after=after)


def assert_recent(timestamp: str) -> None:
    assert TIME.match(timestamp), timestamp
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    assert abs(datetime.now(timezone.utc) - moment) < timedelta(minutes=2), timestamp


@contextlib.contextmanager
def failing(store: RegistryStore, table: str, operation: str = "INSERT"):
    """Make every `operation` on `table` abort inside the registry's own transaction, until the block ends."""
    path = os.path.join(store.data_dir, "metadata.db")
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute(
            f"CREATE TRIGGER injected_failure BEFORE {operation} ON {table} "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
        connection.commit()
    try:
        yield
    finally:
        with contextlib.closing(sqlite3.connect(path)) as connection:
            connection.execute("DROP TRIGGER injected_failure")
            connection.commit()


async def manifest_status(api, repository: str, reference: str) -> int:
    async with api.request("GET", f"/v2/{repository}/manifests/{reference}") as response:
        return response.status


# --- events: the SPEC 7.2 fields --------------------------------------------------------------------------


async def test_push_by_tag_records_manifest_put_then_tag_set(api):
    body, digest = await push_image(api, "library/app", "v1")
    put, tag_set = api.store.events()
    assert set(put) == EVENT_KEYS, "ManifestPut has no tag and, without a subject, no subject"
    assert put["type"] == "ManifestPut"
    assert (put["repository"], put["digest"], put["mediaType"], put["size"], put["origin"]) == (
        "library/app", digest, OCI_MANIFEST, len(body), "test-root")
    assert_recent(put["time"])
    assert set(tag_set) == EVENT_KEYS | {"tag"}
    assert tag_set["type"] == "TagSet"
    assert (tag_set["repository"], tag_set["tag"], tag_set["digest"], tag_set["mediaType"], tag_set["size"]) == (
        "library/app", "v1", digest, OCI_MANIFEST, len(body))
    assert tag_set["seq"] > put["seq"]


async def test_push_by_digest_records_only_manifest_put(api):
    before = api.store.events()
    config = b"{}"
    await push_blob(api, "app", config)
    body = image_manifest(config, [])
    await push_manifest(api, "app", sha256(body), body)
    assert [(event["type"], event["digest"]) for event in new_events(api, before)] == [("ManifestPut", sha256(body))]


async def test_blob_uploads_mounts_and_deletes_record_no_events(api):
    digest = await push_blob(api, "app", b"blob")
    async with api.request("POST", "/v2/other/blobs/uploads/", params={"mount": digest, "from": "app"}) as response:
        assert response.status == 201
    async with api.request("DELETE", f"/v2/app/blobs/{digest}") as response:
        assert response.status == 202
    assert api.store.events() == []


async def test_a_manifest_with_a_subject_records_manifest_put_with_the_subject(api):
    subject, subject_digest = await push_image(api, "app", "v1")
    before = api.store.events()
    config = b"{}"
    await push_blob(api, "app", config)
    signature = image_manifest(config, [], subject=subject, artifact_type="application/vnd.example.sig")
    await push_manifest(api, "app", sha256(signature), signature)
    (event,) = new_events(api, before)
    assert event["type"] == "ManifestPut"
    assert event["digest"] == sha256(signature)
    assert event["subject"] == subject_digest


async def test_a_referrer_of_a_missing_subject_also_records_manifest_put(api):
    config = b"{}"
    await push_blob(api, "app", config)
    absent = image_manifest(b"{}", [b"absent"])
    signature = image_manifest(config, [], subject=absent)
    await push_manifest(api, "app", sha256(signature), signature)
    (event,) = api.store.events()
    assert (event["type"], event["subject"]) == ("ManifestPut", sha256(absent))


async def test_an_index_push_records_its_media_type(api):
    child, child_digest = await push_image(api, "app", None, layers=1)
    before = api.store.events()
    index = index_manifest([child])
    await push_manifest(api, "app", "multi", index)
    put, tag_set = new_events(api, before)
    assert (put["type"], put["digest"], put["mediaType"], put["size"]) == ("ManifestPut", sha256(index), OCI_INDEX, len(index))
    assert (tag_set["type"], tag_set["tag"], tag_set["mediaType"]) == ("TagSet", "multi", OCI_INDEX)


async def test_moving_a_tag_records_tag_set_for_the_new_digest(api):
    await push_image(api, "app", "latest")
    second, second_digest = await push_image(api, "app", None)
    before = api.store.events()
    await push_manifest(api, "app", "latest", second)
    (event,) = new_events(api, before)
    assert (event["type"], event["tag"], event["digest"]) == ("TagSet", "latest", second_digest)


async def test_delete_by_tag_records_tag_deleted(api):
    body, digest = await push_image(api, "app", "v1")
    before = api.store.events()
    async with api.request("DELETE", "/v2/app/manifests/v1") as response:
        assert response.status == 202
    (event,) = new_events(api, before)
    assert set(event) == EVENT_KEYS | {"tag"}
    assert (event["type"], event["repository"], event["tag"], event["digest"], event["mediaType"], event["size"],
            event["origin"]) == ("TagDeleted", "app", "v1", digest, OCI_MANIFEST, len(body), "test-root")
    assert_recent(event["time"])


async def test_delete_by_digest_records_manifest_deleted(api):
    subject, _ = await push_image(api, "app", "v1")
    config = b"{}"
    await push_blob(api, "app", config)
    signature = image_manifest(config, [], subject=subject)
    await push_manifest(api, "app", "sig", signature)
    before = api.store.events()
    async with api.request("DELETE", f"/v2/app/manifests/{sha256(signature)}") as response:
        assert response.status == 202
    (event,) = new_events(api, before)
    assert set(event) == EVENT_KEYS | {"subject"}
    assert (event["type"], event["repository"], event["digest"], event["mediaType"], event["size"],
            event["subject"]) == ("ManifestDeleted", "app", sha256(signature), OCI_MANIFEST, len(signature),
                                  sha256(subject))


async def test_events_carry_the_origin_of_the_store(outbox_api):
    await push_image(outbox_api, "app", "v1")
    assert {event["origin"] for event in outbox_api.store.events()} == {"child-1"}


async def test_event_sequence_numbers_increase_and_after_skips_what_was_read(api):
    for tag in ("a", "b", "c"):
        await push_image(api, "app", tag)
    events = api.store.events()
    seqs = [event["seq"] for event in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) == 6
    assert api.store.events(after=seqs[2]) == events[3:]
    assert api.store.events(after=seqs[0], limit=2) == events[1:3]


# --- a write that changes nothing makes no event and no outbox entry -----------------------------------------


async def test_pushing_the_same_manifest_and_tag_again_makes_no_event_and_no_outbox_entry(outbox_api):
    body, digest = await push_image(outbox_api, "app", "v1")
    events, outbox = outbox_api.store.events(), outbox_api.store.outbox()
    assert len(events) == 2 and len(outbox) == 1
    await push_manifest(outbox_api, "app", "v1", body)
    await push_manifest(outbox_api, "app", digest, body)
    assert outbox_api.store.events() == events
    assert outbox_api.store.outbox() == outbox


async def test_tagging_an_existing_manifest_makes_only_tag_set_and_one_outbox_entry(outbox_api):
    body, digest = await push_image(outbox_api, "app", "v1")
    before, outbox_before = outbox_api.store.events(), outbox_api.store.outbox()
    await push_manifest(outbox_api, "app", "latest", body)
    assert [event["type"] for event in new_events(outbox_api, before)] == ["TagSet"]
    added = outbox_api.store.outbox()[len(outbox_before):]
    assert [(entry["operation"], entry["tag"], entry["digest"]) for entry in added] == [("PushManifest", "latest", digest)]


# --- the outbox ------------------------------------------------------------------------------------------------


async def test_the_outbox_records_pushes_and_deletes_in_commit_order(outbox_api):
    first, first_digest = await push_image(outbox_api, "app", "v1")
    second, second_digest = await push_image(outbox_api, "app", None)
    async with outbox_api.request("DELETE", "/v2/app/manifests/v1") as response:
        assert response.status == 202
    async with outbox_api.request("DELETE", f"/v2/app/manifests/{second_digest}") as response:
        assert response.status == 202
    entries = outbox_api.store.outbox()
    assert [(e["repository"], e["operation"], e["tag"], e["digest"]) for e in entries] == [
        ("app", "PushManifest", "v1", first_digest),
        ("app", "PushManifest", None, second_digest),
        ("app", "DeleteTag", "v1", first_digest),
        ("app", "DeleteManifest", None, second_digest),
    ]
    ids = [entry["id"] for entry in entries]
    assert ids == sorted(ids)
    for entry in entries:
        assert (entry["state"], entry["attempts"], entry["lastError"]) == ("pending", 0, None)
        assert_recent(entry["created"])


async def test_blob_deletes_stay_local(outbox_api):
    digest = await push_blob(outbox_api, "app", b"blob")
    async with outbox_api.request("DELETE", f"/v2/app/blobs/{digest}") as response:
        assert response.status == 202
    assert outbox_api.store.outbox() == []


async def test_a_root_records_no_outbox(api):
    await push_image(api, "app", "v1")
    async with api.request("DELETE", "/v2/app/manifests/v1") as response:
        assert response.status == 202
    assert len(api.store.events()) == 3
    assert api.store.outbox() == []


# --- failures record nothing; the event and the change share one transaction ------------------------------------


async def test_refused_writes_make_no_event_and_no_outbox_entry(outbox_api):
    body, digest = await push_image(outbox_api, "app", "v1")
    events, outbox = outbox_api.store.events(), outbox_api.store.outbox()
    missing_layer = image_manifest(b'{"os":"linux"}', [b"never pushed"])
    attempts = [
        ("PUT", "/v2/app/manifests/v2", missing_layer, 404, "MANIFEST_BLOB_UNKNOWN"),
        ("PUT", "/v2/app/manifests/v2", b"{broken", 400, "MANIFEST_INVALID"),
        ("PUT", f"/v2/app/manifests/{sha256(b'other')}", body, 400, "DIGEST_INVALID"),
        ("DELETE", "/v2/app/manifests/nope", None, 404, "MANIFEST_UNKNOWN"),
        ("DELETE", f"/v2/app/manifests/{sha256(b'nope')}", None, 404, "MANIFEST_UNKNOWN"),
    ]
    for method, path, data, status, code in attempts:
        async with outbox_api.request(method, path, data=data, headers={"Content-Type": OCI_MANIFEST}) as response:
            await expect_oci_error(response, status, code)
    assert outbox_api.store.events() == events
    assert outbox_api.store.outbox() == outbox


@pytest.mark.parametrize("table", ["tags", "events", "outbox"])
async def test_a_manifest_put_that_fails_mid_transaction_leaves_no_manifest_tag_event_or_outbox_entry(outbox_api, table):
    config, layer = b'{"os":"linux"}', os.urandom(100)
    await push_blob(outbox_api, "app", config)
    await push_blob(outbox_api, "app", layer)
    body = image_manifest(config, [layer])
    with failing(outbox_api.store, table):
        async with outbox_api.request("PUT", "/v2/app/manifests/v1", data=body,
                                      headers={"Content-Type": OCI_MANIFEST}) as response:
            assert response.status >= 500, await response.text()
    assert outbox_api.store.events() == []
    assert outbox_api.store.outbox() == []
    assert await manifest_status(outbox_api, "app", "v1") == 404
    assert await manifest_status(outbox_api, "app", sha256(body)) == 404
    # Nothing half-done is left behind: the same push now records everything it should.
    await push_manifest(outbox_api, "app", "v1", body)
    assert [event["type"] for event in outbox_api.store.events()] == ["ManifestPut", "TagSet"]
    assert [entry["operation"] for entry in outbox_api.store.outbox()] == ["PushManifest"]


@pytest.mark.parametrize("reference_kind", ["tag", "digest"])
async def test_a_delete_whose_event_fails_deletes_nothing(outbox_api, reference_kind):
    body, digest = await push_image(outbox_api, "app", "v1")
    events, outbox = outbox_api.store.events(), outbox_api.store.outbox()
    reference = "v1" if reference_kind == "tag" else digest
    with failing(outbox_api.store, "events"):
        async with outbox_api.request("DELETE", f"/v2/app/manifests/{reference}") as response:
            assert response.status >= 500, await response.text()
    assert await manifest_status(outbox_api, "app", "v1") == 200
    assert await manifest_status(outbox_api, "app", digest) == 200
    assert outbox_api.store.events() == events
    assert outbox_api.store.outbox() == outbox


class FailingCommitDisk(Disk):
    """A disk whose next metadata commit fails like an I/O error."""

    fail_next_commit = False

    def commit(self, connection: sqlite3.Connection) -> None:
        if self.fail_next_commit:
            self.fail_next_commit = False
            raise sqlite3.OperationalError("disk I/O error")
        super().commit(connection)


async def test_a_manifest_put_whose_commit_fails_records_no_event(tmp_path: Path):
    disk = FailingCommitDisk()
    async with RegistryStore(str(tmp_path / "data"), record_outbox=True, disk=disk) as store:
        async with serve_store(store) as api:
            config = b"{}"
            await push_blob(api, "app", config)
            body = image_manifest(config, [])
            disk.fail_next_commit = True
            async with api.request("PUT", "/v2/app/manifests/v1", data=body,
                                   headers={"Content-Type": OCI_MANIFEST}) as response:
                assert response.status >= 500
                text = await response.text()
                assert json.loads(text)["errors"][0]["code"].startswith("DISK_"), text
            assert store.events() == []
            assert store.outbox() == []
            assert await manifest_status(api, "app", "v1") == 404
