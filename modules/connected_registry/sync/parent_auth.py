"""The sync token as the parent's challenge asks for it (SPEC 3): Basic, or a Bearer token fetched from the
challenge's realm with the token's Basic credentials and cached per scope until shortly before it expires.
The control API always takes Basic. A realm at one of the parent's endpoints is asked at the endpoint in use
(endpoints.py): a replica that names the first endpoint in its challenge still gets its token while that one is
down."""

from __future__ import annotations

import base64
import re
import time
from urllib.parse import urlencode

import aiohttp

from connected_registry.sync.endpoints import ParentEndpoints
from connected_registry.sync.parent_errors import ParentProtocolError, ParentUnauthorized, ParentUnreachable

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class ParentAuth:
    def __init__(self, endpoints: ParentEndpoints, token_name: str | None, password: str | None) -> None:
        self.endpoints = endpoints
        self.token_name, self.password = token_name, password
        self._tokens: dict[str, tuple[str, float]] = {}  # scope -> (bearer token, expiry)
        self._basic_only = False

    @property
    def endpoint(self) -> str:
        return self.endpoints.current

    def authorization(self, scope: str | None, basic: bool) -> str | None:
        """The Authorization header to send first: Basic when asked (or when the parent takes only Basic), else a
        cached Bearer token for `scope` (none yet: the parent's challenge says where to get one)."""
        return self.basic() if (basic or self._basic_only) else self._cached_bearer(scope)

    def basic(self) -> str | None:
        if not self.token_name:
            return None
        raw = f"{self.token_name}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _cached_bearer(self, scope: str | None) -> str | None:
        cached = self._tokens.get(scope or "")
        if cached and cached[1] > time.monotonic():
            return f"Bearer {cached[0]}"
        return None

    async def answer_challenge(self, session: aiohttp.ClientSession, timeout: aiohttp.ClientTimeout, challenge: str,
                               scope: str | None) -> None:
        """Make the next attempt carry what the parent's WWW-Authenticate asked for."""
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            self._basic_only = True
            return
        if scheme != "bearer":
            raise ParentUnauthorized(f"parent {self.endpoint} asked for unsupported authentication {challenge[:60]!r}")
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.get("realm")
        if not realm:
            raise ParentUnauthorized(f"parent {self.endpoint} sent a Bearer challenge without a realm")
        realm = self.endpoints.url(realm)
        query = [("service", params.get("service", ""))]
        # one scope parameter per scope, as docker sends them (strict token services take only that form)
        query += [("scope", item) for item in (scope or params.get("scope") or "").split() if item]
        body = await self._fetch_token(session, timeout, f"{realm}?{urlencode(query)}", realm)
        token = body.get("token") or body.get("access_token")
        if not token:
            raise ParentProtocolError(f"token service {realm} sent no token")
        lifetime = float(body.get("expires_in") or 60)
        self._tokens[scope or ""] = (token, time.monotonic() + max(lifetime - 30, 10))

    async def _fetch_token(self, session: aiohttp.ClientSession, timeout: aiohttp.ClientTimeout, url: str,
                           realm: str) -> dict:
        headers = {"Authorization": self.basic()} if self.basic() else {}
        try:
            async with session.get(url, headers=headers, timeout=timeout) as response:
                if response.status in (401, 403):
                    raise ParentUnauthorized(f"parent {self.endpoint} refused the sync token {self.token_name!r} "
                                             f"({response.status}): check SyncTokenPassword in "
                                             "ACR_REGISTRY_CONNECTION_STRING", status=response.status)
                if response.status != 200:
                    raise ParentProtocolError(f"token service {realm} answered {response.status}")
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise ParentUnreachable(f"token service {realm} is unreachable: {error}") from None
