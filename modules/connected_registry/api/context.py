"""What every handler needs from the instance, and the small helpers they share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from connected_registry.audit import AuditTrail
from connected_registry.auth import Access, Caller
from connected_registry.auth.access import request_origin
from connected_registry.auth.permissions import repository_in_scope
from connected_registry.instance import Instance
from connected_registry.oci.errors import OciError
from connected_registry.storage import RegistryStore, StorageError
from connected_registry.storage.content import Content, LocalContent


async def _no_parent() -> str | None:
    return None


class InstanceView(Protocol):
    """What the API reads of the instance's live settings, when it needs them (the instance core is one)."""

    name: str
    mode: str  # ReadWrite | ReadOnly
    is_root: bool
    repositories: tuple[str, ...]  # what a child syncs; a ReadWrite child takes pushes only there
    blob_redirect: bool  # blob GETs answer 307 to the blob store's read URL where it can sign one


class BundleHooks(Protocol):
    """The instance's offline bundles (bundles/service.py), which the control API serves without importing them."""

    def public_key_pem(self) -> str: ...
    def export_patterns(self, patterns: list[str] | None, for_child: str | None) -> list[str]: ...
    async def export_tar(self, patterns: list[str], have: dict | None, write: Callable, outbox: bool = False,
                         platforms: list[str] | None = None) -> dict: ...
    def inventory(self, patterns: list[str] | None = None) -> dict: ...
    async def import_stream(self, read: Callable, **options) -> dict: ...
    async def import_receipt(self, signed: bytes, trust_key: str | None = None) -> dict: ...


@dataclass
class ApiContext:
    """What the API needs of the instance. The settings are read live from `instance`, never copied."""

    store: RegistryStore
    access: Access
    instance: InstanceView = field(default_factory=Instance)  # the embedded default: an open root
    login_server: str | None = None  # ACR_REGISTRY_LOGIN_SERVER: requests to other hosts are refused
    # What the read routes serve: the store's content (given `store` alone), or on an instance with a parent the
    # pull-through layer around it, which fills misses (SPEC 8).
    content: Content = None  # type: ignore[assignment]  # None: LocalContent(store), in __post_init__
    audit: AuditTrail | None = None  # what api/audit.py records requests in (logging.auditLogStatus)
    # Hooks into the rest of the instance, set by the runtime.
    status_document: Callable[[], dict] = field(default=lambda: {})
    hierarchy: Callable[[], dict] = field(default=lambda: {})
    on_sync_now: Callable[[], str] = field(default=lambda: "")
    on_resync: Callable[[], Awaitable[str | None]] = field(default=_no_parent)  # None: a root, nothing to resync
    on_children_changed: Callable[[], None] = field(default=lambda: None)
    on_storage_error: Callable[[StorageError], None] = field(default=lambda error: None)
    on_gc: Callable[[], str] = field(default=lambda: "")
    bundles: BundleHooks | None = None  # offline bundles (issue 17); None: not offered

    def __post_init__(self) -> None:
        if self.content is None:
            self.content = LocalContent(self.store)

    @property
    def name(self) -> str:
        return self.instance.name

    @property
    def mode(self) -> str:
        return self.instance.mode

    @property
    def is_root(self) -> bool:
        return self.instance.is_root

    @property
    def repositories(self) -> tuple[str, ...]:
        return self.instance.repositories


CONTEXT = web.AppKey("context", ApiContext)


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


def external_url(request: web.Request, path: str) -> str:
    """An absolute URL for the client's view of this server (the API proxy's, when behind it)."""
    scheme, host = request_origin(request)
    return f"{scheme}://{host}{path}"


def hidden(ctx: ApiContext, repository: str) -> bool:
    """A repository that left a ReadOnly child's scope is hidden at once (SPEC 7.2); a ReadWrite child keeps it."""
    return ctx.mode == "ReadOnly" and not ctx.is_root and not repository_in_scope(list(ctx.repositories), repository)


async def require_read(request: web.Request, repository: str, operation: str, unknown_code: str) -> Caller:
    """The token decides; then a hidden repository answers as if it did not exist."""
    ctx = context(request)
    caller = await ctx.access.require(request, repository, operation)
    if hidden(ctx, repository):
        raise OciError(unknown_code, f"repository {repository} is not synchronized by this registry")
    return caller


async def require_write(request: web.Request, repository: str, operation: str) -> Caller:
    """ReadOnly refuses writes before any scope check; a ReadWrite child only takes its own
    repositories (SPEC 5); then the token decides."""
    ctx = context(request)
    if ctx.mode == "ReadOnly":
        if operation == "delete":
            raise OciError("UNSUPPORTED", "This operation is not allowed on this registry.")
        raise OciError("DENIED", "This operation is not allowed on this registry.")
    if not ctx.is_root and not repository_in_scope(list(ctx.repositories), repository):
        raise OciError("DENIED", f"Repository {repository} is not synchronized by this registry.")
    return await ctx.access.require(request, repository, operation)


def query_int(request: web.Request, key: str) -> int | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise OciError("PAGINATION_NUMBER_INVALID", f"{key} must be a non-negative integer, got {raw[:40]!r}")
    return int(raw)
