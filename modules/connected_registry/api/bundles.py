"""Offline bundles over the control API (issue 17): a running instance exports to whoever may read what goes in
it, writes its inventory for an operator, and imports a bundle streamed in with the operator's rights. The work
is the instance's `bundles` hook; this module only checks rights and moves the bytes."""

from __future__ import annotations

import base64
import binascii
import json

from aiohttp import web

from connected_registry.api.bodies import read_body
from connected_registry.api.context import ApiContext, context
from connected_registry.auth.permissions import repository_in_scope
from connected_registry.oci.errors import OciError

MAX_EXPORT_REQUEST = 64 << 20  # an export request carries the receiver's inventory: a digest per blob it holds


def _hooks(request: web.Request) -> tuple[ApiContext, object]:
    ctx = context(request)
    if ctx.bundles is None:
        raise OciError("ENDPOINT_UNKNOWN", "this instance offers no bundles")
    return ctx, ctx.bundles


async def export(request: web.Request) -> web.StreamResponse:
    ctx, bundles = _hooks(request)
    body = await read_body(request, MAX_EXPORT_REQUEST, "export request", too_large="BODY_TOO_LARGE",
                           stalled="SIZE_INVALID")
    try:
        document = json.loads(body or b"{}")
        patterns, for_child, have = document.get("repositories"), document.get("for"), document.get("have")
        outbox, platforms = document.get("outbox") is True, document.get("platforms")
    except (ValueError, AttributeError):
        raise OciError("REQUEST_INVALID", "the export request must be a JSON object") from None
    for key, value in (("repositories", patterns), ("platforms", platforms)):
        if value is not None and not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
            raise OciError("REQUEST_INVALID", f"{key} must be a list of strings")
    patterns = bundles.export_patterns(patterns, for_child if isinstance(for_child, str) else None)
    if outbox:  # what waits to go up to the parent: the operator's to carry
        await ctx.access.require_gateway(request, ctx.name, "config_read")
    for repository in ctx.store.list_repositories(None, None) if not outbox else ():
        if repository_in_scope(patterns, repository):
            await ctx.access.require(request, repository, "pull")  # what goes in the bundle, the caller may read
    response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
    await response.prepare(request)
    await bundles.export_tar(patterns, have, response.write, outbox, platforms)
    await response.write_eof()
    return response


async def inventory(request: web.Request) -> web.Response:
    ctx, bundles = _hooks(request)
    await ctx.access.require_instance_reader(request, ctx.name)
    patterns = request.query.getall("repository", None)
    return web.json_response(bundles.inventory(patterns))


async def import_bundle(request: web.Request) -> web.StreamResponse:
    """The body is the bundle as a tar. Refused before anything is visible when it does not verify (the body is
    read to its end first, so the client hears why); once verified, each image applied is a line of the answer."""
    ctx, bundles = _hooks(request)
    await ctx.access.require_gateway(request, ctx.name, "config_write")
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})

    async def line(document: dict) -> None:
        await response.write(json.dumps(document).encode() + b"\n")

    try:
        summary = await bundles.import_stream(
            request.content.read, unsigned=request.query.get("unsigned") == "1",
            repository=request.query.get("repository") or None, trust_key=_trust_key(request),
            started=lambda: response.prepare(request),
            on_image=lambda repository, tag, digest: line({"image": f"{repository}:{tag}", "digest": digest}))
    except OciError as error:
        if response.prepared:
            await line({"error": error.body()})
            return response
        while await request.content.readany():  # the client sends to its end before it reads an answer
            pass
        raise
    await line({"result": summary})
    await response.write_eof()
    return response


async def import_receipt(request: web.Request) -> web.Response:
    """A parent's signed receipt of this instance's outbox bundle: the entries it names are delivered."""
    ctx, bundles = _hooks(request)
    await ctx.access.require_gateway(request, ctx.name, "config_write")
    signed = await read_body(request, 64 << 20, "receipt", too_large="BODY_TOO_LARGE", stalled="SIZE_INVALID")
    return web.json_response(await bundles.import_receipt(signed, _trust_key(request)))


def _trust_key(request: web.Request) -> str | None:
    encoded = request.headers.get("X-Bundle-Trust-Key")
    if not encoded:
        return None
    try:
        return base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise OciError("REQUEST_INVALID", "X-Bundle-Trust-Key must be a base64 PEM public key") from None


def add_routes(app: web.Application, base: str) -> None:
    app.router.add_post(f"{base}/bundles/export", export)
    app.router.add_get(f"{base}/bundles/inventory", inventory)
    app.router.add_post(f"{base}/bundles/import", import_bundle)
    app.router.add_post(f"{base}/bundles/receipt", import_receipt)
