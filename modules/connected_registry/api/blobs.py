"""GET/HEAD/DELETE /v2/<name>/blobs/<digest>: served from disk with sendfile, from object storage (streamed or
redirected to a read URL), or as it arrives from a parent.

Range and conditional headers are decided here, not left to aiohttp, so every refusal is an OCI
error and malformed or multi-part ranges are ignored (a full 200), as RFC 9110 allows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from contextlib import aclosing

from aiohttp import web
from multidict import CIMultiDict

from connected_registry.api.context import context, require_read, require_write
from connected_registry.oci.digest import parse_digest
from connected_registry.oci.errors import OciError
from connected_registry.storage import StorageError
from connected_registry.storage.content import ArrivingBlob, RemoteBlob, StoredBlob

log = logging.getLogger("connected_registry.api")

_RANGE = re.compile(r"^bytes=(\d{0,40})-(\d{0,40})$", re.IGNORECASE)  # units are case-insensitive
_DECIDED_HERE = ("If-Match", "If-None-Match", "If-Unmodified-Since", "If-Range", "Range")


def _single_range(request: web.Request, size: int, etag: str) -> str | None:
    """The one byte range to serve, or None for the whole blob; 416 when it cannot be satisfied."""
    raw = request.headers.get("Range")
    if raw is None:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        return None
    match = _RANGE.match(raw.strip())
    if not match or not (match.group(1) or match.group(2)):
        return None  # another unit, several ranges, or garbage: ignored
    first, last = match.group(1), match.group(2)
    if not first:  # the last N bytes
        if int(last) == 0:
            raise _unsatisfiable(size)
        return f"bytes={max(size - int(last), 0)}-{size - 1}"
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise _unsatisfiable(size)
    end = min(int(last), size - 1) if last else size - 1
    return f"bytes={start}-{end}"


def _check_preconditions(request: web.Request, path: str | None, etag: str) -> None:
    """If-Match against the digest ETag, If-Unmodified-Since against the file's time (RFC 9110 13.2.2); a blob in
    object storage is stored once under its digest and never changes, so only If-Match applies to it."""
    if_match = request.headers.get("If-Match")
    if if_match is not None:
        tags = {tag.strip() for tag in if_match.split(",")}
        if "*" not in tags and etag not in tags:
            raise OciError("PRECONDITION_FAILED", f"precondition failed: this blob's ETag is {etag}")
    elif request.if_unmodified_since is not None and path is not None:
        try:
            modified = os.stat(path).st_mtime
        except FileNotFoundError:
            raise OciError("BLOB_UNKNOWN", "the blob is gone") from None
        if int(modified) > request.if_unmodified_since.timestamp():
            raise OciError("PRECONDITION_FAILED", "precondition failed: the blob was stored after If-Unmodified-Since")


def _unsatisfiable(size: int) -> OciError:
    return OciError("RANGE_INVALID", f"the requested range is outside the blob's {size} bytes",
                    headers={"Content-Range": f"bytes */{size}"})


async def get_blob(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    ctx = context(request)
    parse_digest(digest)
    await require_read(request, name, "pull", "BLOB_UNKNOWN")
    # A HEAD neither counts as a use nor starts a transfer: pushes HEAD every layer first.
    if request.method == "GET":
        blob = await ctx.content.open_blob(name, digest)
    else:
        blob = ctx.content.stat_blob(name, digest)
    if blob is None:
        raise OciError("BLOB_UNKNOWN", f"blob {digest} is not in repository {name}")
    etag = f'"{digest}"'
    headers = {
        "Content-Type": "application/octet-stream",
        "Docker-Content-Digest": digest,
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000",
    }
    if isinstance(blob, RemoteBlob):
        return await _serve_remote(request, blob, headers, etag, ctx.instance.blob_redirect)
    if not isinstance(blob, StoredBlob):
        return await _stream_from_parent(request, blob, headers, etag)
    _check_preconditions(request, blob.path, etag)
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers={**headers, "ETag": etag})
    byte_range = _single_range(request, blob.size, etag)
    clean = CIMultiDict((key, value) for key, value in request.headers.items() if key not in _DECIDED_HERE)
    if byte_range:
        clean["Range"] = byte_range
    return _BlobFileResponse(clean, blob.path, chunk_size=1 << 20, headers=headers)


def _bounds(request: web.Request, size: int, etag: str, headers: dict) -> tuple[int, int, int]:
    """[start, end) and the status of what to send: the whole blob, or one range (with its Content-Range)."""
    byte_range = _single_range(request, size, etag)
    if not byte_range:
        return 0, size, 200
    first, last = byte_range.removeprefix("bytes=").split("-")
    headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return int(first), int(last) + 1, 206


async def _serve_remote(request: web.Request, blob: RemoteBlob, headers: dict, etag: str, redirect: bool
                        ) -> web.StreamResponse:
    """A blob in object storage: `blobRedirect` sends the client to a short-lived read URL (ACR's behaviour: the
    bytes go from the storage account to the client), else the bytes stream through here, whole or one range."""
    _check_preconditions(request, None, etag)
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers={**headers, "ETag": etag})
    read_url = blob.reads.read_url(blob.digest) if redirect and request.method == "GET" else None
    if read_url is not None:
        return web.Response(status=307, headers={"Location": read_url, "Docker-Content-Digest": blob.digest})
    start, end, status = _bounds(request, blob.size, etag, headers)
    response = web.StreamResponse(status=status, headers={**headers, "ETag": etag})
    response.content_length = end - start
    await response.prepare(request)
    if request.method == "GET":
        try:
            async with aclosing(blob.reads.chunks(blob.digest, start, end)) as chunks:
                async for chunk in chunks:
                    await response.write(chunk)
        except StorageError as error:  # the headers are out: all a client can be told is a broken transfer
            log.warning("GET %s: cut short, the blob store failed: %s", request.path[:300], error)
            if request.transport is not None:
                request.transport.abort()
            return response
    await response.write_eof()
    return response


async def _stream_from_parent(request: web.Request, reader: ArrivingBlob, headers: dict, etag: str
                              ) -> web.StreamResponse:
    """A blob still arriving from the parent (SPEC 8), whole or one range, as its bytes land. If the transfer
    fails or the digest turns out wrong, the connection is cut short of Content-Length: a broken transfer."""
    try:
        start, end, status = _bounds(request, reader.size, etag, headers)
        response = web.StreamResponse(status=status, headers={**headers, "ETag": etag})
        response.content_length = end - start
        writer = await response.prepare(request)
        writer.send_headers()
        loop = asyncio.get_running_loop()
        async with aclosing(reader.windows(start, end)) as windows:
            async for offset, length in windows:
                if request.transport is None:
                    raise ConnectionResetError("the client went away")
                await writer.drain()
                await loop.sendfile(request.transport, reader.file, offset, length)
        if reader.failure is not None:
            log.warning("GET %s: cut short, the transfer from the parent failed: %s", request.path[:300], reader.failure)
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        return response
    finally:
        reader.close()


class _BlobFileResponse(web.FileResponse):
    """aiohttp's sendfile response, prepared against the request headers decided above."""

    def __init__(self, request_headers: CIMultiDict, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._request_headers = request_headers

    async def prepare(self, request):
        if self.prepared:
            return await super().prepare(request)
        return await super().prepare(request.clone(headers=self._request_headers))


async def delete_blob(request: web.Request, name: str, digest: str) -> web.Response:
    parse_digest(digest)
    await require_write(request, name, "delete")
    await context(request).store.delete_blob(name, digest)
    return web.Response(status=202, headers={"Docker-Content-Digest": digest})
