"""A real slow link (issue 16): the parent runs in a network namespace of the test's own, joined to the child's by
a veth pair rate-limited with tbf (tests/support/netns.py, the `shaped_link` fixture). The link itself is checked
first: a blob takes the time its size gives at the rate, each way, measured on the veth; then a parent and a child
sync over it; then the userspace fault proxy (tests/sync/inprocess.py's FaultyLink) sits on the shaped link and
adds a long round trip and drops, and the child still gets every byte."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import aiohttp

from tests.faults.conftest import figures
from tests.support.http import basic, request
from tests.support.layouts import make_image, read_blob
from tests.support.oci import image_manifest, sha256
from tests.support.processes import wait_until
from tests.sync import instance_api
from tests.sync.hierarchy import READER, client_tokens, start_instance, sync_token_for
from tests.sync.inprocess import FakeClock, FaultyLink, basic_header, digest_at, eventually, start_runtime, url

MiB = 1 << 20
MBIT = 1_000_000
RATE_TOLERANCE = 0.15  # the rate on the wire, headers included, against the tbf rate


def start_parent(base: Path, link, children=()):
    """factory-root inside the link's namespace, its children's sync tokens in its tokens."""
    return link.adopt(start_instance(base, "factory-root", children=children, **link.registry_options()))


def timed(action) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def pull_blob(instance, repository: str, digest: str) -> bytes:
    reply = request(f"{instance.url}/v2/{repository}/blobs/{digest}", headers=basic(*READER), timeout=60)
    assert reply.status == 200, reply.body[:300]
    return reply.body


def seconds_at(size: int, bits_per_second: int) -> float:
    """The least time `size` bytes take at the rate (payload only: headers make it longer)."""
    return size * 8 / bits_per_second


def assert_rate(wire_bytes: int, seconds: float, bits_per_second: int) -> float:
    measured = wire_bytes * 8 / seconds
    assert abs(measured - bits_per_second) <= RATE_TOLERANCE * bits_per_second, (
        f"{measured / MBIT:.2f} Mbit/s on the wire through a link shaped to {bits_per_second / MBIT:g} Mbit/s")
    return measured


def test_a_blob_crosses_a_link_shaped_to_8_mbit_in_the_time_its_size_gives_each_way(tmp_path: Path, shaped_link):
    parent = start_parent(tmp_path, shaped_link)
    blob = os.urandom(4 * MiB)
    digest = instance_api.push_blob(parent, "factory/big", blob)
    unshaped, _ = timed(lambda: pull_blob(parent, "factory/big", digest))

    shaped_link.shape(down=8 * MBIT, up=None)
    with shaped_link.counting() as crossed:
        took, pulled = timed(lambda: pull_blob(parent, "factory/big", digest))
    assert pulled == blob
    assert took >= 0.95 * seconds_at(len(blob), 8 * MBIT), f"4 MiB in {took:.2f} s through 8 Mbit/s"
    assert crossed[0].from_parent >= len(blob)
    measured = assert_rate(crossed[0].from_parent, took, 8 * MBIT)
    assert unshaped < took / 5, f"unshaped {unshaped:.2f} s against shaped {took:.2f} s"

    shaped_link.shape(down=None, up=4 * MBIT)
    upload = os.urandom(MiB)
    with shaped_link.counting() as crossed:
        took_up, _ = timed(lambda: instance_api.push_blob(parent, "factory/big", upload))
    assert took_up >= 0.95 * seconds_at(len(upload), 4 * MBIT), f"1 MiB pushed in {took_up:.2f} s at 4 Mbit/s"
    assert_rate(crossed[0].to_parent, took_up, 4 * MBIT)
    assert pull_blob(parent, "factory/big", sha256(upload)) == upload
    figures["shaped link: 8 Mbit/s measured on the veth (kbit/s)"] = round(measured / 1000)


def test_a_child_syncs_from_its_parent_over_a_shaped_link(tmp_path: Path, shaped_link):
    parent = start_parent(tmp_path, shaped_link, children=[("line1-leaf", "ReadOnly")])
    layout = tmp_path / "layout"
    expected = make_image(layout, "v1", layers=2, size="1M")
    instance_api.skopeo_push(layout, "v1", parent, "factory/app:v1")
    shaped_link.shape(8 * MBIT)

    with shaped_link.counting() as crossed:
        started = time.perf_counter()
        child = start_instance(tmp_path, "line1-leaf", parent=parent, repositories=["factory/*"])
        try:
            wait_until(lambda: instance_api.digest_at(child, "factory/app", "v1") == expected, timeout=60,
                       what="the image at the child")
            layers = json.loads(read_blob(layout, expected))["layers"]
            for layer in layers:
                assert pull_blob(child, "factory/app", layer["digest"]) == read_blob(layout, layer["digest"])
            took = time.perf_counter() - started  # the whole image at the child (a manifest may come first)
        finally:
            child.stop()
    image_bytes = sum(layer["size"] for layer in layers)
    assert crossed[0].from_parent >= image_bytes, "the image did not come over the shaped link"
    assert took >= seconds_at(image_bytes, 8 * MBIT), f"{image_bytes} bytes synced in {took:.2f} s at 8 Mbit/s"


def push_one_layer_image(instance, repository: str, tag: str, layer: bytes) -> str:
    config = json.dumps({"tag": tag}).encode()
    for blob in (config, layer):
        instance_api.push_blob(instance, repository, blob)
    return instance_api.put_manifest(instance, repository, tag, image_manifest(config, [layer]))


def leaf_document(parent_endpoint: str) -> dict:
    sync_name = sync_token_for("line1-leaf")[0]
    return {"name": "line1-leaf", "mode": "ReadOnly", "tokens": client_tokens(), "repositories": ["factory/*"],
            "onDemand": False,  # what arrives comes by the sync
            "parent": {"endpoint": parent_endpoint, "syncToken": {"name": sync_name}, "connectTimeout": "PT1S",
                       "firstByteTimeout": "PT1S"}}


async def test_the_fault_proxy_on_a_shaped_link_adds_latency_and_drops_and_every_byte_arrives(
        tmp_path: Path, monkeypatch, shaped_link):
    parent = start_parent(tmp_path, shaped_link, children=[("line1-leaf", "ReadOnly")])
    shaped_link.shape(20 * MBIT)
    proxy = await FaultyLink().start()
    proxy.upstream = parent.url  # the proxy here, the parent behind the shaped link
    _, sync_password, _ = sync_token_for("line1-leaf")
    monkeypatch.setenv("ACR_REGISTRY_CONNECTION_STRING",
                       f"SyncTokenName=line1-leaf-sync;SyncTokenPassword={sync_password}")
    leaf = await start_runtime(tmp_path / "leaf", leaf_document(proxy.url), FakeClock())
    reader = basic_header(*READER)
    try:
        async with aiohttp.ClientSession() as session:
            for fault in ("latency", "reset", "stall"):
                injected = proxy.injected.get(fault, 0)
                await proxy.set(fault)
                layer = os.urandom(2 * MiB)
                with shaped_link.counting() as crossed:
                    pushed = await asyncio.to_thread(push_one_layer_image, parent, "factory/app", fault, layer)
                    pushed_at = time.perf_counter()
                    await eventually(lambda: _async(proxy.injected.get(fault, 0) > injected), timeout=30,
                                     what=f"{fault} to hit the sync")
                    if fault != "latency":  # a long round trip only slows the sync; the others break it until over
                        await proxy.set(None)
                    await eventually(lambda: _is(digest_at(session, leaf, "factory/app", fault, reader), pushed),
                                     timeout=60, what=f"the image at the leaf after {fault}")
                    async with session.get(url(leaf, f"/v2/factory/app/blobs/{sha256(layer)}"),
                                           headers=reader) as response:
                        assert await response.read() == layer
                    took = time.perf_counter() - pushed_at
                await proxy.set(None)
                assert took >= seconds_at(len(layer), 20 * MBIT), f"2 MiB through 20 Mbit/s in {took:.2f} s"
                assert crossed[0].to_parent >= len(layer) and crossed[0].from_parent >= len(layer), crossed[0]
                figures[f"shaped link: images synced through the proxy's {fault}"] += 1
    finally:
        await leaf.stop()
        await proxy.close()


async def _async(value):
    return value


async def _is(awaitable, expected) -> bool:
    return await awaitable == expected
