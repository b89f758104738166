"""
The made-up metrics: those of seal's metrics generator (the time in ms,
a build-info gauge vec, a histogram of request durations with seal's
buckets), plus a counter and a summary so that every common type is
pushed.
"""

from __future__ import annotations

import random as _random

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from twisted.internet.interfaces import IReactorTime

#: seal's request-duration buckets, in seconds (+Inf is added).
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class SampleMetrics:
    """
    The sample metrics in a registry; L{update} moves them on, as if
    requests had been served since the last push.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        clock: IReactorTime,
        version: str,
        random: _random.Random,
    ) -> None:
        self._clock = clock
        self._random = random
        self.current_time = Gauge("current_time", "current time in ms", registry=registry)
        self.build_info = Gauge("seal_build_info", "build info", ["version"], registry=registry)
        self.build_info.labels(version).set(1)
        self.request_duration = Histogram(
            "seal_request_duration",
            "request duration in seconds",
            buckets=BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "seal_requests", "requests served, by outcome", ["outcome"], registry=registry
        )
        self.response_size = Summary(
            "seal_response_size_bytes", "response body sizes", registry=registry
        )

    def update(self) -> None:
        """
        Set the time, and record a few requests of random durations (mostly
        under a second, a few up to the last bucket and past it).
        """
        self.current_time.set(int(self._clock.seconds() * 1000))
        for _ in range(self._random.randint(1, 20)):
            self.request_duration.observe(min(self._random.expovariate(2.0), 15.0))
            outcome = "error" if self._random.random() < 0.05 else "ok"
            self.requests.labels(outcome).inc()
            self.response_size.observe(self._random.randint(200, 50_000))
