"""
The upstream slots' Prometheus series, labelled by upstream and kind
(C{pushes}, C{reads}) only: tenant ids are unbounded, so no series names
one.
"""

from __future__ import annotations

import weakref
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from zope.interface import implementer

from sealgw.http._slots import ISlotMetrics


class SlotMetrics:
    """
    C{sealgw_upstream_slots_in_use}, C{sealgw_upstream_slots_limit},
    C{sealgw_upstream_slots_waiting} (gauges) and
    C{sealgw_upstream_slots_refused_total{reason}}, each by C{upstream}
    and C{kind}.  One per registry: get it with L{slot_metrics}.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.in_use = Gauge(
            "sealgw_upstream_slots_in_use",
            "Requests in flight to an upstream, by kind (pushes, reads).",
            ["upstream", "kind"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.limit = Gauge(
            "sealgw_upstream_slots_limit",
            "The bound on requests in flight to an upstream (in_flight.pushes or .reads).",
            ["upstream", "kind"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.waiting = Gauge(
            "sealgw_upstream_slots_waiting",
            "Requests waiting for a slot of an upstream, every tenant's together.",
            ["upstream", "kind"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.refused = Counter(
            "sealgw_upstream_slots_refused",
            "Requests refused a slot of an upstream: tenant_queue_full, "
            "upstream_queue_full or wait_timeout.",
            ["upstream", "kind", "reason"],
            registry=registry,
        )

    def for_slots(self, upstream: str, kind: str, limit: int) -> ISlotMetrics:
        """
        The series of one upstream's slots of one kind.
        """
        self.limit.labels(upstream, kind).set(limit)
        return _Children(self, upstream, kind)


@implementer(ISlotMetrics)
class _Children:
    """
    One scheduler's series, the children found once: looking them up by
    label takes a lock and a validation each time.
    """

    def __init__(self, families: SlotMetrics, upstream: str, kind: str) -> None:
        self._in_use = families.in_use.labels(upstream, kind)
        self._waiting = families.waiting.labels(upstream, kind)
        self._refused = families.refused
        self._labels = (upstream, kind)
        self._reasons: dict[str, Any] = {}
        self._last = (-1, -1)

    def update(self, in_use: int, waiting: int) -> None:
        if (in_use, waiting) == self._last:
            return
        last_in_use, last_waiting = self._last
        self._last = (in_use, waiting)
        if in_use != last_in_use:
            self._in_use.set(in_use)
        if waiting != last_waiting:
            self._waiting.set(waiting)

    def refused(self, reason: str) -> None:
        child = self._reasons.get(reason)
        if child is None:
            child = self._reasons[reason] = self._refused.labels(*self._labels, reason)
        child.inc()


_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, SlotMetrics] = (
    weakref.WeakKeyDictionary()
)


def slot_metrics(registry: CollectorRegistry) -> SlotMetrics:
    """
    The slot series of C{registry}, registered the first time they are
    asked for: the push relay and the read path both ask.
    """
    found = _BY_REGISTRY.get(registry)
    if found is None:
        found = _BY_REGISTRY[registry] = SlotMetrics(registry)
    return found
