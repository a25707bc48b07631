"""Who may do what: tokens and scope maps (SPEC 10). The API asks `Access.require(request, repository, operation)`."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from connected_registry.auth.access import OPEN_CALLER, Caller, OpenAccess, TokenAccess


class Access(Protocol):
    async def require(self, request: web.Request, repository: str | None, operation: str) -> Caller:
        """The caller, if they may do `operation` on `repository`; otherwise an `OciError`
        (401 UNAUTHORIZED with a challenge, 403 DENIED, 429 TOOMANYREQUESTS).

        Operations: `base` (GET /v2/), `pull`, `metadata`, `push`, `delete`, `catalog` (repository None).
        """

    def client_address(self, request: web.Request) -> str | None:
        """The client's address (behind `trustedProxies`, the one X-Forwarded-For names): for the audit records."""


# The embedded default's name, kept for the registry core's callers and tests.
AnonymousAccess = OpenAccess

__all__ = ["OPEN_CALLER", "Access", "AnonymousAccess", "Caller", "OpenAccess", "TokenAccess"]
