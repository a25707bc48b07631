"""Blob uploads: POST (start, monolithic, mount), PATCH (chunks), PUT (finish), GET (status), DELETE."""

from __future__ import annotations

import re

from aiohttp import web

from connected_registry.api.context import context, external_url, require_write
from connected_registry.oci.digest import parse_digest
from connected_registry.oci.errors import OciError
from connected_registry.oci.names import validate_name
from connected_registry.storage.blobstore import UploadSession
from connected_registry.storage.uploads import upload_range_error

_UPLOAD_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d{1,19})-(\d{1,19})(?:/(?:\d{1,19}|\*))?$")


def _session_headers(request: web.Request, name: str, session: UploadSession) -> dict[str, str]:
    return {
        "Location": external_url(request, f"/v2/{name}/blobs/uploads/{session.id}"),
        "Range": f"0-{max(session.offset - 1, 0)}",
        "Docker-Upload-UUID": session.id,
        "Content-Length": "0",
    }


def _created(request: web.Request, name: str, digest: str) -> web.Response:
    return web.Response(
        status=201,
        headers={
            "Location": external_url(request, f"/v2/{name}/blobs/{digest}"),
            "Docker-Content-Digest": digest,
            "Content-Length": "0",
        },
    )


def _content_length(request: web.Request) -> int | None:
    raw = request.headers.get("Content-Length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise OciError("SIZE_INVALID", "Content-Length must be a non-negative integer")
    return int(raw)


def _check_received(request: web.Request, received: int) -> None:
    expected = _content_length(request)
    if expected is not None and received != expected:
        raise OciError(
            "SIZE_INVALID",
            f"received {received} bytes but Content-Length said {expected}: check the upload status and resume",
        )


async def start_upload(request: web.Request, name: str) -> web.Response:
    caller = await require_write(request, name, "push")
    store = context(request).store
    mount, source = request.query.get("mount"), request.query.get("from")
    if mount is not None:
        parse_digest(mount)
        if source:
            validate_name(source)
        # Without `from` (OCI 1.1), any repository here that holds it. Only from a repository the caller may read;
        # otherwise no hint that the blob exists there.
        for candidate in [source] if source else store.repositories_with_blob(mount):
            if caller.can(candidate, "pull") and await store.mount_blob(name, candidate, mount):
                return _created(request, name, mount)
        # Not mountable: fall through to an ordinary upload session, as the spec asks.
    digest = request.query.get("digest")
    if digest is not None:
        parse_digest(digest)
        session = await store.uploads.create(name, persistent=False)
        try:
            _check_received(request, await store.uploads.append(session, request.content, None))
            await store.uploads.complete(session, _EMPTY, digest, store.origin)
        except BaseException:  # nobody can resume this session: leave nothing behind (a full disk needs the room)
            await store.uploads.cancel(session)
            raise
        return _created(request, name, digest)
    session = await store.uploads.create(name, owner=caller.name or "anonymous")  # counts against the caps
    return web.Response(status=202, headers=_session_headers(request, name, session))


async def _session(request: web.Request, name: str, upload_id: str) -> UploadSession:
    """As it stands in storage now: with a shared blob store, another replica may have started or continued it."""
    if not _UPLOAD_ID.match(upload_id):
        raise OciError("BLOB_UPLOAD_UNKNOWN", f"upload {upload_id[:80]!r} is unknown: start a new upload with POST")
    return await context(request).store.uploads.find(name, upload_id)


def _range_start(request: web.Request, session: UploadSession) -> int | None:
    raw = request.headers.get("Content-Range")
    if raw is None:
        return None
    match = _CONTENT_RANGE.match(raw.strip())
    if not match:
        raise upload_range_error(session, f"Content-Range must be <start>-<end>, got {raw[:60]!r}")
    start, end = int(match.group(1)), int(match.group(2))
    length = _content_length(request)
    if end < start or (length is not None and length != end - start + 1):
        raise upload_range_error(session, f"Content-Range {raw[:60]} does not match Content-Length {length}")
    return start


async def upload_status(request: web.Request, name: str, upload_id: str) -> web.Response:
    await require_write(request, name, "push")
    session = await _session(request, name, upload_id)
    return web.Response(status=204, headers=_session_headers(request, name, session))


async def patch_upload(request: web.Request, name: str, upload_id: str) -> web.Response:
    await require_write(request, name, "push")
    session = await _session(request, name, upload_id)
    start = _range_start(request, session)
    received = await context(request).store.uploads.append(session, request.content, start)
    _check_received(request, received)
    return web.Response(status=202, headers=_session_headers(request, name, session))


async def finish_upload(request: web.Request, name: str, upload_id: str) -> web.Response:
    await require_write(request, name, "push")
    session = await _session(request, name, upload_id)
    digest = request.query.get("digest")
    if not digest:
        raise OciError("DIGEST_INVALID", "PUT must name the blob's digest: ?digest=sha256:<hex>")
    parse_digest(digest)
    start = _range_start(request, session)
    store = context(request).store
    if request.body_exists:
        _check_received(request, await store.uploads.append(session, request.content, start))
    await store.uploads.complete(session, _EMPTY, digest, store.origin)
    return _created(request, name, digest)


async def cancel_upload(request: web.Request, name: str, upload_id: str) -> web.Response:
    await require_write(request, name, "push")
    session = await _session(request, name, upload_id)
    await context(request).store.uploads.cancel(session)
    return web.Response(status=204)


class _EmptyStream:
    async def readany(self) -> bytes:
        return b""


_EMPTY = _EmptyStream()
