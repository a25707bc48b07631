"""Replicas coordinating through PostgreSQL (issue 18, point 3): real `serve` processes on one database and one data
directory. The work that must run once (here, a root's: the garbage collection schedule and event retention) runs
under a lease one replica holds, which moves to another within seconds of its holder's SIGKILL; `cluster status`
shows who holds what; a child's long poll on one replica wakes on a push at another (LISTEN/NOTIFY)."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path

import pytest

from tests.support.http import Reply, request
from tests.support.postgres import PostgresServer
from tests.support.processes import RegistryProcess, run_cli, wait_until
from tests.sync.instance_api import activate, push_small_image

ROOT_LEASES = ("garbage-collection", "event-retention")  # a root without configuration has no sync, no reporter


def cluster_status(dsn: str) -> dict:
    result = run_cli("cluster", "status", "--metadata", dsn, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


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
