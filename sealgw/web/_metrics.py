"""
The gateway's own Prometheus metrics, on a registry of its own so tests
and several gateways in one process never share counters.

With worker processes each worker's values live in prometheus_client's
multiprocess files, and C{/metrics} sums them (L{daemon_registry}).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

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


#: The methods that get a C{method} label of their own; any other method a
#: client invents is counted as C{other}, so it cannot add series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


class GatewayMetrics:
    """
    Request counts by route, status and tenant; latency; bytes in and out;
    requests in flight; connections per listener; and the process's own
    CPU, memory and descriptors.

    Every label value is bounded by the code or the configuration, never
    by what a client sends: C{route} is a route's name or C{unmatched},
    C{method} one of L{METHODS} or C{other}, C{status} a status this
    gateway answers, C{tenant} one the identity was allowed (or empty
    before admission), C{listener} a configured endpoint, C{reason} a
    sample limit's name (L{sealgw.signals.limits.REASONS}).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # The children of one request's series, by its labels: looking
        # them up by name takes a lock and a validation per metric.
        self._children: dict[tuple[str, str, int, str], tuple[Any, Any, Any, Any]] = {}
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
            # With workers: the live workers' own, summed.
            multiprocess_mode="livesum",
        )
        self.connections_open = Gauge(
            "sealgw_connections_open",
            "Connections open on each listener.",
            ["listener"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections_refused = Counter(
            "sealgw_connections_refused",
            "Connections closed as soon as they were accepted, because the "
            "listener had max_connections open.",
            ["listener"],
            registry=r,
        )
        self.header_timeouts = Counter(
            "sealgw_http_header_timeouts",
            "Connections closed because a request head did not arrive whole "
            "within the listener's header_timeout.",
            ["listener"],
            registry=r,
        )
        self.series_refused = Counter(
            "sealgw_series_refused",
            "Series left out of pushes for a sample limit (docs/limits.rst), by "
            "route and the limit.",
            ["route", "reason"],
            registry=r,
        )
        self.pushes_refused = Counter(
            "sealgw_pushes_refused",
            "Pushes answered 400 for a sample limit, in whole or in part, by "
            "route and the limit.",
            ["route", "reason"],
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
        method = method_label(method)
        key = (route, method, status, tenant)
        children = self._children.get(key)
        if children is None:
            # One entry per series of the requests counter, so as bounded
            # as its labels are.
            children = self._children[key] = (
                self.requests.labels(route, method, str(status), tenant),
                self.latency.labels(route),
                self.bytes_in.labels(route),
                self.bytes_out.labels(route),
            )
        requests, latency, received, sent = children
        requests.inc()
        latency.observe(seconds)
        received.inc(bytes_in)
        sent.inc(bytes_out)


def daemon_registry(directory: str, collectors: Iterable[Collector] = ()) -> CollectorRegistry:
    """
    What C{/metrics} shows when the gateway runs as several worker
    processes: every worker's series read from the multiprocess files in
    C{directory} and summed (counters and histograms of workers that have
    ended included, gauges of live workers only), and C{collectors}.

    Each worker's own C{process_*} and C{python_*} series are left out:
    one worker's CPU and memory, answering for the whole daemon, would
    mislead.
    """
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    for collector in collectors:
        registry.register(collector)
    return registry
