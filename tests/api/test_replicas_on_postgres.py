"""Two `serve` processes on one PostgreSQL database (`--metadata DSN`) and one data directory are two replicas of one
registry: started together they migrate the schema once, and each serves what the other took at once, a moved tag
included. (The data directory can be shared: blobs are content-addressed files renamed into place, and upload
sessions are files named by their id. Each client's upload stays on one replica here; uploads that move between
replicas and leases for the work that must run once are the scale-out's next parts.)"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from connected_registry.storage.postgres.schema import SCHEMA_VERSION
from tests.support.http import request
from tests.support.oci import image_manifest
from tests.support.postgres import PostgresServer
from tests.support.processes import RegistryProcess
from tests.sync.instance_api import digest_at, push_blob, push_small_image, put_manifest


def _catalog(replica: RegistryProcess) -> list[str]:
    return json.loads(request(f"{replica.url}/v2/_catalog").body)["repositories"]


def test_two_replicas_started_together_migrate_once_and_serve_each_others_pushes(postgres: PostgresServer,
                                                                                  tmp_path: Path):
    dsn = postgres.new_database()
    replicas = [RegistryProcess(tmp_path / "data", extra_args=["--metadata", dsn], wait=False) for _ in range(2)]
    try:
        for replica in replicas:
            replica.wait_ready()
        first, second = replicas
        with psycopg.connect(dsn) as connection:
            assert connection.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert not (tmp_path / "data" / "metadata.db").exists()

        pushed = push_small_image(first, "factory/app", "1.0")
        assert digest_at(second, "factory/app", "1.0") == pushed
        layer = json.loads(request(f"{second.url}/v2/factory/app/manifests/1.0").body)["layers"][0]["digest"]
        blob = request(f"{second.url}/v2/factory/app/blobs/{layer}")
        assert (blob.status, blob.body) == (200, b"layer of factory/app")

        other = push_small_image(second, "factory/other", "2.0")
        assert digest_at(first, "factory/other", "2.0") == other
        assert _catalog(first) == _catalog(second) == ["factory/app", "factory/other"]

        assert digest_at(second, "factory/app", "1.0") == pushed  # read again after its own last write
        config = b'{"moved": true}'
        push_blob(first, "factory/app", config)
        moved = put_manifest(first, "factory/app", "1.0", image_manifest(config, [b"layer of factory/app"]))
        assert moved != pushed
        assert digest_at(second, "factory/app", "1.0") == moved  # at once: no replica serves the tag it had
    finally:
        for replica in replicas:
            replica.stop()
