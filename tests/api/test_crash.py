"""SIGKILL in the middle of monolithic and chunked pushes: every acknowledged write survives intact,
nothing half-written is ever served, and interrupted chunked uploads resume from what is on disk."""

from __future__ import annotations

import random
from pathlib import Path

from tests.support.oci import sha256
from tests.support.processes import RegistryProcess, wait_until
from tests.support.pushers import Pusher, check_every_blob_file_matches_its_digest, connect, exchange

ROUNDS = 5


def test_sigkill_during_pushes_loses_no_acknowledged_write(tmp_path: Path):
    data_dir = tmp_path / "data"
    acknowledged: list = []
    total_checked = 0
    for round_number in range(ROUNDS):
        registry = RegistryProcess(data_dir)
        sessions: list = []
        pushers = [Pusher(registry, f"crash/repo{n}", round_number * 10 + n, acknowledged, sessions) for n in range(3)]
        for pusher in pushers:
            pusher.start()
        # The kill lands after a random number of acknowledgements, with other pushes mid-transfer.
        target = len(acknowledged) + random.Random(round_number).randint(3, 20)
        wait_until(lambda: len(acknowledged) >= target, timeout=60, what="acknowledged pushes", interval=0.001)
        registry.kill()
        for pusher in pushers:
            pusher.join(timeout=30)

        registry = RegistryProcess(data_dir)
        try:
            connection = connect(registry)
            for kind, repository, reference, content in acknowledged:
                section = "blobs" if kind == "blob" else "manifests"
                response, body = exchange(connection, "GET", f"/v2/{repository}/{section}/{reference}")
                assert response.status == 200, f"acknowledged {kind} {repository}:{reference} lost"
                assert body == content, f"acknowledged {kind} {repository}:{reference} changed"
                total_checked += 1
            # Interrupted chunked uploads: the status tells what is on disk and the upload can finish.
            for repository, location, acknowledged_bytes, data in sessions[-3:]:
                response, _ = exchange(connection, "GET", location)
                if response.status == 404:
                    continue  # that upload completed before the kill
                assert response.status == 204
                have = int(response.getheader("Range").split("-")[1]) + 1
                assert have >= acknowledged_bytes
                rest = data[have:]
                path = f"{location}&digest={sha256(data)}" if "?" in location else f"{location}?digest={sha256(data)}"
                response, _ = exchange(connection, "PUT", path, rest,
                                       {"Content-Range": f"{have}-{len(data) - 1}"} if rest else {})
                assert response.status == 201, "a resumed upload must complete with the right digest"
        finally:
            registry.stop()
        total_checked += check_every_blob_file_matches_its_digest(data_dir)
    assert total_checked > 20
