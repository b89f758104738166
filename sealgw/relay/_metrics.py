"""
Prometheus metrics about upstream requests, in a registry the caller owns
(the daemon's C{/metrics} registry, or a fresh one per test).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from zope.interface import implementer

from sealgw.relay._interfaces import IRelayMetrics

#: Upstream latency spans sub-millisecond local writes to the 30 s default
#: response timeout; the default prometheus_client buckets stop at 10 s.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@implementer(IRelayMetrics)
class RelayMetrics:
    """
    C{sealgw_upstream_request_duration_seconds{upstream,status}}: one
    observation per request attempt (retries count separately), and
    C{sealgw_upstream_retries_total{upstream,reason}}.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        #: Where the spools' series go too (L{sealgw.spool._metrics}).
        self.registry = registry
        self.duration = Histogram(
            "sealgw_upstream_request_duration_seconds",
            "Time taken by one request attempt to an upstream, by outcome.",
            ["upstream", "status"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "sealgw_upstream_retries_total",
            "Upstream requests retried, by the reason the previous attempt failed.",
            ["upstream", "reason"],
            registry=registry,
        )

        # The series of each (upstream, status): found by name, a child
        # costs a lock and a validation for every request.  Bounded as the
        # labels are (configured upstreams, status labels of 100-599).
        self._durations: dict[tuple[str, str], Any] = {}

    def observe(self, upstream: str, status: str, seconds: float) -> None:
        child = self._durations.get((upstream, status))
        if child is None:
            child = self._durations[(upstream, status)] = self.duration.labels(
                upstream=upstream, status=status
            )
        child.observe(max(0.0, seconds))

    def retried(self, upstream: str, reason: str) -> None:
        self.retries.labels(upstream=upstream, reason=reason).inc()


@implementer(IRelayMetrics)
class NoMetrics:
    """
    Counts nothing; what an upstream built without metrics uses.
    """

    def observe(self, upstream: str, status: str, seconds: float) -> None:
        pass

    def retried(self, upstream: str, reason: str) -> None:
        pass
