"""Power cuts replayed at the durability boundary (see powercut.py for the model): pushes (monolithic,
POST+PUT, chunked), manifest pushes and tag deletes on a ReadWrite child's store (so every change also
writes its outbox entry) with garbage collection running alongside; then the data directory is rebuilt
as of many random cut points, opened again, and checked: every acknowledged write present and intact
with its outbox entry, nothing visible that is not whole, and the volume takes new pushes."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from connected_registry.storage import RegistryStore
from connected_registry.storage.gc import collect_garbage
from tests.faults.conftest import figures, soaking
from tests.faults.powercut import JournalingDisk, digest_matches, rebuild
from tests.support.oci import OCI_MANIFEST, image_manifest, serve_store, sha256

SIZES = [0, 1, 4096, 70_000, 300_000]


class Workload:
    """Clients pushing and deleting through the HTTP API; each acknowledgement goes into the journal."""

    def __init__(self, api, disk: JournalingDisk, seed: int) -> None:
        self.api, self.disk, self.random = api, disk, random.Random(seed)
        self.tags: list[tuple[str, str]] = []

    async def run(self, worker: int, until: float) -> None:
        repository = f"cut/repo{worker % 2}"
        while time.monotonic() < until:
            choice = self.random.random()
            if choice < 0.6:
                await self.push_image(repository)
            elif choice < 0.8:
                await self.push_blob(repository, self._blob())
            elif self.tags:
                await self.delete_tag(*self.tags.pop(self.random.randrange(len(self.tags))))

    def _blob(self) -> bytes:
        return self.random.randbytes(self.random.choice(SIZES))

    async def push_blob(self, repository: str, data: bytes) -> bool:
        digest = sha256(data)
        style = self.random.choice(["monolithic", "post-put", "chunked"])
        if style == "monolithic":
            async with self.api.request("POST", f"/v2/{repository}/blobs/uploads/", params={"digest": digest},
                                        data=data) as response:
                ok = response.status == 201
        else:
            async with self.api.request("POST", f"/v2/{repository}/blobs/uploads/") as response:
                location = response.headers["Location"]
            pieces = [data] if style == "post-put" else [data[i:i + 50_000] for i in range(0, len(data), 50_000)]
            sent = 0
            for piece in pieces[:-1]:
                async with self.api.session.patch(location, data=piece, headers={
                        "Content-Range": f"{sent}-{sent + len(piece) - 1}"}) as response:
                    assert response.status == 202, await response.text()
                sent += len(piece)
            async with self.api.session.put(location, params={"digest": digest}, data=pieces[-1] if pieces else b"",
                                            ) as response:
                ok = response.status == 201
        if ok:
            self.disk.ack("blob", repository, digest)
        return ok

    async def push_image(self, repository: str) -> None:
        config = json.dumps({"n": self.random.random()}).encode()
        layers = [self._blob() + bytes([n]) for n in range(self.random.randint(1, 2))]
        for blob in (config, *layers):
            if not await self.push_blob(repository, blob):
                return
        body = image_manifest(config, layers)
        tag = f"t{self.random.randrange(10**9)}"
        async with self.api.request("PUT", f"/v2/{repository}/manifests/{tag}", data=body,
                                    headers={"Content-Type": OCI_MANIFEST}) as response:
            if response.status != 201:  # e.g. garbage collection took a layer first: not acknowledged
                assert "MANIFEST_BLOB_UNKNOWN" in await response.text(), response.status
                return
        self.disk.ack("manifest", repository, tag, body, [sha256(config), *map(sha256, layers)])
        self.tags.append((repository, tag))

    async def delete_tag(self, repository: str, tag: str) -> None:
        self.disk.ack("untag-sent", repository, tag)  # from here on the tag may be gone, acknowledged or not
        async with self.api.request("DELETE", f"/v2/{repository}/manifests/{tag}") as response:
            assert response.status == 202, await response.text()
        self.disk.ack("untag", repository, tag)


async def collect_often(store: RegistryStore, until: float) -> int:
    runs = 0
    while time.monotonic() < until:
        await collect_garbage(store, grace=0.5)  # blobs unreferenced for half a second go
        runs += 1
        await asyncio.sleep(0.1)
    return runs


async def run_workload(data_dir: Path, seed: int, seconds: float) -> tuple[list[tuple], int]:
    disk = JournalingDisk(str(data_dir))
    async with RegistryStore(str(data_dir), origin="line1-child", record_outbox=True, disk=disk) as store:
        async with serve_store(store) as api:
            workload = Workload(api, disk, seed)
            until = time.monotonic() + seconds
            results = await asyncio.gather(*(workload.run(worker, until) for worker in range(3)),
                                           collect_often(store, until))
    return disk.journal, results[-1]


def check_after_cut(data_dir: Path, acknowledged: list[tuple]) -> tuple[int, list[str]]:
    """Open the rebuilt volume and hold it to the guarantees; returns (writes checked, problems)."""
    problems: list[str] = []
    checked = 0
    store = RegistryStore(str(data_dir))
    try:
        untagging = {(entry[1], entry[2]) for entry in acknowledged if entry[0] == "untag-sent"}
        outbox = {(e["repository"], e["operation"], e["tag"], e["digest"]) for e in store.outbox()}
        for entry in acknowledged:
            if entry[0] == "manifest":
                _, repository, tag, body, blobs = entry
                record = store.get_manifest(repository, tag)
                if record is None and (repository, tag) in untagging:
                    continue  # a delete was under way at the cut: committed or not, both are right
                if record is None or record.body != body:
                    problems.append(f"acknowledged manifest {repository}:{tag} lost or changed")
                    continue
                for digest in blobs:
                    if store.blob_size(repository, digest) is None:
                        problems.append(f"blob {digest} of acknowledged {repository}:{tag} lost")
                if (repository, "PushManifest", tag, sha256(body)) not in outbox:
                    problems.append(f"outbox entry of acknowledged {repository}:{tag} lost")
                checked += 1
            elif entry[0] == "untag":
                _, repository, tag = entry
                if store.get_manifest(repository, tag) is not None:
                    problems.append(f"acknowledged delete of {repository}:{tag} undone")
                if not any(key[:3] == (repository, "DeleteTag", tag) for key in outbox):
                    problems.append(f"outbox entry of the delete of {repository}:{tag} lost")
                checked += 1
            elif entry[0] == "blob":
                checked += 1  # garbage collection may take a lone blob; if it is visible it is whole (below)
        # Nothing half-written is visible: every blob and manifest the metadata names is whole on disk.
        for digest in _digests_the_metadata_names(data_dir):
            path = Path(store.files.path(digest))
            if not path.exists():
                problems.append(f"{digest} is visible but its file is missing")
            elif not digest_matches(path, digest):
                problems.append(f"{digest} is visible but its file is not whole")
    finally:
        store.close()
    return checked, problems


def _digests_the_metadata_names(data_dir: Path) -> list[str]:
    """Read from the database file itself: what any blob or manifest row of the rebuilt volume names."""
    with closing(sqlite3.connect(data_dir / "metadata.db")) as database:
        return [row[0] for row in database.execute("SELECT DISTINCT digest FROM repository_blobs UNION "
                                                   "SELECT DISTINCT digest FROM manifests")]


async def accepts_pushes(data_dir: Path) -> None:
    async with RegistryStore(str(data_dir), record_outbox=True) as store:
        async with serve_store(store) as api:
            data = b"after the power came back"
            async with api.request("POST", "/v2/cut/after/blobs/uploads/", params={"digest": sha256(data)},
                                   data=data) as response:
                assert response.status == 201, await response.text()


def replay_cuts(tmp_path: Path, journal: list[tuple], cuts: list[int]) -> tuple[int, list[str]]:
    checked, problems = 0, []
    for number, cut in enumerate(cuts):
        target = tmp_path / f"cut{number}"
        survivors = rebuild(journal, cut, target)
        count, found = check_after_cut(target, survivors.acknowledged)
        checked += count
        problems += [f"cut at journal entry {cut}/{len(journal)}: {problem}" for problem in found]
    return checked, problems


async def test_power_cuts_at_random_points_lose_no_acknowledged_write(tmp_path: Path, budget):
    rounds = budget(2, 20)
    for round_number in rounds:
        journal, gc_runs = await run_workload(tmp_path / f"round{round_number}" / "data", round_number, 2.0)
        acks = [index for index, entry in enumerate(journal) if entry[0] == "ack"]
        assert len(acks) > 20, f"the workload acknowledged too little: {len(acks)}"
        chooser = random.Random(round_number)
        # random cuts, and cuts right before and after acknowledgements (where a wrong order would show)
        cuts = sorted({chooser.randrange(len(journal) + 1) for _ in range(15)}
                      | {index + chooser.choice([0, 1]) for index in chooser.sample(acks, len(acks) if soaking() else 10)}
                      | {len(journal)})
        checked, problems = replay_cuts(tmp_path / f"round{round_number}", journal, cuts)
        figures["power cut: losses"] += len(problems)
        assert not problems, "\n".join(problems[:20])
        await accepts_pushes(tmp_path / f"round{round_number}" / f"cut{len(cuts) - 1}")
        figures["power cut: workload rounds"] += 1
        figures["power cut: cut points replayed"] += len(cuts)
        figures["power cut: acknowledged writes checked (summed over cuts)"] += checked
        figures["power cut: garbage collections run during the workload"] += gc_runs


class ForgetfulDisk(JournalingDisk):
    """A defect on purpose: renames that are never made durable (no directory fsync)."""

    def fsync_dir(self, path: str) -> None:
        pass


async def test_the_replay_catches_a_rename_that_was_never_made_durable(tmp_path: Path, monkeypatch):
    """The replay is only worth something if it sees a missing step: drop the directory fsync and it must."""
    monkeypatch.setattr("tests.faults.test_power_cut.JournalingDisk", ForgetfulDisk)
    journal, _ = await run_workload(tmp_path / "data", 7, 1.0)
    _, problems = replay_cuts(tmp_path, journal, [len(journal)])
    assert any("lost" in problem or "missing" in problem for problem in problems), problems[:5]


class Killed(Exception):
    pass


class KilledBeforeDirectoryFsync(JournalingDisk):
    """The process dies right after a rename, before the directory fsync (SIGKILL keeps the page cache, so the
    file is still there when the instance starts again, but its directory entry is not yet durable)."""

    armed = False

    def fsync_dir(self, path: str) -> None:
        if self.armed:
            self.armed = False
            raise Killed("SIGKILL between the rename and the directory fsync")
        super().fsync_dir(path)


@pytest.mark.parametrize("kind", ["blob", "manifest"])
async def test_a_file_left_by_a_kill_is_made_durable_when_the_same_content_is_pushed_again(tmp_path: Path, kind):
    """Found by this replay: a push that found its file already in place (left by a killed push) committed
    without fsyncing the directory, so a power cut later could lose an acknowledged write."""
    disk = KilledBeforeDirectoryFsync(str(tmp_path / "data"))
    store = RegistryStore(str(tmp_path / "data"), disk=disk)
    config, layer = b"{}", b"pushed twice"
    body = image_manifest(config, [layer])
    try:
        async with serve_store(store) as api:

            async def push() -> int:
                if kind == "blob":
                    request = api.request("POST", "/v2/cut/twice/blobs/uploads/", params={"digest": sha256(layer)},
                                          data=layer)
                else:
                    request = api.request("PUT", "/v2/cut/twice/manifests/v1", data=body,
                                          headers={"Content-Type": OCI_MANIFEST})
                async with request as response:
                    return response.status

            if kind == "manifest":
                for blob in (config, layer):
                    async with api.request("POST", "/v2/cut/twice/blobs/uploads/", params={"digest": sha256(blob)},
                                           data=blob) as response:
                        assert response.status == 201
            disk.armed = True
            assert await push() == 500  # the first push dies between its rename and its directory fsync
            assert await push() == 201  # pushed again after the restart: acknowledged
            disk.ack("push", kind)
    finally:
        store.close()
    rebuild(disk.journal, len(disk.journal), tmp_path / "after")
    digest = sha256(layer if kind == "blob" else body)
    path = tmp_path / "after" / "blobs" / "sha256" / digest[7:9] / digest[7:]
    assert path.exists() and digest_matches(path, digest), f"acknowledged {kind} {digest} lost in the power cut"
