"""GET/HEAD/PUT/DELETE /v2/<name>/manifests/<reference> (tag or digest); exact bytes kept and served."""

from __future__ import annotations

from aiohttp import web

from connected_registry.api.bodies import read_body
from connected_registry.api.context import context, require_read, external_url, require_write
from connected_registry.oci.digest import is_digest, parse_digest
from connected_registry.oci.errors import OciError
from connected_registry.oci.manifest import MAX_MANIFEST_BYTES
from connected_registry.oci.names import is_tag


def _check_reference(reference: str, code: str) -> None:
    if is_digest(reference):
        return
    if ":" in reference:
        parse_digest(reference)  # says what is wrong with the digest
    if not is_tag(reference):
        raise OciError(
            code,
            "invalid reference: a tag (up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-') or a digest",
            detail={"reference": reference[:200]},
        )


async def get_manifest(request: web.Request, name: str, reference: str) -> web.Response:
    ctx = context(request)
    _check_reference(reference, "MANIFEST_UNKNOWN")
    await require_read(request, name, "pull", "MANIFEST_UNKNOWN")
    record = await ctx.content.get_manifest(name, reference)
    if record is None:
        raise OciError("MANIFEST_UNKNOWN", f"manifest {reference} is not in repository {name}")
    headers = {
        "Content-Type": record.media_type,
        "Docker-Content-Digest": record.digest,
        "ETag": f'"{record.digest}"',
    }
    if f'"{record.digest}"' in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=record.body, headers=headers)


async def put_manifest(request: web.Request, name: str, reference: str) -> web.Response:
    _check_reference(reference, "MANIFEST_INVALID")
    await require_write(request, name, "push")
    body = await read_body(request, MAX_MANIFEST_BYTES, "manifest", too_large="MANIFEST_TOO_LARGE",
                           stalled="MANIFEST_INVALID")
    result = await context(request).store.put_manifest(name, reference, body, request.headers.get("Content-Type"))
    headers = {
        "Location": external_url(request, f"/v2/{name}/manifests/{result.digest}"),
        "Docker-Content-Digest": result.digest,
        "Content-Length": "0",
    }
    if result.subject:
        headers["OCI-Subject"] = result.subject
    return web.Response(status=201, headers=headers)


async def delete_manifest(request: web.Request, name: str, reference: str) -> web.Response:
    _check_reference(reference, "MANIFEST_UNKNOWN")
    await require_write(request, name, "delete")
    await context(request).store.delete_manifest(name, reference)
    return web.Response(status=202)
