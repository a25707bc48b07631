"""GET /v2/<name>/referrers/<digest>[?artifactType=]: an OCI index of the manifests whose subject it is."""

from __future__ import annotations

import json

from aiohttp import web

from connected_registry.api.context import context, require_read
from connected_registry.oci.digest import parse_digest
from connected_registry.oci.manifest import OCI_INDEX


async def list_referrers(request: web.Request, name: str, digest: str) -> web.Response:
    ctx = context(request)
    parse_digest(digest)
    await require_read(request, name, "metadata", "NAME_UNKNOWN")
    artifact_type = request.query.get("artifactType") or None
    descriptors = await ctx.content.referrers(name, digest, artifact_type)
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}).encode()
    # Exactly the index media type: no charset parameter (the conformance suite compares the header).
    return web.Response(body=body, headers={"Content-Type": OCI_INDEX, **headers})
