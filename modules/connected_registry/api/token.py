"""The Docker token service at /acr/oauth2/token (and /oauth2/token), SPEC 10.

GET with Basic (skopeo, podman, docker login, edgeAgent), POST grant_type=password (containerd),
POST grant_type=refresh_token (docker after login). The answer grants the allowed subset of the
requested scopes; the access list may be empty.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from aiohttp import web

from connected_registry.api.bodies import read_body
from connected_registry.api.context import context
from connected_registry.auth.access import TokenAccess, note_login, parse_basic
from connected_registry.auth.permissions import Permissions, Scope, parse_scopes
from connected_registry.auth.claims import Claims
from connected_registry.oci.errors import OciError
from connected_registry.oci.names import NAME_RE
from connected_registry.timefmt import utc_timestamp

_MAX_FORM_BYTES = 64 * 1024


def _access_list(permissions: Permissions, scopes: list[Scope]) -> list[dict]:
    granted = []
    for scope in scopes:
        if scope.type == "repository" and not NAME_RE.match(scope.name):
            continue
        actions = permissions.grant(scope)
        granted.append({"type": scope.type, "name": scope.name, "actions": actions})
    return granted


def _token_access(request: web.Request) -> TokenAccess:
    access = context(request).access
    if not isinstance(access, TokenAccess):
        raise OciError("ENDPOINT_UNKNOWN", "this registry runs without authentication and issues no tokens")
    return access


async def _form(request: web.Request) -> dict[str, list[str]]:
    body = await read_body(request, _MAX_FORM_BYTES, "token request", too_large="TOKEN_REQUEST_TOO_LARGE",
                           stalled="REQUEST_INVALID")
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        raise OciError("REQUEST_INVALID", "token request body must be application/x-www-form-urlencoded") from None


def _check_service(access: TokenAccess, service: str | None) -> None:
    if service and service != access.service:
        raise OciError("REQUEST_INVALID", f"this token service is for {access.service!r}, not {service[:100]!r}")


async def token_endpoint(request: web.Request) -> web.Response:
    access = _token_access(request)
    if request.method == "POST":
        form = await _form(request)
        first = lambda key: (form.get(key) or [None])[0]  # noqa: E731
        _check_service(access, first("service"))
        scopes = parse_scopes(form.get("scope", []))
        grant_type = first("grant_type")
        if grant_type == "password":
            name, password = first("username"), first("password")
            if not name or password is None:
                raise OciError("UNAUTHORIZED", "grant_type=password needs username and password")
            subject, permissions, credential = await access.check_password(request, name, password)
            return _answer(access, subject, credential, permissions, scopes, first("access_type") == "offline")
        if grant_type == "refresh_token":
            claims = access.signer.verify(first("refresh_token") or "", access.service, "refresh")
            permissions = access.permissions_for_claims(claims) if claims else None
            note_login(request, claims.subject if claims else None, permissions is not None)
            if claims is None or permissions is None:
                raise OciError("UNAUTHORIZED", "the refresh token is invalid, expired or revoked: log in again")
            return _answer(access, claims.subject, claims.credential, permissions, scopes, False,
                           refresh_token=first("refresh_token"))
        raise OciError("REQUEST_INVALID",
                       f"grant_type {str(grant_type)[:40]!r} is not supported: use password or refresh_token")

    _check_service(access, request.query.get("service"))
    scopes = parse_scopes(request.query.getall("scope", []))
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            raise access.unauthorized(request, "the token service takes Basic credentials")
        name, password = parse_basic(value)
        if name is None:
            note_login(request, None, False)
            raise access.unauthorized(request, "malformed Basic credentials")
        subject, permissions, credential = await access.check_password(request, name, password)
        offline = request.query.get("offline_token", "").lower() == "true"
        return _answer(access, subject, credential, permissions, scopes, offline)
    return _answer(access, "", "", access.anonymous_permissions(), scopes, False)


def _answer(access: TokenAccess, subject: str, credential: str, permissions: Permissions, scopes: list[Scope],
            offline: bool, refresh_token: str | None = None) -> web.Response:
    granted = _access_list(permissions, scopes)
    token, lifetime = access.signer.issue(access.service, Claims(subject, credential, granted, "access"))
    body = {
        "token": token,
        "access_token": token,
        "expires_in": lifetime,
        "issued_at": utc_timestamp(access.signer.clock()),
        "scope": " ".join(str(Scope(g["type"], g["name"], tuple(g["actions"]))) for g in granted if g["actions"]),
    }
    if offline and subject:
        refresh_token, _ = access.signer.issue(access.service, Claims(subject, credential, [], "refresh"))
    if refresh_token:
        body["refresh_token"] = refresh_token
    return web.json_response(body, headers={"Cache-Control": "no-store"})
