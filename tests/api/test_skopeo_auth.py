"""Real skopeo with --creds against a registry with tokens (SPEC 10)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.api.auth_fixtures import PASSWORDS, start_secured
from tests.support.layouts import make_image


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    registry = start_secured(tmp_path_factory.mktemp("skopeo-auth"))
    try:
        yield registry
    finally:
        registry.process.stop()


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("layout") / "image"
    make_image(path, "v1", layers=2, size="64K")
    return path


def skopeo_copy(source: str, destination: str, *creds: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["skopeo", "copy", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false", *creds,
         source, destination],
        capture_output=True, text=True, timeout=120,
    )


def test_writer_pushes_and_reader_pulls_but_cannot_push(secured, layout, tmp_path):
    pushed = skopeo_copy(f"oci:{layout}:v1", f"docker://{secured.host}/factory/app:v1",
                         "--dest-creds", f"writer1:{PASSWORDS['writer1']}")
    assert pushed.returncode == 0, pushed.stderr

    pulled = skopeo_copy(f"docker://{secured.host}/factory/app:v1", f"oci:{tmp_path / 'pulled'}:v1",
                         "--src-creds", f"reader1:{PASSWORDS['reader1']}")
    assert pulled.returncode == 0, pulled.stderr

    refused = skopeo_copy(f"oci:{layout}:v1", f"docker://{secured.host}/factory/app:v2",
                          "--dest-creds", f"reader1:{PASSWORDS['reader1']}")
    assert refused.returncode != 0
    assert "denied" in refused.stderr.lower() or "unauthorized" in refused.stderr.lower(), refused.stderr


def test_reader_cannot_read_outside_its_scope(secured, layout, tmp_path):
    pushed = skopeo_copy(f"oci:{layout}:v1", f"docker://{secured.host}/factory/secret:v1",
                         "--dest-creds", f"writer1:{PASSWORDS['writer1']}")
    assert pushed.returncode == 0, pushed.stderr
    refused = skopeo_copy(f"docker://{secured.host}/factory/secret:v1", f"oci:{tmp_path / 'x'}:v1",
                          "--src-creds", f"reader1:{PASSWORDS['reader1']}")
    assert refused.returncode != 0
    assert "unauthorized" in refused.stderr.lower() or "denied" in refused.stderr.lower(), refused.stderr


@pytest.mark.parametrize("creds", ["reader1:wrong-password", f"disabled1:{PASSWORDS['disabled1']}"])
def test_wrong_password_and_disabled_token_fail(secured, layout, tmp_path, creds):
    skopeo_copy(f"oci:{layout}:v1", f"docker://{secured.host}/factory/app:v1",
                "--dest-creds", f"writer1:{PASSWORDS['writer1']}")
    refused = skopeo_copy(f"docker://{secured.host}/factory/app:v1", f"oci:{tmp_path / 'x'}:v1", "--src-creds", creds)
    assert refused.returncode != 0
    assert "invalid username or password" in refused.stderr or "unauthorized" in refused.stderr.lower(), refused.stderr


def test_a_token_rotated_to_its_second_password_pulls(secured, layout, tmp_path):
    skopeo_copy(f"oci:{layout}:v1", f"docker://{secured.host}/factory/app:v1",
                "--dest-creds", f"writer1:{PASSWORDS['writer1']}")
    pulled = skopeo_copy(f"docker://{secured.host}/factory/app:v1", f"oci:{tmp_path / 'pulled'}:v1",
                         "--src-creds", f"rotated1:{PASSWORDS['rotated1']}")
    assert pulled.returncode == 0, pulled.stderr
