"""What a request adds to the audit trail (audit.py): the one place that turns an answered request into its records.

Called once the answer is sent (requests.py's RequestRecorder), it reads what the auth check noted on the request
(auth/access.py: the caller's token, a login and whether it held) and what the dispatcher matched (repository,
reference). Nothing of the request's headers, query or body is recorded but a token's name: never a password or a
token."""

from __future__ import annotations

from aiohttp import web

from connected_registry.api.context import CONTEXT
from connected_registry.auth.access import CALLER_TOKEN, LOGIN_ATTEMPT, LoginAttempt

# Typed request keys where aiohttp has them (3.13+), plain names before.
ROUTE_ARGUMENTS = web.RequestKey("route_arguments", dict) if hasattr(web, "RequestKey") else "route_arguments"
# On an error response (app.py): the code its body carries.
ERROR_CODE = web.ResponseKey("error_code", str) if hasattr(web, "ResponseKey") else "error_code"

REFUSED = frozenset({401, 403, 405, 409, 413, 429})  # a right, the mode, a limit or a throttle said no
TOKEN_SERVICE = ("/acr/oauth2/token", "/oauth2/token")
CONTROL_API = "/acr/connected/v1/"
_MANIFESTS, _BLOBS = "/v2/{name}/manifests/{reference}", "/v2/{name}/blobs/{digest}"
_MANIFEST_ACTIONS = {"GET": "pull", "PUT": "push", "DELETE": "delete"}


def audit_exchange(request: web.BaseRequest, response: web.StreamResponse, route: str, request_id: str) -> None:
    """The records of one answered request: a login when a password was checked, and the request itself when it is
    a pull, push, delete or control action, or any other request refused but for its failed login."""
    context = request.app[CONTEXT]
    trail = context.audit
    if trail is None or not trail.enabled():
        return
    login: LoginAttempt | None = request.get(LOGIN_ATTEMPT)
    if login is not None and login.remembered and request.path not in TOKEN_SERVICE:
        login = None  # only its credentials again, within minutes of the login that checked them
    action = _action(request.method, request.path, route)
    if action is None and response.status in REFUSED and not (login is not None and not login.succeeded):
        action = "access"  # refused, and not for the failed login its record already tells
    if login is None and action is None:
        return
    common = _common(request, response, request_id, context.access.client_address(request))
    if login is not None:
        trail.record(action="login", result="success" if login.succeeded else "failure", **common,
                     token=_bounded(login.token))
    if action is not None:
        token = request.get(CALLER_TOKEN) or (request[LOGIN_ATTEMPT].token if LOGIN_ATTEMPT in request else None)
        trail.record(action=action, result=_result(response.status), **common, token=_bounded(token))


def _common(request: web.BaseRequest, response: web.StreamResponse, request_id: str, client: str | None) -> dict:
    arguments = request.get(ROUTE_ARGUMENTS) or {}
    reference = arguments.get("reference") or arguments.get("digest")
    digest = response.headers.get("Docker-Content-Digest") or (reference if reference and ":" in reference else None)
    return {"status": response.status, "code": response.get(ERROR_CODE), "method": request.method[:16],
            "path": request.path[:300], "client": client, "repository": _bounded(arguments.get("name"), 256),
            "reference": _bounded(reference, 200), "digest": _bounded(digest, 200), "requestId": request_id}


def _action(method: str, path: str, route: str) -> str | None:
    if route == _MANIFESTS:
        return _MANIFEST_ACTIONS.get(method)
    if route == _BLOBS and method == "DELETE":
        return "delete"
    if path.startswith(CONTROL_API) and method not in ("GET", "HEAD"):
        return "control"
    return None


def _result(status: int) -> str:
    if status < 400:
        return "success"
    return "refused" if status in REFUSED else "failure"


def _bounded(value: str | None, length: int = 100) -> str | None:
    """Names come from clients (a login's name may be anything): a record stays a few hundred bytes."""
    return value[:length] if value else None
