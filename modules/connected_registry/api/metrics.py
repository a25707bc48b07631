"""GET /metrics (SPEC 12): Prometheus text, read at scrape time from what the instance already keeps: the
listener's request counts and the reported document (sync progress and errors, outbox depth, the on-demand
cache's counters when the document has a `cache` section, the parent link's bytes by direction). Nothing is
counted twice, and prometheus_client is imported at the first scrape, not at start (idle memory).

It has a listener of its own (port 9600, IoT Edge's convention for module metrics): the metrics collector reaches it
on the module network, while the registry's port, which deployments publish on the host, does not serve it."""

from __future__ import annotations

import re
from collections.abc import Iterator

from aiohttp import web

from connected_registry.api.context import CONTEXT, context
from connected_registry.api.requests import REQUEST_STATS, RequestStats

PREFIX = "connected_registry"
CONNECTION_STATES = ("Online", "Offline", "Syncing", "Unhealthy")
SEVERITIES = ("Error", "Warning", "Information")
# Cache fields that only grow are counters; anything else numeric in the section is a gauge.
_CACHE_COUNTER = re.compile(r"(hits|misses|evictions|fills|errors|bytes_served|bytes_filled|bytes_fetched_on_demand|bytes_evicted)$")


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


class InstanceCollector:
    """A prometheus_client collector over one instance's state, built per scrape."""

    def __init__(self, document: dict, requests: RequestStats) -> None:
        self.document = document
        self.requests = requests

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

        document, requests = self.document, self.requests
        info = GaugeMetricFamily(f"{PREFIX}_info", "This instance: name, mode, version and instanceId",
                                 labels=["name", "mode", "version", "instance_id"])
        info.add_metric([str(document.get("name")), str(document.get("mode")), str(document.get("version")),
                         str((document.get("activation") or {}).get("instanceId"))], 1)
        yield info
        yield _gauge("activation_active", "1 when this instance is Active at its parent (a root always is)",
                     (document.get("activation") or {}).get("status") == "Active")
        state = GaugeMetricFamily(f"{PREFIX}_connection_state", "1 for the current connectionState (SPEC 4)",
                                  labels=["state"])
        for name in CONNECTION_STATES:
            state.add_metric([name], 1 if document.get("connectionState") == name else 0)
        yield state
        details = GaugeMetricFamily(f"{PREFIX}_status_details", "Status details standing now, by severity",
                                    labels=["severity"])
        for severity in SEVERITIES:
            details.add_metric([severity], sum(1 for d in document.get("statusDetails") or []
                                               if d.get("severity") == severity))
        yield details

        by_route = CounterMetricFamily(f"{PREFIX}_http_requests", "HTTP requests answered, by route template, "
                                       "method and status", labels=["route", "method", "status"])
        for (route, method, status), count in sorted(requests.requests.items()):
            by_route.add_metric([route, method, status], count)
        yield by_route
        latency = SummaryMetricFamily(f"{PREFIX}_http_request_duration_seconds", "Time spent answering, by route",
                                      labels=["route"])
        for route, count in sorted(requests.count.items()):
            latency.add_metric([route], count, requests.seconds[route])
        yield latency
        yield _counter("http_received_bytes", "Request body bytes received", requests.bytes_in)
        yield _counter("http_sent_bytes", "Response body bytes sent", requests.bytes_out)

        sync = document.get("sync") or {}
        yield _counter("sync_downloaded_bytes", "Bytes copied from the parent", sync.get("bytesDownloaded") or 0)
        yield _counter("sync_uploaded_bytes", "Bytes sent up to the parent", sync.get("bytesUploaded") or 0)
        yield _counter("sync_runs", "Sync rounds that finished (reconciles and applied event batches)",
                       sync.get("runs") or 0)
        yield _counter("sync_errors", "Sync iterations that failed (they are retried with backoff)",
                       sync.get("errors") or 0)
        operation = sync.get("operation") or {}
        yield _gauge("sync_in_progress", "1 while a sync-now operation runs", operation.get("state") == "Running")
        yield _gauge("repositories", "Repositories stored here", sync.get("repositories") or 0)
        outbox = GaugeMetricFamily(f"{PREFIX}_outbox_entries", "Local pushes and deletes not yet at the parent: "
                                   "pending, or parked after the parent refused them", labels=["state"])
        outbox.add_metric(["pending"], sync.get("pendingUploads") or 0)
        outbox.add_metric(["parked"], sync.get("rejectedUploads") or 0)
        yield outbox
        yield from self._cache(document.get("cache"))
        yield from self._parent_link((document.get("parent") or {}).get("bandwidth"))

    def _parent_link(self, bandwidth) -> Iterator:
        """The byte budget of the parent link (the status document's parent.bandwidth), on an instance with a parent."""
        from prometheus_client.core import CounterMetricFamily  # deferred to the first scrape, as above

        if not isinstance(bandwidth, dict):
            return
        moved = CounterMetricFamily(f"{PREFIX}_parent_link_bytes", "Bytes over the parent link (blobs and manifests, "
                                    "both ways; control calls not counted), by direction", labels=["direction"])
        moved.add_metric(["received"], bandwidth.get("bytesReceived") or 0)
        moved.add_metric(["sent"], bandwidth.get("bytesSent") or 0)
        yield moved
        yield _gauge("parent_link_limit_bytes_per_second", "The parent link's byte budget in force now (0: unlimited)",
                     bandwidth.get("effective") or 0)
        yield _gauge("parent_link_used_bytes_per_second", "Bytes per second the parent link carried lately",
                     bandwidth.get("currentBytesPerSecond") or 0)

    def _cache(self, cache) -> Iterator:
        """The pull-through cache's section of the status document, whatever counters it carries."""
        if not isinstance(cache, dict):
            return
        for key, value in sorted(cache.items()):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            name = f"cache_{_snake(key)}"
            help_text = f"On-demand cache: {key} (status document's cache.{key})"
            yield _counter(name, help_text, value) if _CACHE_COUNTER.search(name) else _gauge(name, help_text, value)


def _counter(name: str, help_text: str, value: float):
    from prometheus_client.core import CounterMetricFamily

    return CounterMetricFamily(f"{PREFIX}_{name}", help_text, value=value)


def _gauge(name: str, help_text: str, value: float):
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(f"{PREFIX}_{name}", help_text, value=float(value))


def render(document: dict, requests: RequestStats) -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(InstanceCollector(document, requests))
    return generate_latest(registry), CONTENT_TYPE_LATEST


async def metrics(request: web.Request) -> web.Response:
    body, content_type = render(context(request).status_document(), request.app[REQUEST_STATS])
    return web.Response(body=body, headers={"Content-Type": content_type})


def create_metrics_app(registry_app: web.Application) -> web.Application:
    """The metrics listener's application: /metrics over the registry application's instance and request counts."""
    app = web.Application()
    app[CONTEXT] = registry_app[CONTEXT]
    app[REQUEST_STATS] = registry_app[REQUEST_STATS]
    app.router.add_get("/metrics", metrics)
    return app
