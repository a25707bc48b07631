"""Real container clients and daemons for tests, started and stopped by PID, on free loopback ports, under temp dirs.

    Containerd(workdir)                     containerd 1.6 with its own config.toml; `.ctr(...)` runs ctr --address SOCK
    Dockerd(workdir)                        moby 20.10 in a private mount namespace (a bind mount over /etc/docker and a
                                            tmpfs over /run exist only inside it) with the containerd it starts itself
                                            in that namespace, so containers run; `.docker(...)` runs /usr/bin/docker
                                            with DOCKER_HOST and DOCKER_CONFIG set (never ~/.docker or /etc/docker)
    ApiProxy(workdir, upstream, pki)        nginx as the IoT Edge API proxy: TLS with the test CA's server certificate,
                                            only /v2 and /acr forwarded to `upstream` over plain HTTP, with exactly the
                                            template's headers (X-Forwarded-Host $http_host, X-Forwarded-Proto $scheme)
    Distribution(workdir)                   CNCF distribution (`docker-registry serve CONFIG`), a plain registry

Every daemon is started in its own session with PR_SET_PDEATHSIG, so it is also ended if the test process dies; its
output goes to a log file in its workdir. `stop()` sends the stop signal to the daemon's PID, waits with a deadline,
SIGKILLs the PID if needed, then SIGKILLs whatever is left in the daemon's own process group, and unmounts anything
left mounted under its workdir. Nothing is written outside the workdir (and a short socket dir under /tmp when the
workdir's path is too long for a unix socket).

How each tool was seen to behave on this machine: ../shared/reference/real-clients.md.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import tempfile
import textwrap
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from pathlib import Path

from tests.support.pki import TestPki
from tests.support.processes import ManagedProcess, free_port, port_open, stop_process, wait_until
from tests.support.threaded import ThreadedApp

DOCKER_CLI = "/usr/bin/docker"  # Debian's 20.10 client; /usr/local/bin/docker (28.x) may come first in PATH


class CommandFailed(AssertionError):
    pass


def run(argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 120, check: bool = True,
        input: str | None = None) -> subprocess.CompletedProcess:
    """Run a client command; with `check`, fail with its full output when it exits non-zero."""
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise CommandFailed(f"{' '.join(map(str, argv))} exited {result.returncode}:\n"
                            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    return result


def skopeo(*arguments: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return run(["skopeo", *arguments], check=check, timeout=timeout)


def require(*binaries: str) -> None:
    missing = [binary for binary in binaries if shutil.which(binary) is None and not os.access(binary, os.X_OK)]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not installed: run `scripts/setup.sh --test` (it installs "
                           "containerd, docker.io, nginx, skopeo and docker-registry)")


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this process's mount namespace."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def _short_dir(workdir: Path, room: int = 40) -> tuple[Path, bool]:
    """A directory for unix sockets: `workdir/run` if paths there stay under the 108-byte limit, else a fresh
    /tmp/cr-XXXX (the bool says whether it must be removed at stop)."""
    candidate = workdir / "run"
    if len(str(candidate)) + room < 100:
        candidate.mkdir(parents=True, exist_ok=True)
        return candidate, False
    return Path(tempfile.mkdtemp(prefix="cr-", dir="/tmp")), True


class Daemon(ManagedProcess):
    """A long-running child named `name`: own session, output in `log_path`, stopped by PID with `stop_signal`."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, *, env: dict[str, str] | None = None,
                 stop_signal: int = signal.SIGTERM, cwd: Path | None = None) -> None:
        self.name = name
        self.stop_signal = stop_signal
        super().__init__(argv, env=env, cwd=cwd, log_path=log_path)

    def log(self, tail: int | None = 60) -> str:
        return super().log(tail)

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")

    def wait_ready(self, condition, timeout: float = 30.0) -> None:
        try:
            wait_until(lambda: not self.alive() or condition(), timeout=timeout,
                       what=f"{self.name} (pid {self.pid}) to be ready")
            self.check_alive()
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 20.0) -> None:
        if stop_process(self.process, self.stop_signal, grace=timeout):
            warnings.warn(f"{self.name} (pid {self.pid}) ignored signal {self.stop_signal} for {timeout}s: "
                          f"SIGKILL\n{self.log(20)}", stacklevel=2)
        try:  # the daemon's own process group (its session's leader was the daemon): workers, shims, helpers
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _unmount_leftovers(path: Path) -> list[str]:
    leftovers = mounts_under(path)
    for point in sorted(leftovers, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    return leftovers


class Containerd:
    """containerd with every path under `workdir` (root, state, sockets, opt); CRI disabled."""

    def __init__(self, workdir: Path, timeout: float = 30.0) -> None:
        require("containerd", "ctr")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self._sockets, self._remove_sockets = _short_dir(workdir)
        self.socket = self._sockets / "containerd.sock"
        self.root = workdir / "root"
        self.config = workdir / "config.toml"
        self.config.write_text(textwrap.dedent(f"""\
            version = 2
            root = "{self.root}"
            state = "{self._sockets / 'state'}"
            disabled_plugins = ["io.containerd.grpc.v1.cri"]

            [grpc]
              address = "{self.socket}"

            [ttrpc]
              address = "{self.socket}.ttrpc"

            [debug]
              address = ""
              level = "info"

            [metrics]
              address = ""

            [plugins]
              [plugins."io.containerd.internal.v1.opt"]
                path = "{workdir / 'opt'}"
            """))
        self.daemon = Daemon("containerd", ["containerd", "--config", self.config], workdir / "containerd.log")
        self.leftover_mounts: list[str] = []
        try:
            self.daemon.wait_ready(lambda: self.socket.exists() and self.ctr("version", check=False).returncode == 0,
                                   timeout=timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.daemon.pid

    def ctr(self, *arguments: str, check: bool = True, timeout: float = 120, debug: bool = False
            ) -> subprocess.CompletedProcess:
        """`ctr --address SOCK [--debug] ARGS...`; in ctr 1.6 the ctr process itself does the registry I/O."""
        return run(["ctr", "--address", str(self.socket), *(["--debug"] if debug else []), *arguments],
                   check=check, timeout=timeout)

    def content(self, digest: str) -> bytes:
        """The bytes of a blob in containerd's content store (`ctr content get`)."""
        result = subprocess.run(["ctr", "--address", str(self.socket), "content", "get", digest],
                                capture_output=True, timeout=60)
        if result.returncode != 0:
            raise CommandFailed(f"ctr content get {digest} exited {result.returncode}: {result.stderr.decode()}")
        return result.stdout

    def image_digest(self, reference: str) -> str | None:
        """The target digest of an image record (`ctr images ls`), or None."""
        for line in self.ctr("images", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == reference:
                return fields[2]
        return None

    def stop(self) -> None:
        self.daemon.stop()
        self.leftover_mounts = _unmount_leftovers(self.workdir) + _unmount_leftovers(self._sockets)
        if self._remove_sockets:
            shutil.rmtree(self._sockets, ignore_errors=True)


def _kill_in_namespace(namespace: str) -> None:
    """SIGKILL what still runs in a daemon's private mount namespace once the daemon is gone: containerd's shims
    leave the daemon's process group (they are only there if dockerd could not stop its containers)."""
    if not namespace:
        return
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns/mnt") == namespace:
                    os.kill(int(entry.name), signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass


def registry_requests(debug_output: str) -> list[tuple[str, str]]:
    """(method, url) of every registry request in `ctr --debug` output ("do request" lines)."""
    requests = []
    for line in debug_output.splitlines():
        if "do request" not in line:
            continue
        method = re.search(r'request\.method=(\w+)', line)
        url = re.search(r'url="?([^"\s]+)', line)
        if method and url:
            requests.append((method.group(1), url.group(1)))
    return requests


class Dockerd:
    """dockerd in a private mount namespace; `/etc/docker` there is `workdir/etc-docker`.

    daemon.json names no containerd, so dockerd starts its own (state under exec-root, root under data-root) inside
    the same namespace: the overlay root dockerd mounts for a container must be visible to the runc that containerd's
    shim starts, and a containerd outside the namespace would see an empty directory there."""

    def __init__(self, workdir: Path, timeout: float = 60.0) -> None:
        require("dockerd", "containerd", "runc", "unshare", DOCKER_CLI)
        if not Path("/etc/docker").is_dir():
            raise RuntimeError("/etc/docker is missing (the docker.io package creates it); it is the bind-mount "
                               "target inside dockerd's private mount namespace")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self._sockets, self._remove_sockets = _short_dir(workdir)
        self.socket = self._sockets / "docker.sock"
        self.etc = workdir / "etc-docker"
        (self.etc / "certs.d").mkdir(parents=True, exist_ok=True)
        self.cli_config = workdir / "cli"
        self.cli_config.mkdir(exist_ok=True)
        (self.cli_config / "config.json").write_text("{}")
        (self.etc / "daemon.json").write_text(json.dumps({
            "data-root": str(workdir / "root"),
            "exec-root": str(self._sockets / "exec"),
            "pidfile": str(workdir / "docker.pid"),
            "hosts": [f"unix://{self.socket}"],
            "bridge": "none",
            "iptables": False,
            "ip6tables": False,
            "ip-forward": False,
            "ip-masq": False,
            "storage-driver": "overlay2",
            "insecure-registries": [],
            "log-level": "info",
        }, indent=2))
        # unshare execs sh and sh execs dockerd: the Popen PID is dockerd's. The mounts exist only in its namespace
        # and vanish with it.
        script = (f"mount --bind '{self.etc}' /etc/docker && mount -t tmpfs -o mode=755 tmpfs /run && "
                  "exec dockerd")
        self.daemon = Daemon("dockerd", ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                             workdir / "dockerd.log")
        self.leftover_mounts: list[str] = []
        self._namespace = ""
        try:
            self.daemon.wait_ready(lambda: self.socket.exists() and self.docker(
                "version", "--format", "{{.Server.Version}}", check=False).returncode == 0, timeout=timeout)
            self._namespace = os.readlink(f"/proc/{self.pid}/ns/mnt")
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.daemon.pid

    @property
    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": f"unix://{self.socket}", "DOCKER_CONFIG": str(self.cli_config)}

    def docker(self, *arguments: str, check: bool = True, timeout: float = 120, input: str | None = None
               ) -> subprocess.CompletedProcess:
        return run([DOCKER_CLI, *arguments], env=self.env, check=check, timeout=timeout, input=input)

    def repo_digests(self, reference: str) -> list[str]:
        """The `name@digest` references the engine keeps for an image it pulled or pushed."""
        return json.loads(self.docker("image", "inspect", "--format", "{{json .RepoDigests}}", reference).stdout)

    def trust(self, host: str, ca_cert: Path) -> None:
        """certs.d/<host:port>/ca.crt (dockerd re-reads certs.d on every pull and push). Moby never verifies TLS
        for 127.0.0.0/8, so this matters only for non-loopback addresses."""
        directory = self.etc / "certs.d" / host
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ca_cert, directory / "ca.crt")

    def stop(self) -> None:
        self.daemon.stop()
        _kill_in_namespace(self._namespace)
        self.leftover_mounts = _unmount_leftovers(self.workdir) + _unmount_leftovers(self._sockets)
        if self._remove_sockets:
            shutil.rmtree(self._sockets, ignore_errors=True)


ACCESS_LOG_FORMAT = '$request_method $request_uri $status $request_length $body_bytes_sent'


class ApiProxy:
    """nginx configured as the IoT Edge API proxy (azureiotedge-api-proxy's nginx_default_config.conf with
    CONNECTED_ACR_ROUTE_ADDRESS set): TLS on its port with the test CA's server certificate, `location /v2` and
    `location /acr` proxied to `http://UPSTREAM` with only X-Forwarded-Host and X-Forwarded-Proto set (so `Host` is
    the upstream's address, nginx's default), request bodies buffered (nginx's default), 1000G bodies allowed,
    3600 s read timeout. Everything else gets 404."""

    def __init__(self, workdir: Path, upstream: str, pki: TestPki, *, extra_addresses: Sequence[str] = (),
                 port: int | None = None, timeout: float = 20.0) -> None:
        require("nginx")
        self.workdir = workdir
        self.upstream = upstream
        self.pki = pki
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"https://{self.host}"
        self.ca_cert = pki.ca_cert
        self.cert_dir = pki.cert_dir  # flat dir with ca.crt: skopeo --src-cert-dir / --dest-cert-dir
        self.access_log = workdir / "logs" / "access.log"
        (workdir / "logs").mkdir(parents=True, exist_ok=True)
        (workdir / "tmp").mkdir(exist_ok=True)
        self.config = workdir / "nginx.conf"
        listens = "\n".join(f"        listen {address}:{self.port} ssl;" for address in ("127.0.0.1", *extra_addresses))
        location = textwrap.indent(textwrap.dedent(f"""\
            proxy_http_version 1.1;
            proxy_pass         http://{upstream};
            proxy_set_header   X-Forwarded-Host $http_host;
            proxy_set_header   X-Forwarded-Proto $scheme;
            client_max_body_size 1000G;
            """), " " * 12)
        temp = workdir / "tmp"
        self.config.write_text(f"""\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {workdir / 'logs' / 'nginx.pid'};
error_log {workdir / 'logs' / 'error.log'} info;
events {{ worker_connections 256; }}

http {{
    proxy_buffers 32 160k;
    proxy_buffer_size 160k;
    proxy_read_timeout 3600;
    log_format registry '{ACCESS_LOG_FORMAT}';
    access_log {self.access_log} registry;
    client_body_temp_path {temp / 'body'};
    proxy_temp_path       {temp / 'proxy'};
    fastcgi_temp_path     {temp / 'fastcgi'};
    uwsgi_temp_path       {temp / 'uwsgi'};
    scgi_temp_path        {temp / 'scgi'};

    server {{
{listens}

        chunked_transfer_encoding on;

        ssl_certificate        {pki.server_chain};
        ssl_certificate_key    {pki.server_key};
        ssl_client_certificate {pki.ca_cert};
        ssl_verify_depth 7;
        ssl_verify_client optional_no_ca;

        location /v2 {{
{location}        }}

        location /acr {{
{location}        }}
    }}
}}
""")
        self.ssl_context = ssl.create_default_context(cafile=str(pki.ca_cert))
        self.ctr_hosts_dir = self.write_ctr_hosts(workdir / "hosts.d", self.host)
        self.daemon = Daemon("nginx", ["nginx", "-p", workdir, "-c", self.config, "-e",
                                       workdir / "logs" / "error.log"], workdir / "logs" / "nginx.out")
        self.daemon.wait_ready(lambda: all(port_open(self.port, address) for address in ("127.0.0.1",
                                                                                          *extra_addresses)),
                               timeout=timeout)

    def write_ctr_hosts(self, hosts_dir: Path, host: str) -> Path:
        """hosts.toml making ctr 1.6 use HTTPS with the test CA for `host` (it uses plain HTTP for 127.0.0.1 and
        localhost otherwise, even with --tlscacert)."""
        directory = hosts_dir / host
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "hosts.toml").write_text(textwrap.dedent(f"""\
            server = "https://{host}"
            [host."https://{host}"]
              capabilities = ["pull", "resolve", "push"]
              ca = "{self.pki.ca_cert}"
            """))
        return hosts_dir

    @property
    def pid(self) -> int:
        return self.daemon.pid

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, uri, status) of every request nginx has finished, from its access log."""
        if not self.access_log.exists():
            return []
        rows = []
        for line in self.access_log.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                rows.append((parts[0], parts[1], int(parts[2])))
        return rows

    def wait_for_requests(self, predicate, what: str):
        """nginx writes an access-log line just after it has sent the response: poll `predicate(requests())`."""
        return wait_until(lambda: predicate(self.requests()), timeout=10, what=f"{what} in {self.access_log}")

    def open(self, method: str, path: str, data: bytes | None = None, headers: dict[str, str] | None = None):
        """One HTTPS request through the proxy, verified with the test CA; returns the response (or HTTPError)."""
        request = urllib.request.Request(self.url + path, method=method, data=data, headers=headers or {})
        try:
            return urllib.request.urlopen(request, timeout=10, context=self.ssl_context)
        except urllib.error.HTTPError as error:
            return error

    def stop(self) -> None:
        self.daemon.stop()  # SIGTERM to the master: fast shutdown; workers are in its process group


DISTRIBUTION_CONFIG = """\
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: connected-registry-tests
"""


class Distribution:
    """CNCF distribution (`docker-registry serve CONFIG`) on a free loopback port, storage under `workdir`."""

    def __init__(self, workdir: Path, port: int | None = None, timeout: float = 20.0, extra_config: str = "", *,
                 config: str = DISTRIBUTION_CONFIG, binary: str = "docker-registry", address: str = "127.0.0.1",
                 launcher: Sequence[str] = ()) -> None:
        """`extra_config`: more top-level YAML for the config (an `auth:` section, say). `config`: the YAML with
        `{root}` and `{addr}` in place of the storage directory and the listen address (the benchmarks' own).
        `launcher` and `address`: run it inside another network namespace, listening there (tests/support/netns.py)."""
        require(binary)
        self.port = port or free_port()
        self.address = address
        self.host = f"{address}:{self.port}"
        self.url = f"http://{self.host}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "config.yml"
        self.config.write_text(config.format(root=workdir / "data", addr=self.host) + textwrap.dedent(extra_config))
        self.daemon = Daemon("docker-registry", [*launcher, binary, "serve", self.config], workdir / "registry.log")
        self.daemon.wait_ready(self._ready, timeout=timeout)

    def _ready(self) -> bool:
        if not port_open(self.port, self.address):
            return False
        with urllib.request.urlopen(f"{self.url}/v2/", timeout=2) as response:
            return response.status == 200

    @property
    def pid(self) -> int:
        return self.daemon.pid

    def stop(self) -> None:
        self.daemon.stop()


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); treat it as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False



# --- a recording reverse proxy (appended for tests/api/test_real_clients_auth.py) ---------------------------------

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                         "trailers", "transfer-encoding", "upgrade", "content-length"})


class Exchange:
    """One request that went through a RecordingProxy and the status the upstream answered."""

    def __init__(self, method: str, target: str, authorization: str, form: dict[str, str], status: int,
                 challenge: str) -> None:
        self.method = method
        self.target = target                # path?query as the client sent it
        self.authorization = authorization  # the Authorization scheme only ("Basic", "Bearer"), or ""
        self.form = form                    # the decoded form body of a POST to a token endpoint, else {}
        self.status = status
        self.challenge = challenge          # the response's WWW-Authenticate, or ""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> dict[str, list[str]]:
        from urllib.parse import parse_qs
        return parse_qs(self.target.partition("?")[2], keep_blank_values=True)

    @property
    def is_token_request(self) -> bool:
        return self.path in ("/acr/oauth2/token", "/oauth2/token")

    def __repr__(self) -> str:
        secretless = {k: ("…" if k in ("password", "refresh_token") else v) for k, v in self.form.items()}
        return (f"{self.method} {self.target[:160]} auth={self.authorization or '-'} -> {self.status}"
                + (f" form={secretless}" if secretless else ""))


class RecordingProxy(ThreadedApp):
    """A plain-HTTP reverse proxy on a free loopback port in front of `upstream` (host:port), run by aiohttp on a
    thread of the test process (no child process). It forwards each request as the client sent it, `Host` included,
    so the registry builds its challenge realm and Location URLs for the proxy's address and the client's token
    requests come back through it; and it records every exchange (`.exchanges`, in order) before answering, so they
    are all there once the client command has returned. Bodies are read whole (fine for test images)."""

    name = "recording proxy"

    def __init__(self, upstream: str, timeout: float = 10.0) -> None:
        super().__init__()
        self.upstream = upstream
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.exchanges: list[Exchange] = []
        self.serve(self.port, timeout)

    async def make_app(self):
        import aiohttp
        from aiohttp import web

        self._session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=120))
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        return app

    async def close(self) -> None:
        await self._session.close()

    async def _forward(self, request):
        import asyncio
        from urllib.parse import parse_qsl

        import aiohttp
        from aiohttp import web

        body = await request.read()
        form = {}
        if request.method == "POST" and request.path in ("/acr/oauth2/token", "/oauth2/token"):
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        authorization = request.headers.get("Authorization", "").partition(" ")[0]
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        try:
            async with self._session.request(
                request.method, f"http://{self.upstream}{request.raw_path}", headers=headers, data=body or None,
                allow_redirects=False, skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            ) as answer:
                payload = await answer.read()
                status, reason, answer_headers = answer.status, answer.reason, answer.headers.copy()
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:  # the upstream went away: say so, as nginx would
            self.exchanges.append(Exchange(request.method, request.raw_path, authorization, form, 502,
                                           f"upstream error: {error!r}"))
            return web.Response(status=502, text=f"recording proxy: upstream error: {error!r}")
        self.exchanges.append(Exchange(request.method, request.raw_path, authorization, form, status,
                                       answer_headers.get("WWW-Authenticate", "")))
        response = web.StreamResponse(status=status, reason=reason)
        for key, value in answer_headers.items():
            if key.lower() not in _HOP_BY_HOP:
                response.headers.add(key, value)
        if request.method == "HEAD":
            if answer_headers.get("Content-Length") is not None:
                response.headers["Content-Length"] = answer_headers["Content-Length"]
        else:
            response.content_length = len(payload)
        try:
            await response.prepare(request)
            if request.method != "HEAD":
                await response.write(payload)
            await response.write_eof()
        except ConnectionError:  # the client went away; nothing left to tell it
            pass
        return response

    def token_requests(self) -> list[Exchange]:
        return [exchange for exchange in self.exchanges if exchange.is_token_request]

    def requests_for(self, repository: str, method: str | None = None, kind: str = "") -> list[Exchange]:
        """The exchanges under /v2/<repository>/<kind> (`kind`: "manifests/", "blobs/", ...), of one method or all."""
        return [exchange for exchange in self.exchanges if exchange.path.startswith(f"/v2/{repository}/{kind}")
                and (method is None or exchange.method == method)]


def engine_request(socket_path: Path, method: str, path: str, headers: dict[str, str] | None = None,
                   timeout: float = 120, json_body: object = None) -> tuple[int, bytes]:
    """One Docker Engine API request over dockerd's unix socket (as IoT Edge's edgeAgent makes them), with
    `json_body` as its JSON body if given; returns (status, whole body). A pull's progress is streamed JSON lines;
    errors after the 200 come as {"error": ...} lines."""
    body = None
    if json_body is not None:
        body, headers = json.dumps(json_body).encode(), {**(headers or {}), "Content-Type": "application/json"}
    connection = http.client.HTTPConnection("localhost", timeout=timeout)
    connection.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.sock.settimeout(timeout)
    try:
        connection.sock.connect(str(socket_path))
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def registry_auth(name: str, password: str, server: str) -> str:
    """The X-Registry-Auth header of an Engine API pull, as edgeAgent sends it."""
    return base64.urlsafe_b64encode(json.dumps({"username": name, "password": password,
                                                "serveraddress": server}).encode()).decode()


def rootfs_tar(payload: bytes) -> bytes:
    """A root filesystem of one file (payload/data.bin) for `docker import`: an image no registry has seen."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("payload/data.bin")
        info.size, info.mode, info.mtime = len(payload), 0o644, 0
        archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


# --- CNCF distribution with token auth (appended for tests/sync/test_plain_parent_token_auth.py) -----------------

class TokenAuthDistribution(Distribution):
    """CNCF distribution as `Distribution`, but with `auth.token`: every request needs a Bearer token from `realm`
    (signed by a certificate in `rootcertbundle`, issued by `issuer` for `service`). `token_server` may be a
    tests.support.tokenserver.TokenServer, which supplies all four; explicit arguments override it."""

    def __init__(self, workdir: Path, token_server=None, *, realm: str | None = None, service: str | None = None,
                 issuer: str | None = None, rootcertbundle: Path | None = None, port: int | None = None,
                 timeout: float = 20.0) -> None:
        self.realm = realm or token_server.realm
        self.service = service or token_server.service
        self.issuer = issuer or token_server.issuer
        self.rootcertbundle = Path(rootcertbundle or token_server.cert_path)
        super().__init__(workdir, port=port, timeout=timeout, extra_config=f"""\
            auth:
              token:
                realm: {self.realm}
                service: {self.service}
                issuer: {self.issuer}
                rootcertbundle: {self.rootcertbundle}
            """)

    def _ready(self) -> bool:
        """Up when /v2/ answers the anonymous request with a Bearer challenge naming our realm."""
        if not port_open(self.port):
            return False
        try:
            urllib.request.urlopen(f"{self.url}/v2/", timeout=2).close()
        except urllib.error.HTTPError as error:
            return error.code == 401 and f'realm="{self.realm}"' in error.headers.get("WWW-Authenticate", "")
        raise RuntimeError(f"distribution on {self.host} answered /v2/ without asking for a token")
