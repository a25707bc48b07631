"""`platforms` (issue 16): a site that runs only some platforms syncs an index byte for byte but only the manifests
and blobs of those platforms (and of what is about them: attestations, artifacts); the others are filled on demand
where `onDemand` allows, else a 404 names the setting; garbage collection leaves all of it alone; a ReadWrite child
sends an index up only whole. Instances run in-process, the parent behind a proxy that counts what it served."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from connected_registry.settings import validate_desired
from connected_registry.storage.gc import GRACE_SECONDS, collect_garbage
from tests.support.clients import RecordingProxy
from tests.support.oci import (PlatformImage, artifact_about, attestation_of, expect_oci_error, platform_image,
                               platform_index, sha256)
from tests.sync.hierarchy import READER, WRITER
from tests.sync.inprocess import (FakeClock, basic_header, digest_at, eventually, push_small_image, start_root_for_leaf,
                                  start_runtime, url)


class ThreePlatforms:
    """amd64, arm64 and arm/v7 images, buildx's attestation of each, and an SBOM artifact about amd64."""

    def __init__(self) -> None:
        self.amd64, self.arm64, self.armv7 = (platform_image(p, layers=2, layer_size=20_000)
                                              for p in ("linux/amd64", "linux/arm64", "linux/arm/v7"))
        self.attestations = [attestation_of(image) for image in (self.amd64, self.arm64, self.armv7)]
        self.sbom_of_amd64 = artifact_about(self.amd64)
        self.images = [self.amd64, self.arm64, self.armv7, *self.attestations, self.sbom_of_amd64]
        self.index = platform_index(self.images)

    @property
    def kept_for_arm64(self) -> list[PlatformImage]:
        return [self.arm64, self.attestations[1]]

    @property
    def left_out_for_arm64(self) -> list[PlatformImage]:
        return [self.amd64, self.armv7, self.attestations[0], self.attestations[2], self.sbom_of_amd64]


async def push_images(session: aiohttp.ClientSession, runtime, repository: str, images: list[PlatformImage],
                      headers: dict) -> None:
    for image in images:
        for blob in image.blobs:
            async with session.post(url(runtime, f"/v2/{repository}/blobs/uploads/"), params={"digest": sha256(blob)},
                                    data=blob, headers=headers) as response:
                assert response.status == 201, await response.text()
        await put_manifest(session, runtime, repository, image.digest, image.body, headers)


async def put_manifest(session, runtime, repository: str, reference: str, body: bytes, headers: dict) -> int:
    media_type = json.loads(body)["mediaType"]
    async with session.put(url(runtime, f"/v2/{repository}/manifests/{reference}"), data=body,
                           headers={**headers, "Content-Type": media_type}) as response:
        return response.status


async def synced_site(session, root, content: ThreePlatforms, directory: Path, document: dict, clock):
    """The index pushed at the root as factory/app:1.0, and a site started with `document` once it has synced it."""
    await push_images(session, root, "factory/app", content.images, basic_header(*WRITER))
    assert await put_manifest(session, root, "factory/app", "1.0", content.index, basic_header(*WRITER)) == 201
    site = await start_runtime(directory, document, clock)
    await eventually(lambda: digest_at(session, site, "factory/app", "1.0", basic_header(*READER)), what="the index")
    return site


async def manifest_error(session, runtime, repository: str, digest: str) -> str:
    async with session.get(url(runtime, f"/v2/{repository}/manifests/{digest}"), headers=basic_header(*READER)) as got:
        return (await expect_oci_error(got, 404, "MANIFEST_UNKNOWN"))["message"]


async def blob_status(session, runtime, repository: str, digest: str) -> int:
    async with session.get(url(runtime, f"/v2/{repository}/blobs/{digest}"), headers=basic_header(*READER)) as got:
        return got.status


def served_blobs(proxy: RecordingProxy, repository: str) -> set[str]:
    return {exchange.path.rsplit("/", 1)[1] for exchange in proxy.requests_for(repository, "GET", "blobs/")
            if exchange.status in (200, 206)}


def blobs_of(images: list[PlatformImage]) -> set[str]:
    return {sha256(blob) for image in images for blob in image.blobs}


