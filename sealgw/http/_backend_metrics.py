"""
The Prometheus series of upstreams' backends, labelled by upstream, kind
(C{pushes}, C{reads}) and backend (address and port): bounded by the
configured URLs and the addresses kept per name
(L{sealgw.http._resolution.MAX_ADDRESSES}).
"""

from __future__ import annotations

import weakref
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from zope.interface import implementer

from sealgw.http._backends import Backend, IBackendMetrics


class BackendMetrics:
    """
    C{sealgw_upstream_backend_up} (1 when requests may go to the backend,
    0 while it is set aside), C{sealgw_upstream_backend_in_flight} and
    C{sealgw_upstream_backend_failures_total}.  One per registry: get it
    with L{backend_metrics}.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge(
            "sealgw_upstream_backend_up",
            "1 when requests may go to an upstream's backend, 0 while it is set aside.",
            ["upstream", "kind", "backend"],
            registry=registry,
            multiprocess_mode="liveall",
        )
        self.in_flight = Gauge(
            "sealgw_upstream_backend_in_flight",
            "Requests in flight to an upstream's backend.",
            ["upstream", "kind", "backend"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.failures = Counter(
            "sealgw_upstream_backend_failures",
            "Requests to an upstream's backend that failed: no connection, no answer "
            "in time, or 502, 503 or 504.",
            ["upstream", "kind", "backend"],
            registry=registry,
        )

    def for_upstream(self, upstream: str, kind: str) -> IBackendMetrics:
        """
        The series of one upstream's backends of one kind.
        """
        return _Upstream(self, upstream, kind)


@implementer(IBackendMetrics)
class _Upstream:
    """
    One upstream's series, each backend's children found once: looking
    them up by label takes a lock and a validation each time, and a
    backend's state is set twice per request.
    """

    def __init__(self, families: BackendMetrics, upstream: str, kind: str) -> None:
        self._families = families
        self._labels = (upstream, kind)
        self._children: dict[Backend, tuple[Any, Any, Any]] = {}

    def _of(self, backend: Backend) -> tuple[Any, Any, Any]:
        children = self._children.get(backend)
        if children is None:
            labels = (*self._labels, backend.label)
            children = self._children[backend] = (
                self._families.up.labels(*labels),
                self._families.in_flight.labels(*labels),
                self._families.failures.labels(*labels),
            )
        return children

    def state(self, backend: Backend, usable: bool, in_flight: int) -> None:
        up, flying, _ = self._of(backend)
        up.set(1 if usable else 0)
        flying.set(in_flight)

    def failed(self, backend: Backend) -> None:
        self._of(backend)[2].inc()

    def removed(self, backend: Backend) -> None:
        self._children.pop(backend, None)
        labels = (*self._labels, backend.label)
        for family in (self._families.up, self._families.in_flight, self._families.failures):
            try:
                family.remove(*labels)
            except KeyError:
                pass


_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, BackendMetrics] = (
    weakref.WeakKeyDictionary()
)


def backend_metrics(registry: CollectorRegistry) -> BackendMetrics:
    """
    The backend series of C{registry}, registered the first time they are
    asked for: the push relay and the read path both ask.
    """
    found = _BY_REGISTRY.get(registry)
    if found is None:
        found = _BY_REGISTRY[registry] = BackendMetrics(registry)
    return found
