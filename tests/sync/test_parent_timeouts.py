"""The parent's timeouts (SPEC 3: parent.connectTimeout, parent.firstByteTimeout) apply to the next request
after a twin update, on the connection already open, without a restart."""

from __future__ import annotations

import asyncio
import time

import pytest

from connected_registry.sync.parent_client import ParentClient, ParentError, ParentUnreachable


async def test_new_timeouts_apply_to_the_next_request_to_a_parent_that_never_answers():
    held: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(reader, writer):
        held.append(writer)

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = ParentClient(f"http://127.0.0.1:{port}", "sync", "password", connect_timeout=1, first_byte_timeout=30)
    try:
        client.session  # opened with the old timeouts, as a running instance's is
        client.set_timeouts(1, 0.5)
        started = time.monotonic()
        with pytest.raises(ParentError) as failure:
            await client.get_manifest("factory/app", "v1")
        assert isinstance(failure.value, ParentUnreachable)
        assert time.monotonic() - started < 5, "the first-byte timeout of 30 s still applied"
    finally:
        await client.close()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_parent_that_never_completes_the_connection_fails_within_the_connect_timeout():
    """A listener whose accept queue is full drops new SYNs, as a parent behind a dead route does: only
    parent.connectTimeout can end the wait (the first-byte timeout here is far longer)."""
    import socket

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = []
    for _ in range(8):  # fill the accept queue; nobody accepts
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        queued.append(filler)
    client = ParentClient(f"http://127.0.0.1:{port}", "sync", "password", connect_timeout=1, first_byte_timeout=60)
    try:
        started = time.monotonic()
        with pytest.raises(ParentError) as failure:
            await client.get_manifest("factory/app", "v1")
        elapsed = time.monotonic() - started
        assert isinstance(failure.value, ParentUnreachable) and failure.value.timed_out, failure.value
        assert 0.9 < elapsed < 5, f"{elapsed:.1f} s"
    finally:
        await client.close()
        for filler in queued:
            filler.close()
        listener.close()
