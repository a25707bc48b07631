"""GET /metrics (SPEC 12) on its own listener, after a push, a pull and a sync; request ids on responses and log lines;
the log level follows logging.logLevel at once."""

from __future__ import annotations

from pathlib import Path

from connected_registry.api.metrics import render
from connected_registry.api.requests import RequestStats
from tests.support.http import basic, request
from tests.support.layouts import make_image
from tests.support.metrics import samples, scrape, value
from tests.support.processes import wait_until
from tests.sync.hierarchy import READER, start_instance
from tests.sync.instance_api import ACCEPT, manifest_at, skopeo_push, status_of


def test_metrics_are_served_on_their_own_listener_and_not_on_the_registry_port(registry):
    """The registry's port is the one deployments publish on the host; /metrics (unauthenticated) is not there."""
    on_registry_port = request(f"{registry.url}/metrics")
    assert on_registry_port.status == 404 and on_registry_port.error_code == "UNSUPPORTED", on_registry_port.body
    assert request(f"{registry.url}/healthz").status == 200 and request(f"{registry.url}/readyz").status == 200
    metrics = scrape(registry)
    assert value(metrics, "connected_registry_http_requests_total", route="/healthz", method="GET", status="200") == 1
    assert request(registry.metrics_url.replace("/metrics", "/v2/")).status == 404  # and nothing else is there
    assert f"metrics at {registry.metrics_url}" in registry.log()


