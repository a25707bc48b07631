"""Floods anybody can send, against one real `serve` process: HTTP that aiohttp's parser refuses (a header over
8190 bytes, a duplicate Content-Length, Content-Length with Transfer-Encoding, ...) and clients that hang up in
the middle of a body (a token form, a manifest, an upload chunk). Neither may flood the log: no traceback, nothing
at ERROR; at the default level nothing at all, at Debug one short line per refused request and at most two per
hang-up (what happened, and the request's own line). A hang-up is counted in /metrics as status 499 (the client
closed the request), never as a 500 that no client was sent."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.faults.conftest import figures
from tests.support.http import basic, bearer, request
from tests.support.metrics import scrape
from tests.support.processes import wait_until
from tests.support.raw_client import is_parser_rejection, raw_exchange
from tests.sync.hierarchy import WRITER, start_instance

REPOSITORY = "flood/app"
ROUNDS = 20
MALFORMED = [
    b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 9000 + b"\r\n\r\n",
    b"GET /v2/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PUT /v2/flood/app/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
    b"PUT /v2/flood/app/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
    b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Control: a\x01b\r\n\r\n",
]
MAX_LINE = 300


CUT_ROUTES = {("/acr/oauth2/token", "POST"), ("/v2/{name}/manifests/{reference}", "PUT"),
              ("/v2/{name}/blobs/uploads/{upload_id}", "PATCH")}


def _statuses_of_cut_requests(metrics: dict) -> dict[str, float]:
    """{status: requests} over the routes the hang-ups went to."""
    counts: dict[str, float] = {}
    for (name, labels), number in metrics.items():
        labels = dict(labels)
        if name == "connected_registry_http_requests_total" and (labels["route"], labels["method"]) in CUT_ROUTES:
            counts[labels["status"]] = counts.get(labels["status"], 0) + number
    return counts


def _cut_bodies(port: int, heads: list[bytes], barrier) -> None:
    """Open a connection per head, send it with half its body, let the handlers start reading, hang up."""
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in heads]
    try:
        for sock, head in zip(sockets, heads):
            sock.sendall(head + b"x" * 3000)
        barrier()
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize("level", ["Information", "Debug"])
def test_malformed_http_and_hang_ups_cost_the_log_a_line_at_most_and_no_false_500(tmp_path: Path, level):
    registry = start_instance(tmp_path, "factory-root", extra={"logging": {"logLevel": level}})
    port = registry.process.port
    try:
        token = request(f"{registry.url}/acr/oauth2/token?scope=repository:{REPOSITORY}:pull,push",
                        headers=basic(*WRITER)).json()["token"]
        authorization = "Authorization: Bearer %s\r\n" % token
        session = request(f"{registry.url}/v2/{REPOSITORY}/blobs/uploads/", "POST", b"", bearer(token))
        assert session.status == 202, session.body
        cut_heads = [
            b"POST /acr/oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\n",
            (f"PUT /v2/{REPOSITORY}/manifests/v1 HTTP/1.1\r\nHost: x\r\n{authorization}Content-Length: 60000\r\n"
             "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n\r\n").encode(),
            (f"PATCH {session.headers['Location']} HTTP/1.1\r\nHost: x\r\n{authorization}"
             "Content-Length: 60000\r\n\r\n").encode(),
        ]

        def barrier() -> None:  # two full round trips on other connections: every handler is reading by now
            for _ in range(2):
                assert request(f"{registry.url}/healthz").status == 200

        before = len(registry.process.output)
        malformed = cut = 0
        for _ in range(ROUNDS):
            for data in MALFORMED:
                answers = raw_exchange(port, data, responses=1)
                assert answers and is_parser_rejection(answers[0]), [answer.describe() for answer in answers]
                malformed += 1
            heads = cut_heads * 2
            _cut_bodies(port, heads, barrier)
            cut += len(heads)
        figures["hostile: malformed HTTP requests tried"] += malformed
        figures["hostile: hang-ups mid-body tried"] += cut

        counts = wait_until(lambda: (lambda c: c if sum(c.values()) >= cut else None)(
            _statuses_of_cut_requests(scrape(registry))), timeout=20, what=f"the {cut} hang-ups counted")
        assert counts == {"499": cut}, counts
        added = registry.process.output[before:]
        assert not [line for line in added if "Traceback" in line or " ERROR " in line or " WARNING " in line], added
        assert all(len(line) <= MAX_LINE for line in added), [line for line in added if len(line) > MAX_LINE]
        refused = [line for line in added if "refused malformed HTTP" in line]
        went_away = [line for line in added if "the client went away" in line]
        if level == "Information":
            assert added == [], added
        else:
            assert len(refused) == malformed and len(went_away) == cut, added
            others = [line for line in added if line not in refused and line not in went_away]
            assert len([line for line in others if "-> 499" in line]) == cut, others
        figures["hostile: malformed HTTP requests held (a line at most)"] += malformed
        figures["hostile: hang-ups mid-body held (counted 499, not 500)"] += cut
    finally:
        registry.stop()
