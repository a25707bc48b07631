"""Who the caller is and what they may do: Basic credentials, bearer JWTs, anonymous pull (SPEC 10).

`TokenAccess.require` answers every API check. Changes to tokens apply at the next request: a bearer
token only ever narrows what the token's current actions allow.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from connected_registry.auth.passwords import PasswordChecker, Throttled
from connected_registry.auth.permissions import (
    ANONYMOUS_PULL,
    EVERYTHING,
    GATEWAY_SCOPE_ACTIONS,
    NOTHING,
    OPERATION_SCOPE,
    Permissions,
)
from connected_registry.auth.claims import Claims, credential_fingerprint
from connected_registry.oci.errors import OciError

if TYPE_CHECKING:  # JWT and pydantic machinery load only when tokens are configured
    from connected_registry.auth.signing import TokenSigner
    from connected_registry.settings import DesiredProperties, TokenSettings

INSUFFICIENT_SCOPES = "Insufficient scopes to perform the operation."


@dataclass(frozen=True)
class LoginAttempt:
    """A password (or refresh token) checked for a request, for its audit record (api/audit.py): the name offered,
    whether it held, and whether it was only remembered from a check of the last minutes (Basic on every request)."""

    token: str | None
    succeeded: bool
    remembered: bool = False


# What the checks note on the request for the audit (typed request keys where aiohttp has them, 3.13+).
LOGIN_ATTEMPT = web.RequestKey("login_attempt", LoginAttempt) if hasattr(web, "RequestKey") else "login_attempt"
CALLER_TOKEN = web.RequestKey("caller_token", str) if hasattr(web, "RequestKey") else "caller_token"


def note_login(request: web.Request, token: str | None, succeeded: bool, remembered: bool = False) -> None:
    request[LOGIN_ATTEMPT] = LoginAttempt(token, succeeded, remembered)


@dataclass(frozen=True)
class Caller:
    """An authenticated (or anonymous) caller: its token's permissions, narrowed by a JWT's access list."""

    open: bool = False  # the embedded default: everything allowed

    name: str | None = None
    permissions: Permissions = NOTHING
    jwt_access: list[dict] | None = None  # None: not a bearer caller (Basic or anonymous): no narrowing

    def _jwt_allows(self, kind: str, name: str, action: str) -> bool:
        if self.jwt_access is None:
            return True
        for entry in self.jwt_access:
            if entry.get("type") == kind and str(entry.get("name", "")).lower() == name.lower():
                actions = entry.get("actions") or []
                if action in actions or "*" in actions:
                    return True
        return False

    def can(self, repository: str, operation: str) -> bool:
        return self._jwt_allows("repository", repository, OPERATION_SCOPE[operation]) and self.permissions.allows_operation(
            repository, operation
        )

    def can_list_catalog(self) -> bool:
        return self._jwt_allows("registry", "catalog", "*") and self.permissions.reads_anything()

    def can_gateway(self, name: str, scope_action: str) -> bool:
        return self.open or (self._jwt_allows("gateway", name, scope_action) and self.permissions.allows_gateway(
            name, GATEWAY_SCOPE_ACTIONS[scope_action]
        ))

    def can_read_instance(self, own_name: str) -> bool:
        """The instance's status and hierarchy (SPEC 11): `metadata/read` on `*`, or a gateway right on its own name
        (the operator's); neither a token for some repositories nor a child's sync token."""
        everything = self._jwt_allows("registry", "catalog", "*") and self.permissions.allows("*", "metadata/read")
        return everything or any(self.can_gateway(own_name, action) for action in GATEWAY_SCOPE_ACTIONS)


OPEN_CALLER = Caller(open=True, name="anonymous", permissions=EVERYTHING)


_HOST_RE = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")


def request_origin(request: web.Request) -> tuple[str, str]:
    """(scheme, host) as the client sees this server: the API proxy's X-Forwarded-* when well formed."""
    scheme = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    if scheme not in ("http", "https"):
        scheme = request.scheme
    host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
    if not _HOST_RE.match(host):
        host = request.host if _HOST_RE.match(request.host or "") else "localhost"
    return scheme, host


def _host_part(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """One client's share of the address space: an IPv6 host commonly holds a whole /64."""
    if address.version == 6:
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _enabled(tokens: dict[str, tuple["TokenSettings", Permissions]], name: str) -> bool:
    return name in tokens and tokens[name][0].status == "enabled"


class TokenAccess:
    def __init__(self, signer: "TokenSigner", service: Callable[[], str], settings: "DesiredProperties",
                 checker: PasswordChecker | None = None) -> None:
        self.signer = signer
        self._service = service
        self.checker = checker or PasswordChecker()
        self.configure(settings)

    @property
    def service(self) -> str:
        """The token service's name (the login server, else the instance's name), read live: a rename applies."""
        return self._service()

    def configure(self, settings: "DesiredProperties") -> None:
        previous = getattr(self, "_tokens", None)  # None: the first configuration, after a start
        self._tokens: dict[str, tuple["TokenSettings", Permissions]] = {
            name.lower(): (token, Permissions.from_actions(token.actions)) for name, token in settings.tokens.items()
        }
        # A token disabled or removed now: its JWTs stay refused when it is enabled or added again.
        for name in {*(previous or ()), *self._tokens}:
            if (previous is None or _enabled(previous, name)) and not _enabled(self._tokens, name):
                self.signer.revoke_issued_until_now(name)
        self._anonymous = ANONYMOUS_PULL if settings.anonymousPull else NOTHING
        self._trusted = [ipaddress.ip_network(value, strict=False) for value in settings.trustedProxies]

    # --- challenges ---------------------------------------------------------------------------

    def challenge(self, request: web.Request, scope: str | None = None, error: str | None = None) -> str:
        scheme, host = request_origin(request)
        value = f'Bearer realm="{scheme}://{host}/acr/oauth2/token",service="{self.service}"'
        if scope:
            value += f',scope="{scope}"'
        if error:
            value += f',error="{error}"'
        if error == "insufficient_scope":
            # docker prints error_description; without it, it replaces our reason with a generic text
            value += f',error_description="{INSUFFICIENT_SCOPES}"'
        return value

    def unauthorized(self, request: web.Request, message: str, scope: str | None = None,
                     error: str | None = None) -> OciError:
        return OciError("UNAUTHORIZED", message, headers={"WWW-Authenticate": self.challenge(request, scope, error)})

    # --- identities -----------------------------------------------------------------------------

    def client_address(self, request: web.Request) -> str | None:
        """The client's address: the peer's, or behind a trusted proxy the nearest untrusted address in
        X-Forwarded-For (the proxy's own when it names none). None for a Unix socket."""
        address = self._client_ip(request)
        return None if address is None else str(address)

    def _client_address(self, request: web.Request) -> str | None:
        """The client's share of the address space, as failed logins are throttled by."""
        address = self._client_ip(request)
        return None if address is None else _host_part(address)

    def _client_ip(self, request: web.Request) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            peer = ipaddress.ip_address(request.remote or "")
        except ValueError:
            return None
        if not any(peer in network for network in self._trusted):
            return peer
        forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
        for candidate in reversed(forwarded):
            try:
                address = ipaddress.ip_address(candidate)
            except ValueError:
                break
            if not any(address in network for network in self._trusted):
                return address
        return peer

    async def check_password(self, request: web.Request, name: str, password: str) -> tuple[str, Permissions, str]:
        """(token name, permissions, hash fingerprint) for valid credentials; raises 401 or 429."""
        entry = self._tokens.get(name.lower())
        hashes = entry[0].passwordHashes if entry and entry[0].status == "enabled" else None
        remembered = self.checker.remembers(name, password, hashes)
        try:
            matched = await self.checker.verify(name, password, hashes, self._client_address(request))
        except Throttled as throttled:
            note_login(request, name, False)
            retry_after = max(int(throttled.retry_after + 0.999), 1)
            raise OciError("TOOMANYREQUESTS", f"{throttled}; retry in {retry_after} s",
                           headers={"Retry-After": str(retry_after)}) from None
        if matched is None:
            note_login(request, name, False)
            raise self.unauthorized(request, "invalid username or password, or the token is disabled")
        note_login(request, name.lower(), True, remembered)
        return name.lower(), entry[1], credential_fingerprint(matched)

    def permissions_for_claims(self, claims: Claims) -> Permissions | None:
        """The current permissions behind a JWT's subject, or None when its credential was revoked."""
        if claims.subject == "":
            return self._anonymous
        entry = self._tokens.get(claims.subject.lower())
        if entry is None or entry[0].status != "enabled":
            return None
        if not any(credential_fingerprint(h) == claims.credential for h in entry[0].passwordHashes):
            return None
        return entry[1]

    def anonymous_permissions(self) -> Permissions:
        return self._anonymous

    async def identify(self, request: web.Request) -> tuple[Caller, str]:
        """The caller and how they authenticated: "anonymous", "basic" or "bearer" (its token noted for the audit)."""
        caller, how = await self._identify(request)
        if caller.name:
            request[CALLER_TOKEN] = caller.name
        return caller, how

    async def _identify(self, request: web.Request) -> tuple[Caller, str]:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if not header:
            return Caller(permissions=self._anonymous), "anonymous"
        if scheme == "basic":
            name, password = parse_basic(value)
            if name is None:
                note_login(request, None, False)
                raise self.unauthorized(request, "malformed Basic credentials")
            token_name, permissions, _ = await self.check_password(request, name, password)
            return Caller(name=token_name, permissions=permissions), "basic"
        if scheme == "bearer":
            claims = self.signer.verify(value.strip(), self.service, "access")
            permissions = self.permissions_for_claims(claims) if claims else None
            if claims is None or permissions is None:
                raise self.unauthorized(request, "the bearer token is invalid or expired: log in again",
                                        error="invalid_token")
            return Caller(name=claims.subject or None, permissions=permissions, jwt_access=claims.access), "bearer"
        raise self.unauthorized(request, "unsupported Authorization scheme: use Basic or Bearer")

    # --- the check the API calls ------------------------------------------------------------------

    async def require(self, request: web.Request, repository: str | None, operation: str) -> Caller:
        caller, how = await self.identify(request)
        if operation == "base":
            if how == "anonymous":
                raise self.unauthorized(request, "authentication required: log in with a token")
            return caller
        if operation == "catalog":
            allowed = caller.can_list_catalog()
            scope = "registry:catalog:*"
        else:
            allowed = caller.can(repository, operation)
            scope = f"repository:{repository}:{OPERATION_SCOPE[operation]}"
        if allowed:
            return caller
        if how == "anonymous":
            raise self.unauthorized(request, "authentication required: log in with a token", scope=scope)
        if how == "bearer":
            raise self.unauthorized(request, INSUFFICIENT_SCOPES, scope=scope, error="insufficient_scope")
        raise OciError("DENIED", INSUFFICIENT_SCOPES)

    async def require_gateway(self, request: web.Request, name: str, scope_action: str) -> Caller:
        """The control API's check: `gateway/<name>/<action>` (SPEC 10, 11)."""
        caller, how = await self.identify(request)
        if caller.can_gateway(name, scope_action):
            return caller
        scope = f"gateway:{name.lower()}:{scope_action}"
        if how == "anonymous":
            raise self.unauthorized(request, "authentication required: use the sync token", scope=scope)
        if how == "bearer":
            raise self.unauthorized(request, INSUFFICIENT_SCOPES, scope=scope, error="insufficient_scope")
        raise OciError("DENIED", f"{INSUFFICIENT_SCOPES} The token needs gateway/{name}/"
                                 f"{GATEWAY_SCOPE_ACTIONS[scope_action]}.")

    async def require_instance_reader(self, request: web.Request, own_name: str) -> Caller:
        """The check of `/status` and `/registries`: `metadata/read` on `*` or the instance's gateway rights."""
        caller, how = await self.identify(request)
        if caller.can_read_instance(own_name):
            return caller
        if how == "anonymous":
            raise self.unauthorized(request, "authentication required: log in with a token", scope="registry:catalog:*")
        if how == "bearer":
            raise self.unauthorized(request, INSUFFICIENT_SCOPES, scope="registry:catalog:*", error="insufficient_scope")
        raise OciError("DENIED", f"{INSUFFICIENT_SCOPES} The token needs metadata/read on * "
                                 f"(repositories/*/metadata/read) or gateway/{own_name}/config/read.")


class OpenAccess:
    """Everyone may do everything: the embedded default for trying the registry out on loopback."""

    def client_address(self, request: web.Request) -> str | None:
        return request.remote

    async def require(self, request: web.Request, repository: str | None, operation: str) -> Caller:
        return OPEN_CALLER

    async def require_gateway(self, request: web.Request, name: str, scope_action: str) -> Caller:
        return OPEN_CALLER

    async def require_instance_reader(self, request: web.Request, own_name: str) -> Caller:
        return OPEN_CALLER


def parse_basic(value: str) -> tuple[str | None, str]:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None, ""
    name, sep, password = decoded.partition(":")
    if not sep or not name:
        return None, ""
    return name, password
