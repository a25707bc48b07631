"""Replicas coordinating through PostgreSQL (issue 18, point 3): real `serve` processes on one database and one data
directory. The work that must run once (here, a root's: the garbage collection schedule and event retention) runs
under a lease one replica holds, which moves to another within seconds of its holder's SIGKILL; `cluster status`
shows who holds what; a child's long poll on one replica wakes on a push at another (LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from connected_registry.storage import RegistryStore
from connected_registry.storage.gc import collect_garbage
from connected_registry.storage.postgres.database import WRITE_LOCK
from tests.support.http import Reply, request
from tests.support.cluster import cluster_status
from tests.support.oci import image_manifest
from tests.support.postgres import PostgresServer
from tests.support.processes import RegistryProcess, run_cli, wait_until
from tests.sync.instance_api import activate, push_blob, push_small_image

PUSHERS, PUSHES = 4, 120
ROOT_LEASES = ("garbage-collection", "event-retention")  # a root without configuration has no sync, no reporter


def holders(dsn: str) -> dict:
    return cluster_status(dsn)["leases"]


@pytest.fixture
def replicas(postgres: PostgresServer, tmp_path: Path):
    dsn = postgres.new_database()
    started = [RegistryProcess(tmp_path / "data", extra_args=["--metadata", dsn], wait=False) for _ in range(2)]
    try:
        for replica in started:
            replica.wait_ready()
        yield dsn, started
    finally:
        for replica in started:
            replica.stop()


def test_each_lease_has_one_holder_that_moves_within_seconds_of_a_sigkill(replicas):
    dsn, (first, second) = replicas
    wait_until(lambda: all(holders(dsn)[lease] for lease in ROOT_LEASES), timeout=15, what="the leases to be held")
    status = cluster_status(dsn)
    assert len(status["replicas"]) == 2
    assert {replica["address"] for replica in status["replicas"]} == {first.host, second.host}
    assert all(replica["blobStore"] == "filesystem" and not replica["stale"] for replica in status["replicas"])
    assert status["metadata"].startswith("postgresql (")
    assert status["leases"]["sync"] is None and status["leases"]["twin-reporter"] is None
    held = [lease for replica in status["replicas"] for lease in replica["leases"]]
    assert sorted(held) == sorted(ROOT_LEASES)  # each held once, by one replica

    holder_address = next(r["address"] for r in status["replicas"] if "event-retention" in r["leases"])
    holder, other = (first, second) if holder_address == first.host else (second, first)
    killed_at = time.monotonic()
    holder.kill()
    wait_until(lambda: all(holders(dsn)[lease] for lease in ROOT_LEASES)
               and {r["address"] for r in cluster_status(dsn)["replicas"] if r["leases"]} == {other.host},
               timeout=30, interval=0.2, what="the survivor to take every lease")
    moved_after = time.monotonic() - killed_at
    print(f"leases moved {moved_after:.1f} s after the SIGKILL of their holder")
    assert moved_after < 15
    survivor = next(r for r in cluster_status(dsn)["replicas"] if r["address"] == other.host)
    assert sorted(survivor["leases"]) == sorted(ROOT_LEASES)
    push_small_image(other, "factory/app", "1.0")  # it serves on


def test_a_long_poll_on_one_replica_wakes_on_a_push_at_another(replicas):
    _, (first, second) = replicas
    activate(first, "line1", "instance-1")
    head = json.loads(request(f"{first.url}/acr/connected/v1/registries/line1/events",
                              headers={"X-Instance-Id": "instance-1"}).body)["next"]
    poll = http.client.HTTPConnection("127.0.0.1", first.port, timeout=60)
    poll.request("GET", f"/acr/connected/v1/registries/line1/events?cursor={head}&wait=25",
                 headers={"X-Instance-Id": "instance-1"})
    assert request(f"{first.url}/v2/").status == 200  # a round trip after the poll was sent: it waits by now
    pushed_at = time.monotonic()
    push_small_image(second, "factory/app", "1.0")
    response = poll.getresponse()
    answered = {"reply": Reply(response.status, response.headers, response.read())}
    poll.close()
    assert answered["reply"].status == 200, answered["reply"].body
    events = json.loads(answered["reply"].body)["events"]
    assert [event["repository"] for event in events][-1] == "factory/app"
    woke_after = time.monotonic() - pushed_at
    print(f"the long poll on one replica answered {woke_after:.2f} s after the push at the other")
    assert woke_after < 10  # the poll waits up to 25 s: only the other replica's NOTIFY answers it this soon


def test_gc_on_one_replica_never_removes_a_blob_a_manifest_pushed_at_another_references(postgres: PostgresServer,
                                                                                         tmp_path: Path):
    """Before each of its runs the GC replica ages every blob's last use by three days (in the database), so every
    blob no manifest references yet is collectable; the pushing replica sends the same few layers again and again,
    each then named by a new manifest. Whatever manifest was accepted must keep every blob it names, bytes and all."""
    dsn = postgres.new_database()
    pusher = RegistryProcess(tmp_path / "data", extra_args=["--metadata", dsn])
    layers = [f"layer {n} shared by many images".encode() * 200 for n in range(8)]
    accepted: list[tuple[str, bytes, bytes]] = []
    pushes_done = threading.Event()

    def collect_until_pushes_are_done() -> int:
        async def collect() -> int:
            runs = 0
            async with RegistryStore(str(tmp_path / "data"), metadata=dsn) as store:
                while not pushes_done.is_set() or runs == 0:
                    with psycopg.connect(dsn) as connection:  # one transaction, in turn with the replicas' writes
                        connection.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                        connection.execute("UPDATE blobs SET last_used = last_used - 3 * 24 * 3600")
                    await collect_garbage(store)
                    runs += 1
            return runs
        return asyncio.run(collect())

    def push_images(client: int) -> None:
        for n in range(client, PUSHES, PUSHERS):
            config, layer = json.dumps({"n": n}).encode(), layers[n % len(layers)]
            if any(_push_image(pusher, "factory/app", str(n), config, layer) for _ in range(5)):  # as a client retries
                accepted.append((str(n), config, layer))

    try:
        with ThreadPoolExecutor(max_workers=1 + PUSHERS) as replicas_and_clients:
            runs = replicas_and_clients.submit(collect_until_pushes_are_done)
            clients = [replicas_and_clients.submit(push_images, client) for client in range(PUSHERS)]
            try:
                for client in clients:
                    client.result()
            finally:
                pushes_done.set()
            print(f"{runs.result()} gc runs raced {len(accepted)} accepted pushes of {PUSHES}")
        assert len(accepted) >= PUSHES // 4  # most pushes win the race to their manifest; a refused one was told so
        for tag, config, layer in accepted:
            manifest = json.loads(request(f"{pusher.url}/v2/factory/app/manifests/{tag}").body)
            for descriptor, data in zip([manifest["config"], *manifest["layers"]], (config, layer)):
                reply = request(f"{pusher.url}/v2/factory/app/blobs/{descriptor['digest']}")
                assert (reply.status, reply.body) == (200, data), f"tag {tag}: {descriptor['digest']}"
    finally:
        pusher.stop()


def _push_image(replica: RegistryProcess, repository: str, tag: str, config: bytes, layer: bytes) -> bool:
    """Pushes a one-layer image; False when the registry refused its manifest because a blob went in the meantime
    (MANIFEST_BLOB_UNKNOWN: the client pushes it again), which is what a collection racing a push may do."""
    for blob in (config, layer):
        push_blob(replica, repository, blob)
    body = image_manifest(config, [layer])
    reply = request(f"{replica.url}/v2/{repository}/manifests/{tag}", "PUT", body,
                    {"Content-Type": json.loads(body)["mediaType"]})
    if reply.status != 201 and b'"MANIFEST_BLOB_UNKNOWN"' in reply.body:
        return False
    assert reply.status == 201, reply.body
    return True


def test_cluster_status_says_what_to_give_when_there_is_no_shared_database(postgres: PostgresServer):
    alone = run_cli("cluster", "status", "--metadata", "sqlite", env={"ACR_REGISTRY_METADATA_DSN": None})
    assert alone.returncode == 1
    said = alone.stdout + alone.stderr
    assert "DISK_ERROR" in said and "PostgreSQL" in said and "--metadata" in said
    nowhere = f"postgresql://postgres:secret@127.0.0.1:{postgres.port}/nowhere"
    missing = run_cli("cluster", "status", "--metadata", nowhere)
    assert missing.returncode == 1
    said = missing.stdout + missing.stderr
    assert "nowhere on 127.0.0.1" in said and "secret" not in said
