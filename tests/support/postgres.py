"""A real PostgreSQL server for tests (Debian's `postgresql`): `initdb` into a temporary folder, `pg_ctl` on a free
loopback port with its socket in that folder, stopped by PID, the folder removed. PostgreSQL refuses to run as root,
so as root (CI) it runs as the `postgres` user, in a folder that user owns. Each test or module gets a fresh database
(`new_database`, CREATE DATABASE is quick); the server lives for the session.

fsync is off on this test server: the tests stop it only after they are done with it, and it makes CREATE
DATABASE and every commit much faster on a shared disk. The registry's own durability (bytes before the commit)
is the registry's and is tested through `Disk`.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
from itertools import count
from pathlib import Path

import psycopg
import pytest

from tests.support.clients import process_exists
from tests.support.processes import free_port, wait_until

METADATA_DSN_VARIABLE = "ACR_REGISTRY_METADATA_DSN"
# A test, class or module marked with this runs once on each metadata store (the autouse `metadata_backend` fixture).
both_metadata_backends = pytest.mark.parametrize("metadata_backend", ["sqlite", "postgresql"], indirect=True)
_names = count(1)


def _binary(name: str) -> str:
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda path: int(path.split("/")[4]))
    found = versions[-1] if versions else shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is missing: install Debian's `postgresql` (scripts/test.sh does)")
    return found


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PostgresServer:
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="cr-postgres-"))  # under /tmp: the postgres user reaches it
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self.data = self.directory / "data"
        self.port = free_port()
        self.pid: int | None = None
        self.pid_at_start: int | None = None
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        subprocess.run(_as_server_user([_binary("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                                        "-E", "UTF8", "--no-sync"]), check=True, capture_output=True)
        options = (f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c full_page_writes=off -c max_connections=200")
        subprocess.run(_as_server_user([_binary("pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                                        str(self.directory / "server.log"), "-w", "start"]),
                       check=True, capture_output=True, timeout=60)
        self.pid = self.pid_at_start = int((self.data / "postmaster.pid").read_text().split()[0])

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its DSN."""
        name = f"registry_{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        """Immediate shutdown (SIGQUIT: no checkpoint, the folder is thrown away) by PID, waited for; then the folder
        goes."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGQUIT)
                wait_until(lambda: not process_exists(self.pid), timeout=30,
                           what=f"PostgreSQL (pid {self.pid}) to stop")
            except ProcessLookupError:
                pass
            self.pid = None
        shutil.rmtree(self.directory, ignore_errors=True)


def schema_version(dsn: str) -> int | None:
    """The version a metadata store migrated the database to; None when none has opened it."""
    with psycopg.connect(dsn) as connection:
        if connection.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
            return None
        return connection.execute("SELECT version FROM schema_version").fetchone()[0]
