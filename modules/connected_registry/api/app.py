"""The application: one /v2 dispatcher (names contain slashes), error middleware, health endpoints."""

from __future__ import annotations

import logging
import re
from typing import Awaitable, Callable

from aiohttp import web

from connected_registry.api import blobs, control, listings, manifests, referrers, token, uploads
from connected_registry.api.audit import ERROR_CODE, ROUTE_ARGUMENTS
from connected_registry.api.requests import (CLIENT_CLOSED_REQUEST, REQUEST_ID, REQUEST_STATS, ROUTE, RequestStats,
                                              add_request_id, request_middleware)
from connected_registry.api.context import CONTEXT, ApiContext
from connected_registry.auth.access import request_origin
from connected_registry.oci.errors import OciError
from connected_registry.oci.names import validate_name
from connected_registry.storage.disk import StorageError

log = logging.getLogger("connected_registry.api")

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")
Handler = Callable[..., Awaitable[web.StreamResponse]]

# (pattern over the decoded path, {method: handler}); names are validated after the match.
_ROUTES: list[tuple[re.Pattern, dict[str, Handler]]] = [
    (
        re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)$"),
        {
            "GET": manifests.get_manifest,
            "HEAD": manifests.get_manifest,
            "PUT": manifests.put_manifest,
            "DELETE": manifests.delete_manifest,
        },
    ),
    (
        re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/?$"),
        {"POST": uploads.start_upload},
    ),
    (
        re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<upload_id>[^/]+)$"),
        {
            "GET": uploads.upload_status,
            "PATCH": uploads.patch_upload,
            "PUT": uploads.finish_upload,
            "DELETE": uploads.cancel_upload,
        },
    ),
    (
        re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)$"),
        {"GET": blobs.get_blob, "HEAD": blobs.get_blob, "DELETE": blobs.delete_blob},
    ),
    (re.compile(r"^/v2/(?P<name>.+)/tags/list$"), {"GET": listings.list_tags}),
    (re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<digest>[^/]+)$"), {"GET": referrers.list_referrers}),
]
# The route templates /metrics counts requests by: "/v2/{name}/manifests/{reference}", ...
_ROUTE_LABELS = {pattern: re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern.pattern).strip("^$").replace("/?", "")
                 for pattern, _ in _ROUTES}


async def v2_base(request: web.Request) -> web.Response:
    await request.app[CONTEXT].access.require(request, None, "base")
    return web.json_response({})


_LOGIN_SERVER_PATHS = ("/v2", "/acr/", "/oauth2/")


@web.middleware
async def login_server_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With ACR_REGISTRY_LOGIN_SERVER set, only requests made to that name (as the client saw it) are served."""
    login_server = request.app[CONTEXT].login_server
    if login_server and request.path.startswith(_LOGIN_SERVER_PATHS):
        _, host = request_origin(request)
        if host.lower() != login_server.lower():
            raise OciError(
                "DENIED",
                f"this registry answers at {login_server}, not {host[:100]}: use that address "
                "(it is ACR_REGISTRY_LOGIN_SERVER)",
            )
    return await handler(request)


async def dispatch_v2(request: web.Request) -> web.StreamResponse:
    path = request.path
    if path in ("/v2", "/v2/", "/v2/_catalog"):
        if request.method not in ("GET", "HEAD"):
            raise OciError("UNSUPPORTED", f"{request.method} is not supported on {path}", headers={"Allow": "GET, HEAD"})
        request[ROUTE] = "/v2/_catalog" if path == "/v2/_catalog" else "/v2/"
        return await (listings.catalog(request) if path == "/v2/_catalog" else v2_base(request))
    for pattern, methods in _ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        request[ROUTE] = _ROUTE_LABELS[pattern]
        request[ROUTE_ARGUMENTS] = match.groupdict()  # what the audit records: repository, reference or digest
        handler = methods.get(request.method)
        if handler is None:
            raise OciError(
                "UNSUPPORTED",
                f"{request.method} is not supported here; allowed: {', '.join(methods)}",
                headers={"Allow": ", ".join(methods)},
            )
        arguments = match.groupdict()
        validate_name(arguments.pop("name"))
        return await handler(request, match.group("name"), **arguments)
    raise OciError("ENDPOINT_UNKNOWN", f"no such endpoint: {request.method} {path[:200]}")


def _error_response(error: OciError) -> web.Response:
    response = web.json_response(error.body(), status=error.status, headers=error.headers)
    response[ERROR_CODE] = error.code  # for the audit record
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except OciError as error:
        if error.status >= 500 or log.isEnabledFor(logging.DEBUG):
            log.log(
                logging.WARNING if error.status >= 500 else logging.DEBUG,
                "%s %s -> %d %s: %s",
                request.method,
                request.path[:300],
                error.status,
                error.code,
                error.message,
            )
        return _error_response(error)
    except StorageError as error:
        log.error("%s %s -> storage failure %s: %s", request.method, request.path[:300], error.code, error)
        request.app[CONTEXT].on_storage_error(error)
        return _error_response(OciError(error.code, str(error)))
    except web.HTTPException as error:
        if error.status == 404 and not error.text.startswith("{"):
            return _error_response(OciError("ENDPOINT_UNKNOWN", f"no such endpoint: {request.path[:200]}"))
        if error.status == 405:
            allow = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else {}
            return _error_response(
                OciError("UNSUPPORTED", f"{request.method} is not supported on {request.path[:200]}", headers=allow)
            )
        raise
    except OSError as error:
        if request.transport is not None and not request.transport.is_closing():
            raise  # ours, not the client's: a 500 with its traceback
        # The client went away mid-request: counted as such (the answer is never sent), not as a 500.
        log.debug("%s %s: the client went away: %s", request.method, request.path[:300], error)
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    except Exception:
        request_id = request.get(REQUEST_ID, "-")
        log.exception("%s %s failed (request id %s)", request.method, request.path[:300], request_id)
        return _error_response(OciError("UNKNOWN", f"internal error; see the registry log for request {request_id}"))


async def _add_api_version(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    try:
        ctx.store.check_readable()
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        return web.json_response({"status": "unavailable", "reason": str(error)}, status=503)
    return web.json_response({"status": "ready"})


def create_app(context: ApiContext) -> web.Application:
    app = web.Application(middlewares=[request_middleware, error_middleware, login_server_middleware],
                          client_max_size=8 << 20)
    app[CONTEXT] = context
    app[REQUEST_STATS] = RequestStats()
    app.router.add_route("*", "/v2{tail:.*}", dispatch_v2)
    for path in ("/acr/oauth2/token", "/oauth2/token"):
        app.router.add_get(path, token.token_endpoint, allow_head=False)
        app.router.add_post(path, token.token_endpoint)
    control.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.on_response_prepare.append(_add_api_version)
    app.on_response_prepare.append(add_request_id)
    return app
