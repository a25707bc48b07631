"""Several `connected-registry serve` replicas sharing one PostgreSQL database and one Azurite container, behind
nginx as a plain round-robin load balancer (no stickiness): the scale-out of issue 18 as deploy/ runs it.

nginx streams both ways (`proxy_request_buffering off`, `proxy_buffering off`, no body limit, long timeouts), so a
PATCH reaches its replica as it arrives, and it retries the next replica on a refused or broken connection for the
requests nginx may repeat (GET, HEAD, PUT, DELETE: `proxy_next_upstream`'s default idempotent set) but never for a
POST or PATCH. Its access log records which replica (`$upstream_addr`) answered each request, so a test can prove
that a chunked upload's requests landed on several replicas.

Each replica has a data directory of its own (its local state: logs, revocations, and the token key unless
ACR_REGISTRY_TOKEN_KEY_FILE names a shared one); blobs and metadata are shared.
"""

from __future__ import annotations

import json
import random
import signal
import textwrap
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.azurite import BLOB_STORE_VARIABLE, Azurite
from tests.support.clients import Daemon, require
from tests.support.postgres import METADATA_DSN_VARIABLE, PostgresServer
from tests.support.processes import RegistryProcess, free_port, port_open, run_cli

CONTENT_TABLES = ("repositories", "blobs", "repository_blobs", "manifests", "manifest_references", "tags", "uploads",
                  "events", "outbox", "on_demand")
# method, uri, status, replica(s) that answered (comma-separated when nginx moved on to the next one)
BALANCER_LOG_FORMAT = '$request_method $request_uri $status $upstream_addr'


def balancer_config(workdir: Path, port: int, upstreams: list[str], access_log: Path) -> str:
    """nginx as the scale-out's load balancer: deploy/nginx.conf's proxy settings (tests/unit/test_deploy.py checks
    that they agree), with a test's paths, ports and upstreams."""
    servers = "\n".join(f"        server {upstream} max_fails=1 fail_timeout=2s;" for upstream in upstreams)
    temp = workdir / "tmp"
    return textwrap.dedent(f"""\
        daemon off;
        master_process on;
        worker_processes 1;
        user root;
        pid {workdir / 'nginx.pid'};
        error_log {workdir / 'error.log'} warn;
        events {{ worker_connections 1024; }}
        http {{
            log_format balancer '{BALANCER_LOG_FORMAT}';
            access_log {access_log} balancer;
            client_body_temp_path {temp / 'body'};
            proxy_temp_path       {temp / 'proxy'};
            fastcgi_temp_path     {temp / 'fastcgi'};
            uwsgi_temp_path       {temp / 'uwsgi'};
            scgi_temp_path        {temp / 'scgi'};
            upstream registry {{
        {servers}
                keepalive 32;
            }}
            server {{
                listen 127.0.0.1:{port};
                client_max_body_size 0;
                proxy_request_buffering off;
                proxy_buffering off;
                proxy_http_version 1.1;
                proxy_set_header Connection "";
                proxy_set_header Host $http_host;
                proxy_set_header X-Forwarded-Host $http_host;
                proxy_set_header X-Forwarded-Proto $scheme;
                proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                proxy_connect_timeout 5s;
                proxy_send_timeout 3600s;
                proxy_read_timeout 3600s;
                proxy_next_upstream error timeout http_502 http_503;
                proxy_next_upstream_tries 3;
                location / {{
                    proxy_pass http://registry;
                }}
            }}
        }}
        """)


@dataclass(frozen=True)
class ClusteredStores:
    """The stores of a scale-out replica, on the session's PostgreSQL and Azurite."""

    postgres: PostgresServer
    azurite: Azurite

    def environment(self) -> dict[str, str]:
        """What a `serve` process needs to run on stores of its own: a fresh database, a new container."""
        return {METADATA_DSN_VARIABLE: self.postgres.new_database(), BLOB_STORE_VARIABLE: self.azurite.new_store(),
                **self.azurite.environment()}


