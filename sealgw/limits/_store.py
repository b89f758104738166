"""
The seam between the shared limiter and the store that holds every
process's counts: one atomic decision per request, and the leases that
count requests in flight.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.defer import Deferred
from zope.interface import Interface

from sealgw.config import RateLimitConfig
from sealgw.limits._interface import LimitKey

Refusal = Optional[tuple[str, float]]
"""A store's verdict: L{None} when admitted, else the reason
(C{rate_limited}, C{byte_rate_limited}, C{concurrency_limited}) and the
seconds until the request would be admitted."""

LEASE_TTL = 30.0
"""How long a request in flight holds its place in the store unless its
process renews it: a process that dies frees its places within this."""


class ILimitStore(Interface):
    """
    Counts shared by every process and instance.  Every method may fail
    (the store is down) or never answer (it is slow): the shared limiter
    bounds the wait and decides alone meanwhile.
    """

    def decide(
        key: LimitKey, limits: RateLimitConfig, body_size: int, lease: str
    ) -> Deferred[Refusal]:
        """
        In one atomic step: refuse the request if any limit does, or take
        one request and C{body_size} bytes from the buckets and, when
        C{limits.max_concurrent} is set, hold a place in flight under
        C{lease} for L{LEASE_TTL} seconds.
        """

    def release(key: LimitKey, lease: str) -> Deferred[None]:
        """
        Free the place in flight held under C{lease}.
        """

    def renew(key: LimitKey, leases: list[str]) -> Deferred[None]:
        """
        Hold the places of C{leases}, still in flight, for another
        L{LEASE_TTL} seconds.
        """

    def ping() -> Deferred[None]:
        """
        Succeeds when the store answers.
        """

    def connect() -> None:
        """
        Start connecting (when the limiter starts, not when it is built).
        """

    def close() -> Deferred[None]:
        """
        Close the connection; no request is asked of the store afterwards.
        """
