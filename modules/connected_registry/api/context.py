"""What every handler needs from the instance, and the small helpers they share."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from connected_registry.auth import Access
from connected_registry.oci.errors import OciError
from connected_registry.storage import RegistryStore


@dataclass
class ApiContext:
    store: RegistryStore
    access: Access
    mode: str = "ReadWrite"  # ReadWrite | ReadOnly
    is_root: bool = True


CONTEXT = web.AppKey("context", ApiContext)


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


def external_url(request: web.Request, path: str) -> str:
    """An absolute URL for the client's view of this server (the API proxy's, when behind it)."""
    scheme = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
    host = request.headers.get("X-Forwarded-Host", request.host).split(",")[0].strip()
    return f"{scheme}://{host}{path}"


async def require_write(request: web.Request, repository: str, action: str) -> None:
    """ReadOnly refuses writes before any scope check (SPEC 5), then the token decides."""
    ctx = context(request)
    if ctx.mode == "ReadOnly":
        if action == "delete":
            raise OciError("UNSUPPORTED", "This operation is not allowed on this registry.")
        raise OciError("DENIED", "This operation is not allowed on this registry.")
    await ctx.access.require(request, repository, action)


def query_int(request: web.Request, key: str) -> int | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 12:
        raise OciError("PAGINATION_NUMBER_INVALID", f"{key} must be a non-negative integer, got {raw[:40]!r}")
    return int(raw)
