"""A minimal Docker registry token server for tests (what CNCF distribution's `auth: token` needs).

    server = TokenServer(workdir, users={"admin": TokenUser("admin-pw", {"repository:*": ["pull", "push"]})})
    ... TokenAuthDistribution(workdir, server) ...
    server.stop()

It runs as an aiohttp app on a thread of the test process, on a free loopback port, and answers

    GET /token?service=S&scope=repository:NAME:pull,push[&scope=...]     (Basic auth, or none)

with `{"token", "access_token", "expires_in", "issued_at"}`: an RS256 JWT whose header carries `x5c` = [the DER of
a self-signed signing certificate] and whose claims are iss, aud (= the requested service), sub, exp, nbf, iat, jti
and `access` = [{type, name, actions}]. The certificate (`server.cert_path`, PEM) is what distribution takes as
`rootcertbundle`; the key never leaves the test process.

Users are given by the test: name -> TokenUser(password, grants), where grants map a `type:name` pattern (fnmatch:
`repository:factory/*`, `registry:catalog`) to the actions allowed there (`*` = any). A request gets, per scope it
asks for, the subset of the asked actions its user may have (scopes with nothing granted are left out, so the
registry answers `insufficient_scope`). Anonymous requests get a token with no access; a wrong password or an unknown
user gets 401. POST /token (the OAuth2 flow) answers 404, as registries without it do (clients fall back to GET).

Every request is recorded, in order, in `server.requests` (TokenRequest) before it is answered.
"""

from __future__ import annotations

import base64
import datetime
import fnmatch
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.support.processes import free_port
from tests.support.threaded import ThreadedApp


@dataclass(frozen=True)
class TokenUser:
    password: str
    grants: dict[str, list[str]] = field(default_factory=dict)  # "type:name" pattern -> allowed actions ("*": any)


@dataclass
class TokenRequest:
    """One request the token server answered."""
    method: str
    path: str
    auth: str                     # "Basic", "none", or the other scheme the client sent
    user: str | None              # the Basic user name, whether or not its password was right
    service: str | None
    scopes: list[str]             # as asked: one entry per scope (a space-separated `scope` value is split)
    status: int
    granted: list[dict]           # the token's `access` claim (empty when refused)
    user_agent: str = ""


def parse_scope(scope: str) -> dict | None:
    """`type:name:a,b` (the name may hold colons, e.g. a port) -> {type, name, actions}; None when malformed."""
    parts = scope.split(":")
    if len(parts) < 3:
        return None
    return {"type": parts[0], "name": ":".join(parts[1:-1]), "actions": [a for a in parts[-1].split(",") if a]}


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class TokenServer(ThreadedApp):
    name = "token server"

    def __init__(self, workdir: Path, users: dict[str, TokenUser] | None = None, *, service: str = "test-registry",
                 issuer: str = "test-token-issuer", lifetime: int = 300, timeout: float = 10.0) -> None:
        self.users: dict[str, TokenUser] = dict(users or {})
        self.service, self.issuer, self.lifetime = service, issuer, lifetime
        self.requests: list[TokenRequest] = []
        workdir.mkdir(parents=True, exist_ok=True)
        self.cert_path = workdir / "token-signer.crt"
        self._key, certificate = self._signing_certificate()
        self.cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        self._x5c = [base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()]
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.realm = f"{self.url}/token"
        super().__init__()
        self.serve(self.port, timeout)

    # --- keys and tokens ------------------------------------------------------------------------------

    @staticmethod
    def _signing_certificate() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        """A self-signed RSA certificate (RS256); distribution trusts it because it is itself the root bundle."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "connected-registry test token signer")])
        now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
        certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return key, certificate

    def mint(self, subject: str, access: list[dict], service: str | None = None) -> str:
        """A signed token (not recorded): for tests that talk to the registry directly."""
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": self._x5c}
        claims = {"iss": self.issuer, "sub": subject, "aud": service or self.service, "exp": now + self.lifetime,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                         + _b64url(json.dumps(claims, separators=(",", ":")).encode()))
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)

    def grant(self, user: TokenUser, scopes: list[str]) -> list[dict]:
        """Per asked scope, the asked actions this user may have; scopes with none are left out."""
        access = []
        for scope in scopes:
            asked = parse_scope(scope)
            if asked is None:
                continue
            allowed: set[str] = set()
            for pattern, actions in user.grants.items():
                if fnmatch.fnmatchcase(f"{asked['type']}:{asked['name']}", pattern):
                    allowed |= set(actions)
            actions = [a for a in asked["actions"] if a in allowed or "*" in allowed]
            if actions:
                access.append({"type": asked["type"], "name": asked["name"], "actions": actions})
        return access

    # --- queries for tests ----------------------------------------------------------------------------

    def requests_by(self, user: str) -> list[TokenRequest]:
        return [r for r in list(self.requests) if r.user == user]

    # --- the HTTP side --------------------------------------------------------------------------------

    async def make_app(self):
        app = web.Application()
        app.router.add_get("/token", self._token)
        app.router.add_post("/token", self._no_oauth2)
        return app

    async def _no_oauth2(self, request):
        self.requests.append(TokenRequest("POST", request.path, request.headers.get("Authorization", "none")
                                          .split(" ")[0], None, None, [], 404, [],
                                          request.headers.get("User-Agent", "")))
        return web.json_response({"errors": [{"code": "NOT_FOUND", "message": "no OAuth2 endpoint"}]}, status=404)

    async def _token(self, request):
        header = request.headers.get("Authorization", "")
        scheme = header.split(" ", 1)[0] if header else "none"
        user_name = password = None
        if scheme.lower() == "basic":
            try:
                user_name, _, password = base64.b64decode(header.split(" ", 1)[1]).decode().partition(":")
            except (ValueError, IndexError, UnicodeDecodeError):
                user_name = password = None
        service = request.query.get("service")
        scopes = [one for value in request.query.getall("scope", []) for one in value.split(" ") if one]
        record = TokenRequest("GET", request.path, scheme, user_name, service, scopes, 200, [],
                              request.headers.get("User-Agent", ""))
        if scheme.lower() == "basic":
            user = self.users.get(user_name or "")
            if user is None or user.password != password:
                record.status = 401
                self.requests.append(record)
                return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]},
                                         status=401, headers={"WWW-Authenticate": 'Basic realm="token"'})
            record.granted = self.grant(user, scopes)
        elif scheme != "none":
            record.status = 401
            self.requests.append(record)
            return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": f"{scheme} not supported"}]},
                                     status=401, headers={"WWW-Authenticate": 'Basic realm="token"'})
        token = self.mint(user_name or "", record.granted, service)
        self.requests.append(record)
        return web.json_response({"token": token, "access_token": token, "expires_in": self.lifetime,
                                  "issued_at": datetime.datetime.now(datetime.timezone.utc)
                                  .strftime("%Y-%m-%dT%H:%M:%SZ")})

