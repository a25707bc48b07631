"""A request body read whole into memory (a manifest, a token form, a control document): however it arrives (in
one TCP write or many, chunked or not), up to its cap, cut after the same silence as an upload body, and its
buffers let go on every way out."""

from __future__ import annotations

import asyncio
import gc

from aiohttp import web

from connected_registry.api.context import context
from connected_registry.memory import malloc_trim
from connected_registry.oci.errors import OciError

_TRIM_AFTER_BYTES = 1 << 20  # a body cut short after this much buffering hands its memory back to the system


def return_freed_memory() -> None:
    """After a large body was cut short: its request's exception and traceback hold the connection's buffers in
    reference cycles, which the collector (tuned to run rarely, runtime.settle_garbage_collector) would keep for
    long; and glibc keeps what is freed for reuse. Collect them, and give the free pages back to the system
    (well under a millisecond each)."""
    gc.collect()
    if malloc_trim is not None:
        malloc_trim(0)


def size_text(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit >> 10} KiB"


async def read_body(request: web.Request, limit: int, what: str, *, too_large: str, stalled: str) -> bytes:
    """The whole body, at most `limit` bytes; the endpoint's error codes: `too_large` (a 413 naming the cap),
    `stalled` (the body went silent). `what` names the body in messages ("manifest", "token request")."""
    over_limit = OciError(too_large, f"the {what} is larger than the {size_text(limit)} limit")
    if request.content_length is not None and request.content_length > limit:
        raise over_limit
    idle_seconds = context(request).store.uploads.body_idle_seconds
    loop = asyncio.get_running_loop()
    idle = asyncio.timeout(idle_seconds)
    parts: list[bytes] = []
    total = 0
    complete = False
    try:
        async with idle:
            while chunk := await request.content.readany():
                idle.reschedule(loop.time() + idle_seconds)
                total += len(chunk)
                if total > limit:
                    raise over_limit
                parts.append(chunk)
        body = b"".join(parts)
        complete = True
        return body
    except TimeoutError:
        if not idle.expired():
            raise
        raise OciError(stalled, f"the {what} sent nothing for {idle_seconds:g} s after {total} bytes and was "
                                "stopped: send the whole body without pausing") from None
    finally:
        parts.clear()  # an exception's traceback keeps this frame (and its locals) alive for a while
        if not complete and total >= _TRIM_AFTER_BYTES:  # once the request has unwound
            loop.call_soon(return_freed_memory)
