"""
The spools' Prometheus series, read from the spools themselves when
C{/metrics} is scraped, so that nothing is counted twice.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any, Protocol

import attr
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@attr.define
class SpoolCounts:
    """
    What a spool has done since start-up.

    @ivar forwarded: records the upstream accepted.
    @ivar retried: deliveries tried again after the upstream's own retries
        ran out (the relay's retries are C{sealgw_upstream_retries_total}).
    @ivar dead_lettered: records the upstream refused (4xx), or that did
        not read back as a push, moved to the dead-letter file.
    @ivar dead_letters_dropped: the oldest dead letters dropped to keep
        the dead-letter files within C{dead_letters_max_size}.
    @ivar dropped: records deleted undelivered by C{when_full: drop_oldest}.
    @ivar refused: pushes answered 503 because the spool was full.
    @ivar torn: damaged stretches found (a record torn by a crash) and
        skipped.
    @ivar writes: group writes (each with its fsync); C{write_seconds}
        their total time.
    """

    forwarded: int = 0
    retried: int = 0
    dead_lettered: int = 0
    dead_letters_dropped: int = 0
    dropped: int = 0
    refused: int = 0
    torn: int = 0
    writes: int = 0
    write_seconds: float = 0.0


class Measured(Protocol):
    name: str
    counts: SpoolCounts

    def gauges(self) -> dict[str, float]:
        """
        C{records}, C{bytes}, C{disk_bytes}, C{oldest_age_seconds}.
        """


_COUNTERS = [
    ("forwarded", "sealgw_spool_forwarded", "Spooled records the upstream accepted."),
    (
        "retried",
        "sealgw_spool_retried",
        "Spooled records tried again after the relay's own retries ran out.",
    ),
    (
        "dead_lettered",
        "sealgw_spool_dead_lettered",
        "Spooled records moved to the dead-letter file (upstream 4xx, or unreadable).",
    ),
    (
        "dead_letters_dropped",
        "sealgw_spool_dead_letters_dropped",
        "Oldest dead letters dropped to keep within dead_letters_max_size.",
    ),
    ("dropped", "sealgw_spool_dropped_records", "Records dropped by when_full: drop_oldest."),
    ("refused", "sealgw_spool_refused", "Pushes answered 503 because the spool was full."),
    ("torn", "sealgw_spool_torn_records", "Damaged (torn) records found and skipped."),
    ("writes", "sealgw_spool_writes", "Group writes to the spool, each with its fsync."),
    ("write_seconds", "sealgw_spool_write_seconds", "Time spent writing and fsyncing."),
]

_GAUGES = [
    ("records", "sealgw_spool_queued_records", "Records waiting to be delivered."),
    ("bytes", "sealgw_spool_queued_bytes", "Bytes of records waiting to be delivered."),
    ("disk_bytes", "sealgw_spool_disk_bytes", "Bytes of the spool's segment files."),
    (
        "oldest_age_seconds",
        "sealgw_spool_oldest_record_age_seconds",
        "Age of the oldest record waiting (0 when none waits).",
    ),
]


class SpoolMetrics(Collector):
    """
    One collector per registry for all the spools built with it.
    """

    def __init__(self) -> None:
        self._spools: list[Measured] = []

    def add(self, spool: Measured) -> None:
        self._spools.append(spool)

    def collect(self) -> Iterator[Metric]:
        for attribute, name, documentation in _COUNTERS:
            counter = CounterMetricFamily(name, documentation, labels=["upstream"])
            for spool in self._spools:
                counter.add_metric([spool.name], float(getattr(spool.counts, attribute)))
            yield counter
        gauges = {spool.name: spool.gauges() for spool in self._spools}
        for key, name, documentation in _GAUGES:
            gauge = GaugeMetricFamily(name, documentation, labels=["upstream"])
            for upstream, values in gauges.items():
                gauge.add_metric([upstream], values[key])
            yield gauge


_BY_REGISTRY: Any = weakref.WeakKeyDictionary()


def spool_metrics(registry: CollectorRegistry) -> SpoolMetrics:
    """
    The spools' collector in C{registry}, registered there the first time.
    """
    metrics: SpoolMetrics = _BY_REGISTRY.get(registry)
    if metrics is None:
        metrics = _BY_REGISTRY[registry] = SpoolMetrics()
        registry.register(metrics)
    return metrics
