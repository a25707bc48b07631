"""Which address of the parent a request goes to (issue 16): `parent.endpoint` first, then `parent.alternateEndpoints`
(geo-replicas of a cloud registry, the replicas of a scaled-out parent: the same registry at other addresses).

The endpoint in use is kept until it fails: it refuses the connection, its TLS fails, it does not connect in
connectTimeout, it answers 5xx, or it does not answer a probe (`GET /v2/`) within connectTimeout. A request to an
endpoint not heard from for half a second (at start, after a switch, after a quiet spell, or while the request
itself waits) has that probe sent beside it, so a listener that accepts and never answers costs half a second and
connectTimeout, not the first-byte timeout of a request that may rightly wait (for the parent's own parent, for
events). Probes are one at a time and only after quiet, so a busy link carries none and an idle one about one per
long poll of the feed. Once the endpoint in use fails, the next one is used: requests still waiting at the failed
one are given up, and those that may be sent twice (nothing reached the parent, or a GET or HEAD) go to the next
one at once. Away from the first endpoint, the first is probed
again every failbackInterval, beside the requests, and used again once it answers.

What this child agreed with the parent (its activation, the feed's cursor, upload sessions, Range offsets) belongs to
the parent, not to an address, so it carries over; a URL the parent gave at one endpoint (an upload's Location, a
token realm, a next page) is used at the endpoint in use. With one endpoint there is nothing to choose: requests go
to it as they always did, without probes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from connected_registry.sync.parent_errors import ParentUnreachable
from connected_registry.timefmt import utc_timestamp
from connected_registry.waits import until_set

log = logging.getLogger("connected_registry.parent")

DEFAULT_PORTS = {"http": 80, "https": 443}
SENT_TWICE_SAFELY = ("GET", "HEAD")
QUIET_SECONDS = 0.5  # an endpoint not heard from this long is probed beside a request
FAILURES = (aiohttp.ClientError, TimeoutError, OSError)
NOTHING_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)  # refused, TLS, DNS, connect timeout


class EndpointFailed(Exception):
    """A request was given up: its endpoint failed while it waited (`failure` says how)."""

    def __init__(self, failure: ParentUnreachable) -> None:
        self.failure = failure
        super().__init__(str(failure))


@dataclass(frozen=True)
class EndpointSwitch:
    """One change of the endpoint in use, as the status document shows the last one."""

    source: str
    target: str
    reason: str
    time: str

    def document(self) -> dict:
        return {"from": self.source, "to": self.target, "reason": self.reason, "time": self.time}


def link_failure(endpoint: str, error: BaseException) -> ParentUnreachable:
    """What a request that got no answer from `endpoint` raises, saying why."""
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return ParentUnreachable(f"parent {endpoint} presented a certificate this instance does not trust "
                                 f"({error.certificate_error}); inside IoT Edge its chain must end at the root CA of "
                                 "the hierarchy (the edge CA's trust bundle is trusted)")
    return ParentUnreachable(f"parent {endpoint} is unreachable: {str(error) or type(error).__name__}",
                             timed_out=isinstance(error, TimeoutError))


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(parts.scheme.lower())


class ParentEndpoints:
    """The parent's endpoints and the one in use. `probe(url)` sends `GET /v2/` with a timeout of connectTimeout in
    all, to learn whether an endpoint answers at all; `on_switch` hears of every switch."""

    def __init__(self, endpoints: list[str], probe: Callable[[str], Awaitable[aiohttp.ClientResponse]], *,
                 clock: Callable[[], float] = time.time, failback_after: float = 300.0,
                 on_certificate_error: Callable[[], None] = lambda: None) -> None:
        self.endpoints = [endpoint.rstrip("/") for endpoint in endpoints]
        self.current = self.endpoints[0]
        self.probe, self.clock, self.failback_after = probe, clock, failback_after
        self.on_certificate_error = on_certificate_error  # inside IoT Edge: read the trust bundle again
        self.last_switch: EndpointSwitch | None = None
        self.on_switch: Callable[[EndpointSwitch], None] = lambda switch: None
        self._heard_at = float("-inf")  # when the endpoint in use last answered (time.monotonic)
        self._failed: dict[str, asyncio.Event] = {}  # set when the endpoint fails: requests waiting there give up
        self._left_first_at: float | None = None  # when the first endpoint last failed (its failback is due after)
        self._probes: dict[str, asyncio.Task] = {}
        self._background: set[asyncio.Task] = set()
        self._failback: asyncio.Task | None = None

    @property
    def first(self) -> str:
        """The parent's own name among its endpoints: what an upload session here is remembered under."""
        return self.endpoints[0]

    def configure(self, alternates: list[str], failback_after: float) -> None:
        """New alternates (a twin update) apply to the next request; one no longer listed is left at once."""
        self.endpoints = [self.first, *(endpoint.rstrip("/") for endpoint in alternates)]
        self.failback_after = failback_after
        if self.current not in self.endpoints:
            self._switch(self.first, "parent.alternateEndpoints no longer lists it")

    def url(self, path: str) -> str:
        """`path` at the endpoint in use; an absolute URL at one of the parent's endpoints moves there too."""
        if not path.startswith(("http://", "https://")):
            return f"{self.current}{path}"
        if _origin(path) not in {_origin(endpoint) for endpoint in self.endpoints}:
            return path  # elsewhere: a token service, a storage redirect
        parts = urlsplit(path)
        return self.current + urlunsplit(("", "", parts.path, parts.query, parts.fragment))

    async def send(self, method: str, path: str,
                   send_to: Callable[[str], Awaitable[aiohttp.ClientResponse]]) -> aiohttp.ClientResponse:
        """The parent's answer to one request (`send_to(url)` sends it), from the endpoint in use or, when that fails
        and the request may be sent again, from the next; a failed request that may not leaves the switch to the next
        request. Below 500 any answer counts: the caller reads refusals as it always did."""
        repeatable, failure = method in SENT_TWICE_SAFELY, None
        for attempt in range(1, len(self.endpoints) + 1):
            endpoint = self.current
            self._fail_back_when_due()
            try:
                response = await self._answer(endpoint, send_to(self.url(path)))
            except FAILURES as error:
                failure = self._link_failure(endpoint, error)
                if isinstance(error, NOTHING_SENT):
                    self.failed(endpoint, str(failure))
                elif not repeatable:
                    self._heard_at = float("-inf")  # sent, no answer: the next request has a probe beside it
                    break
                elif len(self.endpoints) > 1:
                    await self._probe_and_judge(endpoint)
                continue
            except EndpointFailed as given_up:
                failure = given_up.failure
                if not repeatable:
                    break
                continue
            if response.status < 500:
                return response
            self.failed(endpoint, f"parent {endpoint} answered {response.status} to {method} {urlsplit(path).path}")
            if not repeatable or attempt == len(self.endpoints):
                return response
            response.release()
        raise failure

    def failed(self, endpoint: str, reason: str) -> None:
        """`endpoint` failed: the next endpoint is used (unless another request has switched already)."""
        if endpoint != self.current or len(self.endpoints) == 1:
            return
        if endpoint == self.first:
            self._left_first_at = self.clock()
        self._switch(self.endpoints[(self.endpoints.index(endpoint) + 1) % len(self.endpoints)], reason)
        event = self._failed.pop(endpoint, None)
        if event is not None:
            event.set()

    async def close(self) -> None:
        tasks = [*self._background, *self._probes.values(), *([self._failback] if self._failback else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def document(self) -> dict:
        """The status document's view: the endpoint in use and the last switch, with its reason."""
        return {"endpointInUse": self.current,
                "lastEndpointSwitch": self.last_switch.document() if self.last_switch else None}

    # --- judging an endpoint -----------------------------------------------------------------------------------

    async def _answer(self, endpoint: str, sending: Awaitable[aiohttp.ClientResponse]) -> aiohttp.ClientResponse:
        """The endpoint's answer. Not heard from for QUIET_SECONDS (when the request starts, or while it waits), the
        endpoint is probed beside it; once it failed (that probe, another request), the request is given up:
        EndpointFailed."""
        if len(self.endpoints) == 1:
            return await sending
        waiting = asyncio.ensure_future(until_set(sending, self._failed.setdefault(endpoint, asyncio.Event())))
        try:
            self._probe_if_quiet(endpoint)
            if not (await asyncio.wait({waiting}, timeout=QUIET_SECONDS))[0]:
                self._probe_if_quiet(endpoint)
            finished = await waiting
        except asyncio.CancelledError:
            waiting.cancel()
            raise
        if finished is None:
            reason = self.last_switch.reason if self.last_switch else "it failed"
            raise EndpointFailed(ParentUnreachable(f"parent {endpoint} was given up while this request waited: "
                                                   f"{reason}"))
        response = finished.result()
        if endpoint == self.current and response.status < 500:
            self._heard_at = time.monotonic()
        return response

    def _probe_if_quiet(self, endpoint: str) -> None:
        """The endpoint in use, not heard from for QUIET_SECONDS, is probed beside the requests (once at a time)."""
        if (endpoint == self.current and endpoint not in self._probes
                and time.monotonic() - self._heard_at >= QUIET_SECONDS):
            self._in_background(self._probe_and_judge(endpoint))

    async def _probe_and_judge(self, endpoint: str) -> None:
        """Probe `endpoint`: heard from when it answers, failed when it does not."""
        reason = await self._probe_once(endpoint)
        if reason is not None:
            self.failed(endpoint, reason)
        elif endpoint == self.current:
            self._heard_at = time.monotonic()

    async def _probe_once(self, endpoint: str) -> str | None:
        """Why `endpoint` does not answer (None when it does); requests waiting on one endpoint share its probe."""
        task = self._probes.get(endpoint)
        if task is None:
            task = self._probes[endpoint] = asyncio.ensure_future(self._probe(endpoint))
            task.add_done_callback(lambda done: self._probes.pop(endpoint, None))
        return await asyncio.shield(task)

    async def _probe(self, endpoint: str) -> str | None:
        try:
            async with await self.probe(f"{endpoint}/v2/") as response:
                status = response.status
        except FAILURES as error:
            if isinstance(error, TimeoutError):
                return f"parent {endpoint} did not answer within connectTimeout"
            return str(self._link_failure(endpoint, error))
        return f"parent {endpoint} answered {status}" if status >= 500 else None

    def _link_failure(self, endpoint: str, error: BaseException) -> ParentUnreachable:
        if isinstance(error, aiohttp.ClientConnectorCertificateError):
            self.on_certificate_error()
        return link_failure(endpoint, error)

    # --- switching ---------------------------------------------------------------------------------------------

    def _fail_back_when_due(self) -> None:
        """Away from the first endpoint for failbackInterval: probe it again beside the requests."""
        if (self.current == self.first or self._left_first_at is None or self._failback is not None
                or self.clock() - self._left_first_at < self.failback_after):
            return
        self._failback = asyncio.ensure_future(self._fail_back())

    async def _fail_back(self) -> None:
        try:
            reason = await self._probe_once(self.first)
            if reason is None and self.current != self.first:
                self._switch(self.first, f"parent {self.first} answers again")
                self._heard_at = time.monotonic()
            elif reason is not None:
                self._left_first_at = self.clock()  # probed again after another interval
        finally:
            self._failback = None

    def _switch(self, target: str, reason: str) -> None:
        switch = EndpointSwitch(self.current, target, reason, utc_timestamp(self.clock()))
        self.current, self._heard_at, self.last_switch = target, float("-inf"), switch
        if target == self.first:
            self._left_first_at = None
        log.warning("the parent's endpoint in use is now %s (was %s): %s", target, switch.source, reason)
        self.on_switch(switch)

    def _in_background(self, work) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