def cluster_status(dsn: str) -> dict:
    """`connected-registry cluster status --json` of the replicas on `dsn`: replicas, leases, backends."""
    result = run_cli("cluster", "status", "--metadata", dsn, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class Balancer:
    """nginx in front of `upstreams` (host:port), on a free loopback port; stopped by PID."""

    def __init__(self, workdir: Path, upstreams: list[str], port: int | None = None) -> None:
        require("nginx")
        self.workdir = workdir
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.access_log = workdir / "access.log"
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        self.config = workdir / "nginx.conf"
        self.config.write_text(balancer_config(workdir, self.port, upstreams, self.access_log))
        self.daemon = Daemon("nginx", ["nginx", "-p", workdir, "-c", self.config, "-e", workdir / "error.log"],
                             workdir / "nginx.out")
        self.daemon.wait_ready(lambda: port_open(self.port))

    @property
    def pid(self) -> int:
        return self.daemon.pid

    def requests(self) -> list[tuple[str, str, int, list[str]]]:
        """(method, uri, status, replicas tried in order) of every request nginx has finished."""
        rows = []
        for line in self.access_log.read_text().splitlines() if self.access_log.exists() else []:
            method, uri, status, *upstreams = line.split(" ", 3)
            rows.append((method, uri, int(status), [u.strip() for u in " ".join(upstreams).split(",") if u.strip()]))
        return rows

    def stop(self) -> None:
        self.daemon.stop()


class ReplicaSet:
    """`count` serve replicas on one PostgreSQL database (`dsn`) and one blob store (`blob_store`, with its
    credentials in `blob_env`), behind a Balancer. `.url` and `.host` are the balancer's: what clients use."""

    def __init__(self, workdir: Path, dsn: str, blob_store: str, blob_env: dict[str, str], count: int = 3,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.workdir, self.dsn, self.blob_store = workdir, dsn, blob_store
        arguments = ["--metadata", dsn, "--blob-store", blob_store, *(extra_args or [])]
        environment = {**blob_env, **(env or {})}
        self.replicas = [RegistryProcess(workdir / f"replica-{index}", extra_args=arguments, env=environment,
                                         wait=False, log_path=workdir / f"replica-{index}.log")
                         for index in range(count)]
        self.balancer: Balancer | None = None
        try:
            for replica in self.replicas:
                replica.wait_ready(timeout=60)
            self.balancer = Balancer(workdir / "nginx", [replica.host for replica in self.replicas])
        except BaseException:
            self.stop()
            raise
        self.url, self.host, self.port = self.balancer.url, self.balancer.host, self.balancer.port

    def forget_content(self) -> None:
        """Empty the registry between tests that share the set (repositories, blobs, manifests, tags, uploads,
        events, outbox; the instance's state and children stay): the bytes stay in the container, unreferenced."""
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            connection.execute(f"TRUNCATE {', '.join(CONTENT_TABLES)}")

    def requests(self):
        return self.balancer.requests()

    def replicas_answering(self, method: str, uri_part: str) -> dict[str, int]:
        """How many `method` requests whose URI holds `uri_part` each replica answered (the last one tried)."""
        counts: dict[str, int] = {}
        for row_method, uri, _, upstreams in self.requests():
            if row_method == method and uri_part in uri and upstreams:
                counts[upstreams[-1]] = counts.get(upstreams[-1], 0) + 1
        return counts

    def kill_random(self, chooser: random.Random) -> RegistryProcess:
        """SIGKILL one running replica, chosen by `chooser`; returns it."""
        victim = chooser.choice([replica for replica in self.replicas if replica.alive()])
        victim.kill(signal.SIGKILL)
        return victim

    def stop(self) -> None:
        if self.balancer is not None:
            self.balancer.stop()
        for replica in self.replicas:
            replica.stop()