async def test_an_arm64_site_syncs_the_index_whole_and_only_the_arm64_content(tmp_path: Path, monkeypatch):
    clock = FakeClock()
    root, document = await start_root_for_leaf(tmp_path, clock, monkeypatch)
    proxy = RecordingProxy(f"127.0.0.1:{root.port}", timeout=30)  # what the parent served: counted there
    document["parent"]["endpoint"], document["platforms"] = proxy.url, ["linux/arm64"]
    content = ThreePlatforms()
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    leaf = None
    try:
        async with aiohttp.ClientSession() as session:
            leaf = await synced_site(session, root, content, tmp_path / "leaf", document, clock)

            # the index byte for byte: `docker pull app@sha256:<index>` works; only the arm64 side came with it
            assert await digest_at(session, leaf, "factory/app", "1.0", reader) == sha256(content.index)
            for image in content.kept_for_arm64:
                assert await digest_at(session, leaf, "factory/app", image.digest, reader) == image.digest
            assert served_blobs(proxy, "factory/app") == blobs_of(content.kept_for_arm64)

            message = await manifest_error(session, leaf, "factory/app", content.amd64.digest)
            assert "(linux/amd64)" in message and "only the platforms linux/arm64 (setting `platforms`)" in message
            assert "`onDemand` is false" in message, message
            for image in content.left_out_for_arm64:
                assert "`platforms`" in await manifest_error(session, leaf, "factory/app", image.digest)

            left_out = content.left_out_for_arm64
            kept_blobs = {blob for image in content.kept_for_arm64 for blob in image.blobs}  # one attestation config
            saved = sum(len(image.body) for image in left_out) + sum(
                len(blob) for blob in {blob for image in left_out for blob in image.blobs} - kept_blobs)
            assert leaf.status_document()["sync"]["platforms"] == {
                "synced": ["linux/arm64"], "manifestsLeftOut": len(left_out), "bytesSaved": saved}
            assert "DOWNLOAD_FAILED" not in {d["code"] for d in leaf.status_document()["statusDetails"]}

            # where onDemand allows, a left-out platform is a miss like any other, filled from the parent
            leaf.instance.apply(validate_desired({**document, "onDemand": True}))
            assert await digest_at(session, leaf, "factory/app", content.amd64.digest, reader) == content.amd64.digest
            assert await blob_status(session, leaf, "factory/app", sha256(content.amd64.blobs[1])) == 200

            # garbage collection finds nothing broken and nothing to collect in all this
            report = await collect_garbage(leaf.store, read_only=True, now=clock() + 2 * GRACE_SECONDS)
            assert (report.manifests_removed, report.blobs_removed) == (0, 0)
            for image in [*content.kept_for_arm64, content.amd64]:
                assert await digest_at(session, leaf, "factory/app", image.digest, reader) == image.digest

            # a platform added to the setting arrives with the reconcile it starts, onDemand off again
            leaf.instance.apply(validate_desired({**document, "platforms": ["linux/arm64", "linux/arm/v7"]}))
            await eventually(lambda: digest_at(session, leaf, "factory/app", content.armv7.digest, reader),
                             what="arm/v7 synced")
            assert {sha256(blob) for blob in content.armv7.blobs} <= served_blobs(proxy, "factory/app")
            assert not leaf.store.incomplete("factory/app", sha256(content.index))
    finally:
        if leaf is not None:
            await leaf.stop()
        proxy.stop()
        await root.stop()


async def detail(runtime, code: str) -> dict | None:
    return next((d for d in runtime.status_document()["statusDetails"] if d["code"] == code), None)


