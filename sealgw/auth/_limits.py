"""
Per-identity limits: a token bucket on requests, another on request-body
bytes, and a cap on requests in flight.
"""

from __future__ import annotations

import math
from typing import Optional

import attr
from twisted.internet.interfaces import IReactorTime

from sealgw.auth._identity import Identity, RateLimited
from sealgw.config import RateLimitConfig

# Float sums of refills drift by a few ulps; a bucket this close to full
# enough counts as full enough.
_EPSILON = 1e-9


class TokenBucket:
    """
    C{rate} tokens a second, holding at most C{capacity}.

    A request larger than the capacity is let through when the bucket is
    full and leaves it in debt, so big bodies are slowed rather than
    refused forever.
    """

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = max(self.updated, now)

    def wait(self, amount: float, now: float) -> float:
        """
        Seconds until C{amount} may be taken; 0 when it may be now.
        """
        self._refill(now)
        need = min(amount, self.capacity)
        if self.tokens + _EPSILON >= need:
            return 0.0
        return (need - self.tokens) / self.rate

    def take(self, amount: float) -> None:
        self.tokens -= amount

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens + _EPSILON >= self.capacity


class ConcurrencySlot:
    """
    One request in flight for one identity; released once, however often
    L{release} is called.
    """

    def __init__(self, state: LimitState) -> None:
        self._state: Optional[LimitState] = state

    def release(self) -> None:
        state, self._state = self._state, None
        if state is not None:
            state.in_flight -= 1


@attr.define
class LimitState:
    limits: RateLimitConfig
    requests: Optional[TokenBucket]
    body: Optional[TokenBucket]
    in_flight: int = 0

    @classmethod
    def create(cls, limits: RateLimitConfig, now: float) -> LimitState:
        state = cls(limits, None, None)
        state.reset(limits, now)
        return state

    def reset(self, limits: RateLimitConfig, now: float) -> None:
        """
        Take on new limits with full buckets; requests in flight still count.
        """
        self.limits = limits
        self.requests = None
        if limits.requests_per_second is not None:
            burst = limits.burst or max(1, math.ceil(limits.requests_per_second))
            self.requests = TokenBucket(limits.requests_per_second, burst, now)
        self.body = None
        if limits.bytes_per_second is not None:
            burst_bytes = limits.burst_bytes or limits.bytes_per_second
            self.body = TokenBucket(limits.bytes_per_second, burst_bytes, now)

    def idle(self, now: float) -> bool:
        return (
            self.in_flight == 0
            and (self.requests is None or self.requests.full(now))
            and (self.body is None or self.body.full(now))
        )


class Limiter:
    """
    The limit state of every identity seen recently.

    State is kept per (checker, name).  When an identity's limits change
    (a reloaded token file) its state starts afresh.  Idle states are
    dropped once there are many, so a stream of distinct identities cannot
    grow memory without bound.
    """

    max_states = 10_000

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._states: dict[tuple[str, str], LimitState] = {}

    def acquire(self, identity: Identity, body_size: int) -> ConcurrencySlot:
        """
        Admit one request of C{body_size} bytes, or refuse it.

        Nothing is taken from any bucket unless every limit allows the
        request, so a refused request costs the identity nothing.

        @raise RateLimited: with the seconds until it would be admitted.
        """
        now = self._clock.seconds()
        key = (identity.checker, identity.name)
        state = self._states.get(key)
        if state is None:
            if len(self._states) >= self.max_states:
                self._prune(now)
            state = self._states[key] = LimitState.create(identity.limits, now)
        elif state.limits != identity.limits:
            # The same state object stays, so slots already handed out
            # still release into it.
            state.reset(identity.limits, now)
        limits = identity.limits
        if limits.max_concurrent is not None and state.in_flight >= limits.max_concurrent:
            raise RateLimited(
                f"more than {limits.max_concurrent} requests in flight for this identity",
                1.0,
                "concurrency_limited",
            )
        if state.requests is not None:
            wait = state.requests.wait(1, now)
            if wait > 0:
                raise RateLimited(
                    f"more than {limits.requests_per_second:g} requests a second "
                    "for this identity",
                    wait,
                    "rate_limited",
                )
        if state.body is not None:
            wait = state.body.wait(body_size, now)
            if wait > 0:
                raise RateLimited(
                    f"more than {limits.bytes_per_second} request-body bytes a second "
                    "for this identity",
                    wait,
                    "byte_rate_limited",
                )
        if state.requests is not None:
            state.requests.take(1)
        if state.body is not None:
            state.body.take(body_size)
        state.in_flight += 1
        return ConcurrencySlot(state)

    def _prune(self, now: float) -> None:
        for key in [k for k, s in self._states.items() if s.idle(now)]:
            del self._states[key]

    def __len__(self) -> int:
        return len(self._states)
