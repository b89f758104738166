"""
The gateway's own Prometheus metrics, on a registry of its own so tests
and several gateways in one process never share counters.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class GatewayMetrics:
    """
    Request counts by route, status and tenant; latency; bytes in and out;
    requests in flight; and the process's own CPU, memory and descriptors.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sealgw_http_requests",
            "HTTP requests answered, by route, method, status and tenant.",
            ["route", "method", "status", "tenant"],
            registry=r,
        )
        self.latency = Histogram(
            "sealgw_http_request_duration_seconds",
            "Time from request headers to the last byte of the answer.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.bytes_in = Counter(
            "sealgw_http_request_body_bytes",
            "Request body bytes received, as sent (compressed).",
            ["route"],
            registry=r,
        )
        self.bytes_out = Counter(
            "sealgw_http_response_bytes",
            "Response bytes sent.",
            ["route"],
            registry=r,
        )
        self.in_flight = Gauge(
            "sealgw_http_requests_in_flight",
            "Requests received and not yet answered.",
            registry=r,
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

    def observe(
        self,
        route: str,
        method: str,
        status: int,
        tenant: str,
        seconds: float,
        bytes_in: int,
        bytes_out: int,
    ) -> None:
        self.requests.labels(route, method, str(status), tenant).inc()
        self.latency.labels(route).observe(seconds)
        self.bytes_in.labels(route).inc(bytes_in)
        self.bytes_out.labels(route).inc(bytes_out)
