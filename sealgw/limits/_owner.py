"""
Limits kept in one process for others: the main process of a daemon with
workers owns every identity's buckets and places in flight, and its
workers ask it for each decision (L{sealgw.daemon._leases}), so that a
client gets its whole limit whichever worker its connection reaches.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.interfaces import IReactorTime

from sealgw.config import RateLimitConfig
from sealgw.limits._interface import LimitKey
from sealgw.limits._local import TokenBucket, byte_burst, request_burst
from sealgw.limits._store import LEASE_TTL, Refusal


class LimitOwner:
    """
    The decisions of the Redis script, in memory, on C{clock}: the level
    of each bucket and the leases in flight, which expire after
    L{LEASE_TTL} unless renewed.  Idle state is dropped once there is
    much of it.
    """

    max_keys = 10_000

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._buckets: dict[tuple[LimitKey, str], TokenBucket] = {}
        self.leases: dict[LimitKey, dict[str, float]] = {}

    def _bucket(self, key: LimitKey, which: str, rate: float, capacity: float) -> TokenBucket:
        bucket = self._buckets.get((key, which))
        if bucket is None or (bucket.rate, bucket.capacity) != (rate, capacity):
            now = self._clock.seconds()
            if bucket is None and len(self._buckets) >= self.max_keys:
                self._prune(now)
            fresh = TokenBucket(rate, capacity, now)
            if bucket is not None:
                # As the script: the level carries over, capped.
                bucket.wait(0, now)
                fresh.tokens = min(capacity, bucket.tokens)
            bucket = self._buckets[(key, which)] = fresh
        return bucket

    def _prune(self, now: float) -> None:
        for bucket in [b for b, level in self._buckets.items() if level.full(now)]:
            del self._buckets[bucket]
        for key in [k for k, held in self.leases.items() if not held]:
            del self.leases[key]

    def decide(
        self, key: LimitKey, limits: RateLimitConfig, body_size: int, lease: str
    ) -> Refusal:
        now = self._clock.seconds()
        held: Optional[dict[str, float]] = None
        if limits.max_concurrent is not None:
            held = self.leases.setdefault(key, {})
            for name in [n for n, until in held.items() if until <= now]:
                del held[name]
            if len(held) >= limits.max_concurrent:
                return ("concurrency_limited", 1.0)
        requests: Optional[TokenBucket] = None
        body: Optional[TokenBucket] = None
        if limits.requests_per_second is not None:
            requests = self._bucket(key, "r", limits.requests_per_second, request_burst(limits))
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
        if held is not None:
            held[lease] = now + LEASE_TTL
        return None

    def release(self, key: LimitKey, lease: str) -> None:
        held = self.leases.get(key)
        if held is not None:
            held.pop(lease, None)
            if not held:
                del self.leases[key]

    def release_all(self, prefix: str) -> int:
        """
        Free every place held under a lease starting with C{prefix}: a
        worker's, when it has ended.  Answers how many were freed.
        """
        freed = 0
        for key in list(self.leases):
            for name in [n for n in self.leases[key] if n.startswith(prefix)]:
                self.release(key, name)
                freed += 1
        return freed

    def renew(self, key: LimitKey, leases: list[str]) -> None:
        held = self.leases.get(key, {})
        until = self._clock.seconds() + LEASE_TTL
        for name in leases:
            if name in held:
                held[name] = until

    def in_flight(self, key: LimitKey) -> int:
        """
        The leases of C{key} that have not expired.
        """
        now = self._clock.seconds()
        return sum(1 for until in self.leases.get(key, {}).values() if until > now)
