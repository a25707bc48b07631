"""GET /v2/<name>/tags/list and /v2/_catalog, with `n`/`last` pagination and `Link` headers."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from connected_registry.api.context import context, hidden, require_read, query_int
from connected_registry.oci.errors import OciError

MAX_PAGE = 10_000  # a larger `n` is answered with this many and a Link to the rest


def _page(request: web.Request, path: str, fetch, key: str, body: dict) -> web.Response:
    requested = query_int(request, "n")
    last = request.query.get("last") or None
    if requested == 0:
        return web.json_response({**body, key: []})
    limit = min(requested, MAX_PAGE) if requested is not None else MAX_PAGE
    items = fetch(limit + 1, last)
    headers = {}
    if len(items) > limit:
        items = items[:limit]
        query = urlencode({"n": limit, "last": items[-1]})
        headers["Link"] = f'<{path}?{query}>; rel="next"'
    return web.json_response({**body, key: items}, headers=headers)


async def list_tags(request: web.Request, name: str) -> web.Response:
    ctx = context(request)
    await require_read(request, name, "metadata", "NAME_UNKNOWN")
    if not ctx.content.repository_exists(name):
        raise OciError("NAME_UNKNOWN", f"repository {name} is not known to this registry")
    return _page(
        request,
        f"/v2/{name}/tags/list",
        lambda limit, last: ctx.content.list_tags(name, limit, last),
        "tags",
        {"name": name},
    )


async def catalog(request: web.Request) -> web.Response:
    ctx = context(request)
    caller = await ctx.access.require(request, None, "catalog")

    def readable(limit: int, last: str | None) -> list[str]:
        """Only what the caller may read, paged over the filtered list."""
        found: list[str] = []
        while len(found) < limit:
            batch = ctx.content.list_repositories(max(limit, 100), last)
            # The catalog scope lists what the token's metadata/read allows, whatever else the JWT carries.
            found += [name for name in batch
                      if caller.permissions.allows_operation(name, "metadata") and not hidden(ctx, name)]
            if len(batch) < max(limit, 100):
                break
            last = batch[-1]
        return found[:limit]

    return _page(request, "/v2/_catalog", readable, "repositories", {})
