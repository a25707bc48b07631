"""Slow and silent clients (SPEC 9, 12): timeouts hold. A connection that never finishes its request is
closed after the idle timeout; an upload body that stops arriving ends its request after the body idle
timeout, so the session (held by that request) can be resumed from a new connection; a manifest body that
stops arriving ends its request after the same timeout. The timeouts are shortened here; the defaults are 75 s
and 60 s. Bodies held in memory (manifests) and cut short give their memory back to the system."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from connected_registry import runtime as runtime_module
from connected_registry.runtime import InstanceOptions, Runtime
from connected_registry.storage import RegistryStore
from connected_registry.waits import within
from tests.faults.conftest import figures
from tests.support.oci import serve_store, sha256
from tests.support.processes import RegistryProcess, wait_until
from tests.support.raw_client import raw_exchange
from tests.sync.inprocess import eventually

RSS_SLACK_KIB = 6 << 10  # what a process may keep after a burst: allocator and interpreter caches


def _receive_until_closed(sock: socket.socket, seconds: float) -> bytes:
    sock.settimeout(seconds)
    received = b""
    while True:
        block = sock.recv(65536)
        if not block:
            return received
        received += block


async def test_a_connection_that_never_finishes_its_request_is_closed(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(runtime_module, "IDLE_CONNECTION_SECONDS", 1.0)
    async with Runtime(InstanceOptions(str(tmp_path / "data"), "127.0.0.1", 0)) as instance:
        sock = socket.create_connection(("127.0.0.1", instance.port))
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic ")
        # Closed by the server well before the client's own 10 s patience runs out.
        received = await asyncio.get_running_loop().run_in_executor(None, _receive_until_closed, sock, 10)
        sock.close()
        assert b"200 OK" not in received
        figures["slow clients: half-sent requests closed by the idle timeout"] += 1


async def test_a_stalled_upload_body_ends_its_request_and_the_upload_resumes(tmp_path: Path):
    store = RegistryStore(str(tmp_path / "data"))
    store.uploads.body_idle_seconds = 0.5
    data = os.urandom(200_000)
    try:
        async with serve_store(store) as api:
            async with api.request("POST", "/v2/slow/app/blobs/uploads/") as response:
                location = response.headers["Location"]
            # A client that sends part of a PATCH body and then goes silent, its connection left open.
            target = urlsplit(location)
            request = (f"PATCH {target.path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n"
                       "Content-Type: application/octet-stream\r\n\r\n").encode() + data[:3000]
            answers = await asyncio.get_running_loop().run_in_executor(
                None, lambda: raw_exchange(target.port, request, responses=1, deadline=10))
            assert answers and answers[0].status == 400 and b"BLOB_UPLOAD_INVALID" in answers[0].body, answers

            # The same session resumes from another connection, from what it says it has.
            async def resumed():
                async with api.session.get(location) as status:
                    have = int(status.headers["Range"].split("-")[1]) + 1 if status.headers.get("Range") != "0-0" else 0
                async with api.session.patch(location, data=data[have:], headers={
                        "Content-Range": f"{have}-{len(data) - 1}"}) as patch:
                    assert patch.status == 202, await patch.text()
                async with api.session.put(location, params={"digest": sha256(data)}) as put:
                    return put.status == 201

            await within(eventually(resumed, timeout=10, what="the resumed upload"), 15)
            async with api.request("GET", f"/v2/slow/app/blobs/{sha256(data)}") as response:
                assert await response.read() == data
        figures["slow clients: stalled upload bodies ended and resumed"] += 1
    finally:
        store.close()


@pytest.mark.parametrize("stall_after", [0, 1])
async def test_a_parent_read_timeout_is_not_mistaken_for_a_stalled_client(tmp_path: Path, stall_after):
    """The body idle timeout is the upload's own; any other timeout inside a receive passes through untouched
    (the sync relies on it to see a stalled parent as a link fault)."""
    store = RegistryStore(str(tmp_path / "data"))

    class TimingOut:
        def __init__(self) -> None:
            self.calls = 0

        async def readany(self) -> bytes:
            self.calls += 1
            if self.calls > stall_after:
                raise TimeoutError("the parent's read timeout")
            return b"x" * 10

    try:
        session = await store.uploads.create("slow/app")
        with pytest.raises(TimeoutError, match="parent's read timeout"):
            await store.uploads.append(session, TimingOut(), None)
    finally:
        store.close()


async def test_a_stalled_manifest_body_ends_its_request(tmp_path: Path):
    """A manifest PUT that stops short of its Content-Length is cut after the same silence as an upload body."""
    store = RegistryStore(str(tmp_path / "data"))
    store.uploads.body_idle_seconds = 0.5
    try:
        async with serve_store(store) as api:
            request = (b"PUT /v2/slow/app/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                       b"Content-Type: application/vnd.oci.image.manifest.v1+json\r\n\r\n" + b'{"schemaVersion": 2, ')
            answers = await asyncio.get_running_loop().run_in_executor(
                None, lambda: raw_exchange(api.server.port, request, responses=1, deadline=10))
            assert answers and answers[0].status == 400 and b"MANIFEST_INVALID" in answers[0].body, answers
            assert b"sent nothing for 0.5 s" in answers[0].body, answers[0].body
        figures["slow clients: stalled manifest bodies ended"] += 1
    finally:
        store.close()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def test_aborted_large_manifest_puts_give_their_memory_back(tmp_path: Path):
    """Rounds of 60 manifest PUTs that each send nearly 4 MiB and hang up: while they are open the registry holds
    their bodies; once they are gone its RSS is back within a few MiB of where it started."""
    registry = RegistryProcess(tmp_path / "data")
    size, connections, rounds = 4 << 20, 60, 3
    head = (f"PUT /v2/big/app/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n"
            "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n\r\n").encode()
    body = os.urandom(size - 4096)
    try:
        baseline = _rss_kib(registry.pid)
        for _ in range(rounds):
            sockets = []
            try:
                for _ in range(connections):
                    sock = socket.create_connection(("127.0.0.1", registry.port))
                    sockets.append(sock)
                    sock.sendall(head + body)
                # the bodies are held (the attack works as far as it can) ...
                wait_until(lambda: _rss_kib(registry.pid) > baseline + connections * len(body) // 1024 // 2,
                           timeout=30, what="the registry to buffer the bodies")
            finally:
                for sock in sockets:
                    sock.close()
            # ... and given back once their clients are gone
            wait_until(lambda: _rss_kib(registry.pid) < baseline + RSS_SLACK_KIB, timeout=30,
                       what=f"RSS back within {RSS_SLACK_KIB // 1024} MiB of {baseline // 1024} MiB")
            figures["hostile: aborted 4 MiB manifest PUTs tried"] += connections
        figures["hostile: aborted 4 MiB manifest PUTs held (memory returned)"] += rounds * connections
    finally:
        registry.stop()
