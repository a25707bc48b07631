"""The only way to the parent (SPEC 3, 7, 11): the OCI API and, on a connected parent, the control API.

Authentication follows the parent's challenge (parent_auth.py: Bearer from the realm, or Basic); the control
API takes Basic. Every failure is one of the ParentError kinds of parent_errors.py, named here too. Which of the
parent's endpoints a request goes to is endpoints.py's choice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urljoin

import aiohttp

from connected_registry import __version__
from connected_registry.sync.bandwidth import LinkBudget, budgeted_body
from connected_registry.sync.endpoints import ParentEndpoints
from connected_registry.sync.parent_auth import ParentAuth
from connected_registry.sync.parent_errors import (ParentError, ParentProtocolError, ParentRefused, ParentUnauthorized,
                                                   ParentUnreachable)

log = logging.getLogger("connected_registry.parent")

MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])

# What a broken link raises once a response's body is streaming (request() itself turns these into ParentError).
LINK_ERRORS = (aiohttp.ClientError, TimeoutError)


@dataclass
class ParentManifest:
    body: bytes
    media_type: str
    digest: str | None  # as the parent named it (Docker-Content-Digest)


class ControlAnswer(NamedTuple):
    """The parent's answer to a control API call: its status and its JSON document ({} when it sent none)."""

    status: int
    document: dict

    @property
    def error_code(self) -> str:
        """The code of the first error of an error body (`{"errors": [{"code", "message"}]}`); "" without one."""
        return str(self._first_error().get("code") or "")

    def error_message(self, default: str) -> str:
        message = self._first_error().get("message")
        return default if message is None else str(message)

    def _first_error(self) -> dict:
        errors = self.document.get("errors")
        first = errors[0] if isinstance(errors, list) and errors else {}
        return first if isinstance(first, dict) else {}


