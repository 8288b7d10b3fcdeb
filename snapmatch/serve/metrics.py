"""Prometheus metrics of one server: requests, latency per endpoint, lookup queue depth, rejects, batch sizes.

Each app has its own registry, so two apps in one process (tests, an app that
mounts two catalogs) never share or clash on counters.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("snapmatch_http_requests", "HTTP requests answered, by endpoint, method and status",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("snapmatch_http_request_seconds", "Time to answer a request, by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("snapmatch_lookup_queue_depth", "Lookup requests admitted and not yet answered",
                                 registry=self.registry)
        self.write_depth = Gauge("snapmatch_write_queue_depth", "Write requests admitted and not yet answered",
                                 registry=self.registry)
        self.rejected = Counter("snapmatch_rejected_requests", "Requests refused before any work, by reason",
                                ["reason"], registry=self.registry)
        self.batch_images = Histogram("snapmatch_model_batch_images", "Images per model call",
                                      buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint=endpoint, method=method, status=str(status)).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