def test_counters_move_with_a_push_a_pull_and_a_sync(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")])
    # onDemand off: the layer must come by the sync, or the sync counters would not move
    leaf = start_instance(tmp_path, "line1-leaf", parent=root, repositories=["factory/*"], extra={"onDemand": False})
    try:
        before_root, before_leaf = scrape(root), scrape(leaf)
        layout = tmp_path / "layout"
        make_image(layout, "v1", layers=1, size="256K")
        skopeo_push(layout, "v1", root, "factory/app:v1")
        wait_until(lambda: manifest_at(leaf, "factory/app", "v1"), timeout=60, what="the image at the leaf")
        manifest = manifest_at(leaf, "factory/app", "v1").json()
        layer = manifest["layers"][0]
        pulled = request(f"{leaf.url}/v2/factory/app/blobs/{layer['digest']}", headers=basic(*READER))
        assert pulled.status == 200 and len(pulled.body) == layer["size"]
        after_root, after_leaf = scrape(root), scrape(leaf)

        manifests = "/v2/{name}/manifests/{reference}"
        blobs = "/v2/{name}/blobs/{digest}"
        assert value(after_root, "connected_registry_http_requests_total", route=manifests, method="PUT",
                     status="201") == 1
        assert after_root[("connected_registry_http_received_bytes_total", ())] >= \
            before_root[("connected_registry_http_received_bytes_total", ())] + layer["size"]
        # the leaf's sync fetched the layer from the root: the root sent it, the leaf counted it as downloaded
        assert value(after_root, "connected_registry_http_requests_total", route=blobs, method="GET", status="200") >= 1
        assert after_leaf[("connected_registry_sync_downloaded_bytes_total", ())] >= \
            before_leaf[("connected_registry_sync_downloaded_bytes_total", ())] + layer["size"]
        assert after_leaf[("connected_registry_sync_runs_total", ())] > before_leaf[("connected_registry_sync_runs_total", ())]
        # the pull at the leaf
        assert value(after_leaf, "connected_registry_http_requests_total", route=blobs, method="GET", status="200") == 1
        assert after_leaf[("connected_registry_http_sent_bytes_total", ())] >= \
            before_leaf[("connected_registry_http_sent_bytes_total", ())] + layer["size"]
        assert value(after_leaf, "connected_registry_connection_state", state="Online") == 1
        assert value(after_leaf, "connected_registry_outbox_entries", state="pending") == 0
        assert value(after_leaf, "connected_registry_info", instance_id=status_of(leaf)["activation"]["instanceId"],
            mode="ReadOnly", name="line1-leaf", version="0.1.0") == 1
        misses = value(after_leaf, "connected_registry_http_requests_total", route=manifests, method="GET", status="404")
        unknown = request(f"{leaf.url}/v2/factory/nothing/manifests/v9", headers={**basic(*READER), **ACCEPT})
        assert unknown.status == 404
        assert value(scrape(leaf), "connected_registry_http_requests_total", route=manifests, method="GET",
                     status="404") == misses + 1  # counted by the route template, never by repository name
    finally:
        leaf.stop()
        root.stop()


def test_request_ids_are_returned_and_on_the_log_line_and_the_level_changes_at_once(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", extra={"logging": {"logLevel": "Debug"}})
    try:
        given = request(f"{root.url}/v2/_catalog", headers={**basic(*READER), "X-Request-Id": "ops-4711"})
        assert given.status == 200 and given.headers["X-Request-Id"] == "ops-4711"
        wait_until(lambda: any("[ops-4711] GET /v2/_catalog -> 200" in line for line in root.process.output),
                   what="the request's log line with its id")
        made = request(f"{root.url}/v2/factory/app/manifests/v1", headers=basic(*READER))
        generated = made.headers["X-Request-Id"]
        assert made.status == 404 and len(generated) == 16 and generated != "ops-4711"
        forged = request(f"{root.url}/v2/", headers={**basic(*READER), "X-Request-Id": "x INFO forged\x85"})
        assert forged.headers["X-Request-Id"] != "x INFO forged\x85"  # nothing a log line could be forged with
        assert request(f"{root.url}/healthz").headers["X-Request-Id"]

        root.document["logging"] = {"logLevel": "Warning"}
        root.write_config()
        probes = iter(range(1000))

        def quiet() -> bool:  # a request after the change writes no debug line (one would show within ms)
            marker = f"probe-{next(probes)}"
            request(f"{root.url}/v2/", headers={**basic(*READER), "X-Request-Id": marker})
            try:
                wait_until(lambda: any(marker in line for line in root.process.output), timeout=1.5)
            except TimeoutError:
                return True
            return False

        wait_until(quiet, timeout=30, interval=0, what="debug lines to stop after logLevel Warning")
    finally:
        root.stop()


def test_the_on_demand_cache_counters_are_exported_when_the_status_document_has_them():
    document = {"name": "line1-leaf", "mode": "ReadOnly", "version": "0.1.0", "activation": {"status": "Active"},
                "connectionState": "Online", "statusDetails": [], "sync": {},
                "cache": {"hits": 7, "misses": 2, "bytesServed": 4096, "evictions": 1, "bytes": 1234, "enabled": True}}
    body, content_type = render(document, RequestStats())
    metrics = samples(body.decode())
    assert content_type.startswith("text/plain")
    assert metrics[("connected_registry_cache_hits_total", ())] == 7
    assert metrics[("connected_registry_cache_misses_total", ())] == 2
    assert metrics[("connected_registry_cache_evictions_total", ())] == 1
    assert metrics[("connected_registry_cache_bytes_served_total", ())] == 4096
    assert metrics[("connected_registry_cache_bytes", ())] == 1234  # what it holds now: a gauge
    assert not any(name.startswith("connected_registry_cache_enabled") for name, _ in metrics)
    without = samples(render({**document, "cache": None}, RequestStats())[0].decode())
    assert not any(name.startswith("connected_registry_cache") for name, _ in without)


def test_a_request_refused_before_routing_is_answered_without_a_traceback(registry):
    import socket

    with socket.create_connection(("127.0.0.1", registry.port), timeout=10) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: nine\r\n\r\n")
        assert b" 400 " in sock.recv(100)
    assert request(registry.metrics_url).status == 200
    assert "Unhandled exception" not in registry.log() and "requests.py" not in registry.log(), registry.log()