class ParentClient:
    def __init__(self, endpoint: str, token_name: str | None, password: str | None, *, alternates: list[str] = (),
                 failback_after: float = 300.0, connect_timeout: float = 3.0, first_byte_timeout: float = 10.0,
                 ssl_context=None, clock: Callable[[], float] = time.time) -> None:
        self.endpoints = ParentEndpoints([endpoint, *alternates], self._probe, clock=clock,
                                         failback_after=failback_after,
                                         on_certificate_error=lambda: self.on_certificate_error())
        self.ssl_context = ssl_context  # None: the system's CAs
        self.on_certificate_error = lambda: None  # inside IoT Edge: read the trust bundle again
        self.auth = ParentAuth(self.endpoints, token_name, password)
        self.connect_timeout, self.first_byte_timeout = connect_timeout, first_byte_timeout
        self.budget = LinkBudget()  # the link's byte budget (sync/bandwidth.py): unlimited until configured
        self._session: aiohttp.ClientSession | None = None

    @property
    def endpoint(self) -> str:
        """The endpoint in use (endpoints.py)."""
        return self.endpoints.current

    def _probe(self, url: str):
        """`GET /v2/` at an endpoint, which endpoints.py sends to learn whether it answers at all: connectTimeout."""
        return self.session.get(url, timeout=aiohttp.ClientTimeout(total=self.connect_timeout))

    def timeout(self, read: float | None = None) -> aiohttp.ClientTimeout:
        """Given to every request, so new timeouts (a twin update) apply to the next one, not only a new session."""
        return aiohttp.ClientTimeout(total=None, connect=self.connect_timeout,
                                     sock_read=read or self.first_byte_timeout)

    def set_timeouts(self, connect: float, first_byte: float) -> None:
        self.connect_timeout, self.first_byte_timeout = connect, first_byte

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout(),
                headers={"User-Agent": f"connected-registry/{__version__}"},
                trust_env=True,  # HTTPS_PROXY, HTTP_PROXY, NO_PROXY (SPEC 3)
                auto_decompress=False,
                read_bufsize=1 << 21,  # blobs arrive in large reads: fewer wake-ups per MiB (pull-through speed)
                connector=aiohttp.TCPConnector(ssl=self.ssl_context) if self.ssl_context is not None else None,
            )
        return self._session

    def set_ssl_context(self, context) -> None:
        """New trusted CAs (IoT Edge's trust bundle changed): new connections use them; requests in flight finish
        on the old session, which is closed once the longest of them (a long poll) is over."""
        self.ssl_context = context
        old, self._session = self._session, None
        if old is not None and not old.closed:
            asyncio.get_running_loop().call_later(120, lambda: asyncio.ensure_future(old.close()))

    async def close(self) -> None:
        await self.endpoints.close()
        if self._session is not None:
            await self._session.close()

    # --- requests with the parent's auth ---------------------------------------------------------

    async def request(self, method: str, path: str, *, scope: str | None = None, basic: bool = False,
                      headers: dict | None = None, body: Callable[[], object] | None = None,
                      **kwargs) -> aiohttp.ClientResponse:
        """A response the caller must release (use `async with`), after at most one auth retry. `body`, when
        given, makes the request's body anew for each attempt (a stream can be sent only once). `path` may be a
        URL the parent gave (endpoints.py moves it to the endpoint in use)."""
        for attempt in range(2):
            sent = dict(headers or {})
            authorization = self.auth.authorization(scope, basic)
            if authorization:
                sent["Authorization"] = authorization

            def send_to(url: str):
                if body is not None:
                    kwargs["data"] = body()
                return self.session.request(method, url, headers=sent, allow_redirects=False,
                                            **{"timeout": self.timeout(), **kwargs})

            response = await self.endpoints.send(method, path, send_to)
            if response.status != 401 or attempt == 1:
                return response
            challenge = response.headers.get("WWW-Authenticate", "")
            response.release()
            await self.auth.answer_challenge(self.session, self.timeout(), challenge, scope)
        raise AssertionError("unreachable")

    # --- the control API (connected parents) ----------------------------------------------------------

    async def control(self, method: str, path: str, *, body: dict | None = None, params: dict | None = None,
                      headers: dict | None = None, read_timeout: float | None = None) -> ControlAnswer:
        """The status and JSON document of a control API call (Basic auth); ParentUnreachable without an answer."""
        kwargs: dict = {"params": params or {}}
        if body is not None:
            kwargs["json"] = body
        if read_timeout is not None:
            kwargs["timeout"] = self.timeout(read_timeout)
        try:
            async with await self.request(method, f"/acr/connected/v1{path}", basic=True, headers=headers,
                                          **kwargs) as response:
                text = await response.read()
        except TimeoutError:
            raise ParentUnreachable(f"parent {self.endpoint} did not answer {path} in time") from None
        try:
            document = json.loads(text) if text else {}
        except ValueError:
            document = {}
        return ControlAnswer(response.status, document if isinstance(document, dict) else {})

    async def is_connected_parent(self) -> bool:
        """Only an answer decides: a parent that cannot be reached (or fails) now is asked again, not taken for plain."""
        try:
            async with await self.endpoints.send("GET", "/acr/connected/v1/info",
                                                 lambda url: self.session.get(url, timeout=self.timeout())) as response:
                if response.status >= 500:
                    raise ParentUnreachable(f"parent {self.endpoint} answered {response.status}", status=response.status)
                if response.status != 200:
                    return False
                document = await response.json(content_type=None)
        except ValueError:
            return False
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise ParentUnreachable(f"parent {self.endpoint} is unreachable: {error}") from None
        return isinstance(document, dict) and document.get("kind") == "connected-registry"

    # --- the OCI API -----------------------------------------------------------------------------------

    @staticmethod
    def pull_scope(repository: str) -> str:
        return f"repository:{repository}:pull"

    async def get_manifest(self, repository: str, reference: str) -> ParentManifest | None:
        async with await self.request("GET", f"/v2/{repository}/manifests/{reference}",
                                      scope=self.pull_scope(repository), headers={"Accept": MANIFEST_ACCEPT}) as response:
            if response.status == 404:
                return None
            self._raise_for(response, f"manifest {repository}:{reference}")
            body = await response.read()
            self.budget.charge(len(body), "received")
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            return ParentManifest(body, media_type, response.headers.get("Docker-Content-Digest"))

    async def list_tags(self, repository: str) -> list[str] | None:
        """Every tag, following Link; None when the repository is unknown at the parent."""
        return await self._listing(f"/v2/{repository}/tags/list?n=1000", self.pull_scope(repository), "tags",
                                   absent=(404,), what=f"tags of {repository}")

    async def catalog(self) -> list[str] | None:
        """Every repository name, following Link; None when the parent refuses its catalog (401, 403) or has none."""
        return await self._listing("/v2/_catalog?n=1000", "registry:catalog:*", "repositories",
                                   absent=(401, 403, 404), what="its catalog")

    async def _listing(self, path: str, scope: str, key: str, absent: tuple[int, ...], what: str) -> list[str] | None:
        """The names of a paged listing, page after page as Link says; None when the parent answers one of `absent`."""
        names: list[str] = []
        while path:
            async with await self.request("GET", path, scope=scope) as response:
                if response.status in absent:
                    return None
                self._raise_for(response, what)
                document = await response.json(content_type=None)
                link = response.headers.get("Link")
            page = document.get(key) or []
            if not isinstance(page, list):
                raise ParentProtocolError(f"parent {self.endpoint} sent a malformed page of {what}")
            names += [name for name in page if isinstance(name, str)]
            path = next_link(link, self.endpoint)
        return names

    async def referrers(self, repository: str, digest: str) -> list[dict] | None:
        """Descriptors of the manifests whose subject is `digest`; None when the parent has no referrers API."""
        async with await self.request("GET", f"/v2/{repository}/referrers/{digest}",
                                      scope=self.pull_scope(repository)) as response:
            if response.status in (404, 405):
                return None
            self._raise_for(response, f"referrers of {repository}@{digest}")
            document = await response.json(content_type=None)
        manifests = document.get("manifests") if isinstance(document, dict) else None
        return [m for m in manifests if isinstance(m, dict)] if isinstance(manifests, list) else []

    async def open_blob(self, repository: str, digest: str, offset: int = 0) -> aiohttp.ClientResponse:
        """A streaming response for a blob, from `offset` when it is not 0 (206, or 200 when the parent
        ignores Range); redirects (Azure data endpoints) followed without Authorization."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        metered = self.budget.chunk_bytes()  # a small read buffer: the parent sends little ahead of the budget
        reading = {"read_bufsize": metered} if metered else {}
        response = await self.request("GET", f"/v2/{repository}/blobs/{digest}", scope=self.pull_scope(repository),
                                      headers=headers, **reading)
        hops = 0
        while response.status in (301, 302, 303, 307, 308) and hops < 5:
            location = urljoin(str(response.url), response.headers.get("Location", ""))
            response.release()
            try:
                response = await self.session.get(location, headers=headers, allow_redirects=False,
                                                  timeout=self.timeout(), **reading)
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                raise ParentUnreachable(f"blob redirect {location[:80]} is unreachable: {error}") from None
            hops += 1
        if response.status not in (200, 206):
            status = response.status
            response.release()
            error_type = ParentRefused if status in (401, 403, 404) else ParentProtocolError
            raise error_type(f"parent answered {status} for blob {repository}@{digest}", status=status)
        return response

    # --- writing (child to parent) --------------------------------------------------------------------

    @staticmethod
    def push_scope(repository: str) -> str:
        return f"repository:{repository}:pull,push"

    async def has_blob(self, repository: str, digest: str, scope: str | None = None) -> bool:
        """Whether the parent holds the blob in `repository` (asked with the push scope unless `scope` says)."""
        async with await self.request("HEAD", f"/v2/{repository}/blobs/{digest}",
                                      scope=scope or self.push_scope(repository)) as r:
            if r.status == 200:
                return True
            if r.status == 404:
                return False
            self._raise_for(r, f"blob {repository}@{digest}")
            return False

    async def mount_blob(self, repository: str, source: str, digest: str) -> bool:
        scope = f"{self.push_scope(repository)} repository:{source}:pull"
        async with await self.request("POST", f"/v2/{repository}/blobs/uploads/",
                                      params={"mount": digest, "from": source}, scope=scope) as response:
            if response.status == 201:
                return True
            if response.status == 202:  # not mountable: cancel the session the parent opened
                location = response.headers.get("Location")
                if location:
                    async with await self.request("DELETE", urljoin(self.endpoint + "/", location),
                                                  scope=self.push_scope(repository)):
                        pass
                return False
            self._raise_for(response, f"mount of {digest} into {repository}")
            return False

    async def start_upload(self, repository: str) -> str:
        """A new upload session at the parent; returns its absolute location."""
        async with await self.request("POST", f"/v2/{repository}/blobs/uploads/", scope=self.push_scope(repository)
                                      ) as response:
            self._raise_for(response, f"upload to {repository}")
            location = response.headers.get("Location")
        if not location:
            raise ParentProtocolError(f"parent {self.endpoint} opened an upload to {repository} without a Location")
        return urljoin(self.endpoint + "/", location)

    async def upload_offset(self, repository: str, location: str) -> int | None:
        """How many bytes of an upload session the parent holds; None when it no longer has the session or cannot
        say (a `Range` of `0-0` means none or one byte alike: start over)."""
        async with await self.request("GET", location, scope=self.push_scope(repository)) as response:
            if response.status >= 500 or response.status == 401:
                self._raise_for(response, f"upload session {location}")
            match = re.fullmatch(r"\s*(?:bytes=)?0-(\d+)\s*", response.headers.get("Range", ""))
            if response.status not in (200, 204) or not match or int(match.group(1)) == 0:
                return None
            return int(match.group(1)) + 1

    async def finish_upload(self, repository: str, digest: str, location: str, offset: int, size: int,
                            chunks: Callable[[int], AsyncIterator[bytes]]) -> None:
        """Send the blob's bytes from `offset` (`chunks(offset)` reads them from the store) into the session at
        `location`, and close it."""
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size - offset)}
        if 0 < offset < size:
            headers["Content-Range"] = f"{offset}-{size - 1}"
        separator = "&" if "?" in location else "?"
        async with await self.request("PUT", f"{location}{separator}digest={digest}", scope=self.push_scope(repository),
                                      body=lambda: budgeted_body(chunks(offset), self.budget) if offset < size else b"",
                                      headers=headers) as response:
            if response.status >= 300:
                detail = (await response.read())[:500].decode("utf-8", "replace")
                self._raise_for(response, f"blob {digest} into {repository} ({detail})")

    async def cancel_upload(self, repository: str, location: str) -> None:
        """Best effort: a session the parent would otherwise keep until its garbage collection."""
        try:
            async with await self.request("DELETE", location, scope=self.push_scope(repository)):
                pass
        except ParentError:
            pass

    async def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> None:
        self.budget.charge(len(body), "sent")
        async with await self.request("PUT", f"/v2/{repository}/manifests/{reference}", data=body,
                                      scope=self.push_scope(repository),
                                      headers={"Content-Type": media_type}) as response:
            if response.status >= 300:
                detail = (await response.read())[:500].decode("utf-8", "replace")
                self._raise_for(response, f"manifest {repository}:{reference} ({detail})")

    async def delete_manifest(self, repository: str, reference: str) -> None:
        """Idempotent: a reference the parent no longer has counts as deleted."""
        scope = f"repository:{repository}:delete"
        async with await self.request("DELETE", f"/v2/{repository}/manifests/{reference}", scope=scope) as response:
            if response.status == 404:
                return
            if response.status >= 300:
                detail = (await response.read())[:500].decode("utf-8", "replace")
                self._raise_for(response, f"delete of {repository}:{reference} ({detail})")

    def _raise_for(self, response: aiohttp.ClientResponse, what: str) -> None:
        if response.status < 300:
            return
        if response.status == 401 and "insufficient_scope" not in response.headers.get("WWW-Authenticate", ""):
            error_type = ParentUnauthorized
        elif response.status >= 500 or response.status == 429:
            error_type = ParentUnreachable
        else:
            error_type = ParentRefused  # 400, 403, 404, 405, 413...: the parent will not take it
        raise error_type(f"parent {self.endpoint} answered {response.status} for {what}", status=response.status)


def next_link(link: str | None, endpoint: str) -> str | None:
    if not link:
        return None
    match = re.match(r"\s*<([^>]+)>\s*;\s*rel=\"?next\"?", link)
    if not match:
        return None
    target = match.group(1)
    return target if target.startswith("/") else urljoin(endpoint + "/", target)
