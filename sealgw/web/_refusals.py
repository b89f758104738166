"""
Pushes refused for a sample limit (L{sealgw.signals.limits}), or for
series naming a tenant their sender may not use (C{tenant_from_label}):
counted by route and limit, and logged, one line per push at most and
no more than one line per identity and limit per interval, so that a
sender pushing bad series in a loop cannot flood the log.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.logger import Logger

from sealgw.signals.intake import TENANT_NOT_ALLOWED, AllSeriesRefused
from sealgw.signals.limits import LimitExceeded, SeriesRefused
from sealgw.web._metrics import GatewayMetrics

_LIMIT_LINE = (
    "push refused for a sample limit ({reason}): identity {identity}, tenant "
    "{tenant}, route {route}: {refusal}{more}"
)
_TENANT_LINE = (
    "push refused for a tenant the identity may not use ({reason}): identity "
    "{identity}, tenant {tenant}, route {route}: {refusal}{more}"
)
#: Seconds between two lines for the same identity and limit.
LOG_INTERVAL = 60.0
#: Identities and limits remembered at once; past that the oldest go.
_MAX_KEYS = 10_000


class SampleRefusals:
    """
    The one owner of the refusal counts and of when each identity's
    refusals were last logged.

    @ivar clock: tells the time (the reactor, or a C{Clock} in tests).
    """

    log = Logger()

    def __init__(
        self,
        clock: Any,
        metrics: Optional[GatewayMetrics] = None,
        interval: float = LOG_INTERVAL,
    ) -> None:
        self.clock = clock
        self.metrics = metrics
        self.interval = interval
        # (identity, reason) -> (when last logged, pushes refused since)
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}

    def series_refused(
        self, route: str, identity: str, tenant: Optional[str], refused: SeriesRefused
    ) -> None:
        """
        C{refused}'s series were left out of a push: count each by its
        limit, and log the push's message.
        """
        if self.metrics is not None:
            for reason, count in refused.by_reason:
                self.metrics.series_refused.labels(route, reason).inc(count)
                self.metrics.pushes_refused.labels(route, reason).inc()
        self._log(route, identity, tenant, refused.by_reason[0][0], refused.message)

    def push_refused(
        self, route: str, identity: str, tenant: Optional[str], error: LimitExceeded
    ) -> None:
        """
        A whole push was refused for a limit (too many series, a bad
        timestamp, a reserved name in its grouping key, or every series
        over a limit).
        """
        if isinstance(error, AllSeriesRefused):
            self.series_refused(route, identity, tenant, error.refused)
            return
        if self.metrics is not None:
            self.metrics.pushes_refused.labels(route, error.reason).inc()
        self._log(route, identity, tenant, error.reason, error.message)

    def _log(
        self, route: str, identity: str, tenant: Optional[str], reason: str, message: str
    ) -> None:
        now = self.clock.seconds()
        key = (identity, reason)
        last = self._logged.get(key)
        if last is not None and now - last[0] < self.interval:
            self._logged[key] = (last[0], last[1] + 1)
            return
        suppressed = last[1] if last is not None else 0
        if len(self._logged) >= _MAX_KEYS and last is None:
            self._forget(now)
        self._logged[key] = (now, 0)
        self.log.warn(
            _TENANT_LINE if reason == TENANT_NOT_ALLOWED else _LIMIT_LINE,
            reason=reason,
            identity=identity,
            tenant=tenant,
            route=route,
            # Not "message": Twisted's legacy log system owns that key, and
            # with a legacy observer present the line showed "()" there.
            refusal=message,
            more=(
                f" ({suppressed} more pushes refused for it since the last line)"
                if suppressed
                else ""
            ),
        )

    def _forget(self, now: float) -> None:
        """
        Room for one more key: the keys whose interval is over go, and if
        none is, the oldest half.
        """
        for key in [k for k, (when, _) in self._logged.items() if now - when >= self.interval]:
            del self._logged[key]
        if len(self._logged) >= _MAX_KEYS:
            by_age = sorted(self._logged, key=lambda k: self._logged[k][0])
            for key in by_age[: len(by_age) // 2]:
                del self._logged[key]
