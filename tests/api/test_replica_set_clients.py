"""Real clients through three replicas behind nginx (round robin, no stickiness; PostgreSQL + Azurite): skopeo,
docker (the tests' dockerd) and ctr push and pull with the same tests as against one instance (test_real_clients.py,
test_skopeo.py: imported, not copied; `registry` here is the replica set), and the proof that one upload's requests
(POST, PATCH, PUT) land on different replicas and the PATCHes on all three."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest

from tests.api import test_real_clients as real_clients
from tests.api import test_skopeo as skopeo_tests
from tests.support.clients import rootfs_tar
from tests.support.layouts import make_image
from tests.support.processes import wait_until

UPLOAD = re.compile(r"/blobs/uploads/([0-9a-f-]{36})")


@pytest.fixture
def registry(request: pytest.FixtureRequest, replica_set):
    """The replica set, emptied for each test (the clients' tests push to the same names), and the module's
    containerd rid of the images it holds by the set's address (they name the same host in every test here)."""
    replica_set.forget_content()
    if "containerd" in request.fixturenames:
        containerd = request.getfixturevalue("containerd")
        names = [name for name in containerd.ctr("images", "ls", "-q").stdout.split()
                 if name.startswith(replica_set.host + "/")]
        if names:
            containerd.ctr("images", "rm", *names)
    return replica_set


test_ctr_pulls_and_unpacks_an_image_pushed_by_skopeo = real_clients.test_ctr_pulls_and_unpacks_an_image_pushed_by_skopeo
test_ctr_pushes_with_monolithic_puts_and_the_manifest_digest_is_kept = \
    real_clients.test_ctr_pushes_with_monolithic_puts_and_the_manifest_digest_is_kept
test_docker_pulls_an_image_pushed_by_skopeo_and_pushes_it_retagged_as_docker_schema2 = \
    real_clients.test_docker_pulls_an_image_pushed_by_skopeo_and_pushes_it_retagged_as_docker_schema2
test_docker_uploads_an_image_the_registry_has_never_seen = \
    real_clients.test_docker_uploads_an_image_the_registry_has_never_seen
test_skopeo_pushes_and_pulls_an_image_with_unchanged_digests = \
    skopeo_tests.test_skopeo_pushes_and_pulls_an_image_with_unchanged_digests
test_skopeo_copy_all_keeps_a_multiplatform_index = skopeo_tests.test_skopeo_copy_all_keeps_a_multiplatform_index
test_skopeo_inspect_lists_tags = skopeo_tests.test_skopeo_inspect_lists_tags


def uploads_by_replica(replica_set, since: int) -> dict[str, list[tuple[str, str]]]:
    """Each upload session's requests after log row `since`: (method, replica that answered), in order."""
    sessions: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for method, uri, _, upstreams in replica_set.requests()[since:]:
        match = UPLOAD.search(uri)
        if match and upstreams:
            sessions[match.group(1)].append((method, upstreams[-1]))
    return sessions


def assert_spread(replica_set, since: int, finished: int) -> None:
    """`finished` uploads ended with a PUT; their requests went to more than one replica, their PATCHes to all."""
    sessions = wait_until(lambda: _when_finished(uploads_by_replica(replica_set, since), finished),
                          what=f"{finished} finished uploads in the balancer's log")
    for upload, requests in sessions.items():
        assert len({replica for _, replica in requests}) > 1, (upload, requests)
    patches = {replica for requests in sessions.values() for method, replica in requests if method == "PATCH"}
    assert patches == {replica.host for replica in replica_set.replicas}, sessions


def _when_finished(sessions: dict, count: int):
    finished = {upload: requests for upload, requests in sessions.items() if requests[-1][0] == "PUT"}
    return finished if len(finished) >= count else None


def test_docker_and_skopeo_uploads_move_between_replicas_and_pull_back_whole(registry, dockerd, skopeo,
                                                                             tmp_path: Path):
    since = len(registry.requests())
    for index in range(3):  # docker: a PATCH per layer and per config, each upload's POST, PATCH, PUT round robin
        (tmp_path / f"rootfs-{index}.tar").write_bytes(rootfs_tar(bytes([index]) * 200_000))
        reference = f"{registry.host}/spread/docker-{index}:v1"
        dockerd.docker("import", str(tmp_path / f"rootfs-{index}.tar"), reference)
        assert "Pushed" in dockerd.docker("push", reference).stdout
    layout = tmp_path / "image"
    make_image(layout, "v1", layers=3, size="256K")
    skopeo_tests.run_skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", f"oci:{layout}:v1",
                            f"docker://{registry.host}/spread/skopeo:v1")

    assert_spread(registry, since, finished=3 * 2 + 4)
    for index in range(3):  # pulled back through the balancer by docker, from a fresh engine cache
        reference = f"{registry.host}/spread/docker-{index}:v1"
        dockerd.docker("rmi", reference)
        dockerd.docker("pull", reference)