async def test_a_read_write_site_sends_an_index_up_only_whole_and_one_the_parent_lacks_waits(tmp_path: Path,
                                                                                          monkeypatch):
    clock = FakeClock()
    root, document = await start_root_for_leaf(tmp_path, clock, monkeypatch, mode="ReadWrite")
    document["platforms"] = ["linux/arm64"]
    content = ThreePlatforms()
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    leaf = None
    try:
        async with aiohttp.ClientSession() as session:
            leaf = await synced_site(session, root, content, tmp_path / "leaf", document, clock)

            # a new tag for the index as it is here (crane tag): taken, and up it goes, the parent holding the rest
            assert await put_manifest(session, leaf, "factory/app", "stable", content.index, writer) == 201
            await eventually(lambda: digest_at(session, root, "factory/app", "stable", reader), what="stable up")
            assert await digest_at(session, root, "factory/app", "stable", reader) == sha256(content.index)

            # once the parent lost amd64, the index cannot go up whole from here: its entry waits and says why
            async with session.delete(url(root, f"/v2/factory/app/manifests/{content.amd64.digest}"),
                                      headers=writer) as deleted:
                assert deleted.status == 202, await deleted.text()
            assert await put_manifest(session, leaf, "factory/app", "candidate", content.index, writer) == 201
            waiting = await eventually(lambda: detail(leaf, "UPLOAD_WAITING_FOR_MANIFESTS"), what="the wait")
            assert f"{content.amd64.digest} (linux/amd64)" in waiting["description"], waiting
            assert "factory/app:candidate" in waiting["description"] and waiting["severity"] == "Warning"
            assert leaf.status_document()["sync"]["rejectedUploads"] == 0  # waiting, not parked
            other = await push_small_image(session, leaf, "factory/other", "v1", writer)  # holds up nothing else
            await eventually(lambda: digest_at(session, root, "factory/other", "v1", reader), what="another repo")
            assert await digest_at(session, root, "factory/other", "v1", reader) == other
            assert await digest_at(session, root, "factory/app", "candidate", reader) is None

            # amd64 pushed here: the index goes up whole, and the detail goes
            await push_images(session, leaf, "factory/app", [content.amd64], writer)
            await eventually(lambda: digest_at(session, root, "factory/app", "candidate", reader), what="candidate")
            assert await digest_at(session, root, "factory/app", content.amd64.digest, reader) == content.amd64.digest
            await eventually(lambda: _no(detail(leaf, "UPLOAD_WAITING_FOR_MANIFESTS")), what="the detail cleared")
    finally:
        if leaf is not None:
            await leaf.stop()
        await root.stop()


async def _no(awaitable) -> bool:
    return await awaitable is None


async def test_pushed_while_the_site_follows_the_feed_only_the_arm64_side_comes_down(tmp_path: Path, monkeypatch):
    """The children of an index are put (and their events sent) before it: nothing says then which are wanted, so
    they come with the index's walk; a referrer pushed later comes on its own event when its subject is here."""
    clock = FakeClock()
    root, document = await start_root_for_leaf(tmp_path, clock, monkeypatch)
    proxy = RecordingProxy(f"127.0.0.1:{root.port}", timeout=30)
    document["parent"]["endpoint"], document["platforms"] = proxy.url, ["linux/arm64"]
    content = ThreePlatforms()
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    try:
        async with aiohttp.ClientSession() as session:
            await push_small_image(session, root, "factory/app", "before", writer)
            await eventually(lambda: digest_at(session, leaf, "factory/app", "before", reader), what="the feed")

            await push_images(session, root, "factory/app", content.images, writer)
            assert await put_manifest(session, root, "factory/app", "1.0", content.index, writer) == 201
            await eventually(lambda: digest_at(session, leaf, "factory/app", "1.0", reader), what="the index")
            signatures = [artifact_about(image, "application/vnd.example.signature")
                          for image in (content.arm64, content.amd64)]
            await push_images(session, root, "factory/app", signatures, writer)
            await push_small_image(session, root, "factory/app", "after", writer)  # the events before it are applied
            await eventually(lambda: digest_at(session, leaf, "factory/app", "after", reader), what="later events")

            assert await digest_at(session, leaf, "factory/app", signatures[0].digest, reader) is not None
            for image in [*content.left_out_for_arm64, signatures[1]]:
                assert await digest_at(session, leaf, "factory/app", image.digest, reader) is None
            crossed = served_blobs(proxy, "factory/app") & blobs_of(content.images + signatures)
            assert crossed == blobs_of(content.kept_for_arm64 + signatures[:1])
    finally:
        await leaf.stop()
        proxy.stop()
        await root.stop()
