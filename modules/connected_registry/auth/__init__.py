"""Who may do what. The registry core asks `Access.require(request, repository, action)`."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web


class Access(Protocol):
    async def require(self, request: web.Request, repository: str | None, action: str) -> None:
        """Raise an `OciError` (UNAUTHORIZED or DENIED) unless the caller may do `action` on `repository`.

        `action` is a Docker scope action: `pull`, `push`, `delete`; `repository` None means the catalog.
        """


class AnonymousAccess:
    """Everyone may pull and push: the embedded default for trying the registry out on loopback."""

    async def require(self, request: web.Request, repository: str | None, action: str) -> None:
        return None
