"""Every request gets an id (the client's X-Request-Id when it is sane, else a new one), returned in the response
and carried by every log line written while it is handled; and it is counted for /metrics by route and status.
Counting is plain dictionaries: prometheus_client is loaded only when someone scrapes."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from connected_registry.api.audit import audit_exchange
from connected_registry.logs import current_request_id

log = logging.getLogger("connected_registry.api")

REQUEST_ID_HEADER = "X-Request-Id"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:@+=/-]{1,128}$")  # nothing that could forge a log line
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CLIENT_CLOSED_REQUEST = 499  # the status a request is counted with when its client went away before the answer


@dataclass
class RequestStats:
    """What the listener saw since start: requests by (route, method, status), time per route, bytes each way."""

    requests: dict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    count: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    bytes_in: int = 0
    bytes_out: int = 0

    def record(self, route: str, method: str, status: int, seconds: float, bytes_in: int, bytes_out: int) -> None:
        self.requests[(route, method, str(status))] += 1
        self.seconds[route] += seconds
        self.count[route] += 1
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out


REQUEST_STATS = web.AppKey("request_stats", RequestStats)
# Typed request keys where aiohttp has them (3.13+), plain names before.
ROUTE = web.RequestKey("route", str) if hasattr(web, "RequestKey") else "route"
REQUEST_ID = web.RequestKey("request_id", str) if hasattr(web, "RequestKey") else "request_id"


def route_label(request: web.BaseRequest) -> str:
    """The route's template, never the path itself (repository names would make the label set unbounded)."""
    route = request.get(ROUTE)
    if route:
        return route
    resource = request.match_info.route.resource if request.match_info.route else None
    canonical = resource.canonical if resource is not None else ""
    return canonical if canonical and not canonical.startswith("/v2") else "unmatched"


def _response_bytes(request: web.BaseRequest, response: web.StreamResponse) -> int:
    if request.method == "HEAD":
        return 0
    length = response.content_length  # a sendfile response knows it once prepared; its body_length stays 0
    return length if length is not None else response.body_length


@web.middleware
async def request_middleware(request: web.Request, handler) -> web.StreamResponse:
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    request[REQUEST_ID] = offered if _SANE_ID.match(offered) else os.urandom(8).hex()
    token = current_request_id.set(request[REQUEST_ID])
    try:
        return await handler(request)
    finally:
        current_request_id.reset(token)


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id


class RequestRecorder(AbstractAccessLogger):
    """Called by aiohttp once a response is completely sent, so status and size are final (a blob's status and
    length are decided while it is sent): counts it for /metrics, gives it to the audit trail and, at Debug, writes
    one line with its id."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        try:
            stats = request.app[REQUEST_STATS]
        except (AttributeError, AssertionError, KeyError):  # refused before routing (a malformed request): no app
            return
        bytes_in, bytes_out = request.content.total_bytes, _response_bytes(request, response)
        method = request.method if request.method in _METHODS else "other"
        route = route_label(request)
        stats.record(route, method, response.status, time, bytes_in, bytes_out)
        audit_exchange(request, response, route, request.get(REQUEST_ID, "-"))
        if log.isEnabledFor(logging.DEBUG):
            token = current_request_id.set(request.get(REQUEST_ID, "-"))
            try:
                log.debug("%s %s -> %d in %.1f ms (%d bytes in, %d bytes out)", request.method, request.path[:300],
                          response.status, time * 1000, bytes_in, bytes_out)
            finally:
                current_request_id.reset(token)


class ServerLog(logging.LoggerAdapter):
    """aiohttp's server logger. What a client did wrong (HTTP its parser refuses, going away mid-request) is one
    line at Debug, as anybody can send it as often as they like; anything else keeps its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})

    def exception(self, message, *args, exc_info=True, **kwargs) -> None:
        error = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(error, HttpProcessingError):
            log.debug("refused malformed HTTP (%s) from %s: %s", error.code, args[0] if args else "?",
                      _one_line(error.message))
        elif isinstance(error, ConnectionError):
            log.debug("the client went away: %s", _one_line(str(error)))
        else:
            super().exception(message, *args, exc_info=exc_info, **kwargs)


def _one_line(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in " ".join(text.split()))[:200]
