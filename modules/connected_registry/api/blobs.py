"""GET/HEAD/DELETE /v2/<name>/blobs/<digest>: served from disk with sendfile, Range included."""

from __future__ import annotations

from aiohttp import web

from connected_registry.api.context import context, require_write
from connected_registry.oci.digest import parse_digest
from connected_registry.oci.errors import OciError


async def get_blob(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    ctx = context(request)
    parse_digest(digest)
    await ctx.access.require(request, name, "pull")
    size = ctx.store.blob_size(name, digest)
    if size is None:
        raise OciError("BLOB_UNKNOWN", f"blob {digest} is not in repository {name}")
    return web.FileResponse(
        ctx.store.blob_path(digest),
        chunk_size=1 << 20,
        headers={
            "Content-Type": "application/octet-stream",
            "Docker-Content-Digest": digest,
            "Accept-Ranges": "bytes",
            "Cache-Control": "max-age=31536000",
        },
    )


async def delete_blob(request: web.Request, name: str, digest: str) -> web.Response:
    parse_digest(digest)
    await require_write(request, name, "delete")
    await context(request).store.delete_blob(name, digest)
    return web.Response(status=202, headers={"Docker-Content-Digest": digest})
