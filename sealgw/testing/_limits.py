"""
An in-memory limit store on a clock, with the decisions of the Redis
script, that can be taken down or made slow.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from sealgw.config import RateLimitConfig
from sealgw.limits._interface import LimitKey
from sealgw.limits._local import TokenBucket, byte_burst, request_burst
from sealgw.limits._store import LEASE_TTL, ILimitStore, Refusal


class StoreDown(ConnectionError):
    """
    What a L{MemoryLimitStore} that is C{down} fails with.
    """


@implementer(ILimitStore)
class MemoryLimitStore:
    """
    Every process of a test shares one, as they would a Redis.

    @ivar state: C{"up"} answers at once, C{"down"} fails at once,
        C{"slow"} answers only when L{answer_slow} is called.
    @ivar leases: each key's leases in flight and when they expire.
    @ivar calls: how many requests each method has had.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self.state = "up"
        self._buckets: dict[tuple[LimitKey, str], TokenBucket] = {}
        self.leases: dict[LimitKey, dict[str, float]] = {}
        self._slow: list[tuple[Deferred[Any], Any]] = []
        self.calls: dict[str, int] = {}
        self.connected = False

    def _answer(self, method: str, compute: Any) -> Deferred[Any]:
        self.calls[method] = self.calls.get(method, 0) + 1
        if self.state == "down":
            return fail(StoreDown("connection refused"))
        if self.state == "slow":
            d: Deferred[Any] = Deferred()
            self._slow.append((d, compute))
            return d
        return succeed(compute())

    def answer_slow(self) -> None:
        """
        Answer every request held while C{slow}, in order.
        """
        slow, self._slow = self._slow, []
        for d, compute in slow:
            d.callback(compute())

    def _bucket(self, key: LimitKey, which: str, rate: float, capacity: float) -> TokenBucket:
        bucket = self._buckets.get((key, which))
        if bucket is None or (bucket.rate, bucket.capacity) != (rate, capacity):
            now = self._clock.seconds()
            fresh = TokenBucket(rate, capacity, now)
            if bucket is not None:
                # As the script: the level carries over, capped.
                bucket.wait(0, now)
                fresh.tokens = min(capacity, bucket.tokens)
            bucket = self._buckets[(key, which)] = fresh
        return bucket

    def decide(
        self, key: LimitKey, limits: RateLimitConfig, body_size: int, lease: str
    ) -> Deferred[Refusal]:
        def compute() -> Refusal:
            now = self._clock.seconds()
            held = self.leases.setdefault(key, {})
            for name in [n for n, until in held.items() if until <= now]:
                del held[name]
            if limits.max_concurrent is not None and len(held) >= limits.max_concurrent:
                return ("concurrency_limited", 1.0)
            requests: Optional[TokenBucket] = None
            body: Optional[TokenBucket] = None
            if limits.requests_per_second is not None:
                requests = self._bucket(
                    key, "r", limits.requests_per_second, request_burst(limits)
                )
                wait = requests.wait(1, now)
                if wait > 0:
                    return ("rate_limited", wait)
            if limits.bytes_per_second is not None:
                body = self._bucket(key, "b", limits.bytes_per_second, byte_burst(limits))
                wait = body.wait(body_size, now)
                if wait > 0:
                    return ("byte_rate_limited", wait)
            if requests is not None:
                requests.take(1)
            if body is not None:
                body.take(body_size)
            if limits.max_concurrent is not None:
                held[lease] = now + LEASE_TTL
            return None

        d: Deferred[Refusal] = self._answer("decide", compute)
        return d

    def in_flight(self, key: LimitKey) -> int:
        """
        The leases of C{key} that have not expired.
        """
        now = self._clock.seconds()
        return sum(1 for until in self.leases.get(key, {}).values() if until > now)

    def release(self, key: LimitKey, lease: str) -> Deferred[None]:
        d: Deferred[None] = self._answer(
            "release", lambda: self.leases.get(key, {}).pop(lease, None) and None
        )
        return d

    def renew(self, key: LimitKey, leases: list[str]) -> Deferred[None]:
        def compute() -> None:
            held = self.leases.get(key, {})
            for name in leases:
                if name in held:
                    held[name] = self._clock.seconds() + LEASE_TTL

        d: Deferred[None] = self._answer("renew", compute)
        return d

    def ping(self) -> Deferred[None]:
        d: Deferred[None] = self._answer("ping", lambda: None)
        return d

    def connect(self) -> None:
        self.connected = True

    def close(self) -> Deferred[None]:
        self.connected = False
        return succeed(None)
