"""Caps on open upload sessions (issue 14, finding 10), through a real `serve` process: a token may hold 64 open
sessions and a repository 256, beyond that POST answers 429 TOOMANYREQUESTS naming the cap; the status document
counts the open sessions; a session cancelled or abandoned no longer holds a place."""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.http import basic, request
from tests.sync.hierarchy import WRITER, client_tokens, start_instance, token
from tests.sync.instance_api import status_of

PER_TOKEN, PER_REPOSITORY = 64, 256
PUSHERS = [(f"pusher{number}", f"pusher{number}-password") for number in range(1, 5)]


def start_root(base: Path):
    tokens = client_tokens()
    for name, password in PUSHERS:
        tokens[name] = token(password, ["repositories/factory/*/content/write", "repositories/factory/*/content/read"])
    return start_instance(base, "factory-root", extra={"tokens": tokens})


def open_session(instance, credentials: tuple[str, str], repository: str):
    return request(f"{instance.url}/v2/{repository}/blobs/uploads/", "POST", b"", basic(*credentials))


def open_sessions(instance, credentials: tuple[str, str], repository: str, count: int) -> list[str]:
    """`count` sessions, each answered 202; their paths."""
    paths = []
    for _ in range(count):
        reply = open_session(instance, credentials, repository)
        assert reply.status == 202, (reply.status, reply.body)
        paths.append(urlsplit(reply.headers["Location"]).path)
    return paths


def open_count(instance) -> int:
    document = status_of(instance)
    assert document["uploadSessions"]["maxPerToken"] == PER_TOKEN
    assert document["uploadSessions"]["maxPerRepository"] == PER_REPOSITORY
    return document["uploadSessions"]["open"]


def test_a_token_past_its_cap_of_open_upload_sessions_gets_429_naming_the_cap(tmp_path: Path):
    root = start_root(tmp_path)
    try:
        paths = open_sessions(root, WRITER, "factory/app", PER_TOKEN // 2)
        paths += open_sessions(root, WRITER, "factory/other", PER_TOKEN // 2)  # the cap is the token's, anywhere

        refused = open_session(root, WRITER, "factory/third")
        assert refused.status == 429 and refused.error_code == "TOOMANYREQUESTS", refused.body
        assert f"token '{WRITER[0]}'" in refused.error_message and f"cap is {PER_TOKEN} per token" in \
            refused.error_message, refused.error_message
        assert open_count(root) == PER_TOKEN  # the refused one left nothing behind
        assert len(os.listdir(root.process.data_dir / "uploads")) == PER_TOKEN
        assert open_session(root, PUSHERS[0], "factory/app").status == 202  # another token is not held up

        # A session cancelled, or one left empty for over an hour, no longer holds a place.
        assert request(f"{root.url}{paths[0]}", "DELETE", headers=basic(*WRITER)).status == 204
        paths[0] = open_sessions(root, WRITER, "factory/app", 1)[0]
        assert open_session(root, WRITER, "factory/app").status == 429
        abandoned = paths[1]
        an_hour_ago = time.time() - 3700
        os.utime(root.process.data_dir / "uploads" / abandoned.rsplit("/", 1)[1], (an_hour_ago, an_hour_ago))
        open_sessions(root, WRITER, "factory/app", 1)
        assert request(f"{root.url}{abandoned}", headers=basic(*WRITER)).error_code == "BLOB_UPLOAD_UNKNOWN"
        assert open_count(root) == PER_TOKEN + 1
    finally:
        root.stop()


def test_a_repository_past_its_cap_of_open_upload_sessions_gets_429_naming_the_cap(tmp_path: Path):
    root = start_root(tmp_path)
    try:
        for credentials in [WRITER, *PUSHERS[:3]]:  # four tokens, each within its own cap, fill the repository's
            open_sessions(root, credentials, "factory/app", PER_TOKEN)

        refused = open_session(root, PUSHERS[3], "factory/app")
        assert refused.status == 429 and refused.error_code == "TOOMANYREQUESTS", refused.body
        assert "repository factory/app" in refused.error_message and \
            f"cap is {PER_REPOSITORY} per repository" in refused.error_message, refused.error_message
        assert open_count(root) == PER_REPOSITORY
        assert open_session(root, PUSHERS[3], "factory/other").status == 202  # other repositories are not held up
        assert open_count(root) == PER_REPOSITORY + 1
    finally:
        root.stop()
