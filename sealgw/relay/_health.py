"""
What recent deliveries say about an upstream, for the gateway's C{/health}.

An upstream that is failing makes the gateway I{degraded}, never I{down}:
readiness must not depend on an upstream, or an outage upstream would
take every gateway out of its load balancer and turn retryable 503s into
connection errors at the client.
"""

from __future__ import annotations

import datetime
from typing import Any, Optional, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from sealgw.relay._interfaces import UpstreamRejected, UpstreamUnavailable

T = TypeVar("T")

#: How much of the last error's reason the health report carries.
MAX_HEALTH_REASON = 200


def rfc3339(seconds: float) -> str:
    """
    C{seconds} since the epoch as an RFC 3339 UTC timestamp with
    milliseconds, e.g. C{2025-09-07T15:30:00.123Z}.
    """
    when = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _when(seconds: Optional[float]) -> Optional[str]:
    return None if seconds is None else rfc3339(seconds)


class UpstreamHealth:
    """
    Counts consecutive failed deliveries.  An upstream that answered at
    all, even with a 4xx for bad data, counts as working.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self.consecutive_failures = 0
        self.last_success: Optional[float] = None
        self.last_failure: Optional[float] = None
        self.last_error: Optional[str] = None

    def watch(self, delivery: Deferred[T]) -> Deferred[T]:
        """
        Record how C{delivery} ends; its result passes through untouched.
        """
        delivery.addBoth(self._record)
        return delivery

    def _record(self, result: Any) -> Any:
        if isinstance(result, Failure):
            if result.check(UpstreamUnavailable):
                self.consecutive_failures += 1
                self.last_failure = self._clock.seconds()
                self.last_error = str(result.value)[:MAX_HEALTH_REASON]
            elif result.check(UpstreamRejected):
                self._succeeded()
            # Cancellations (the client left) say nothing about the upstream.
        else:
            self._succeeded()
        return result

    def _succeeded(self) -> None:
        self.consecutive_failures = 0
        self.last_success = self._clock.seconds()

    def report(self) -> dict[str, Any]:
        """
        C{{"status": "ok" | "degraded", ...}} with the detail.
        """
        return {
            "status": "ok" if self.consecutive_failures == 0 else "degraded",
            "consecutive_failures": self.consecutive_failures,
            "last_success": _when(self.last_success),
            "last_failure": _when(self.last_failure),
            "last_error": self.last_error,
        }
