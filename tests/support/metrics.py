"""An instance's Prometheus metrics as a table: (metric name, sorted labels) -> value."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.support.http import request


def scrape(instance) -> dict[tuple[str, tuple], float]:
    """GET the instance's `metrics_url` (its own listener) and parse the answer."""
    reply = request(instance.metrics_url)
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/plain; version=")
    return samples(reply.body.decode())


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(metrics: dict, metric: str, **labels) -> float:
    return metrics.get((metric, tuple(sorted(labels.items()))), 0.0)
