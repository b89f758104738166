"""
Limits decided in this process alone: a token bucket on requests, another
on request-body bytes, and a count of requests in flight.

With several worker processes each keeps its own state and enforces its
share of every limit (see L{LocalLimiter.share}).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import attr
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from sealgw.config import RateLimitConfig
from sealgw.limits._interface import ILimiter, ISlot, LimitKey, refusal

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


def request_burst(limits: RateLimitConfig) -> float:
    """
    The requests bucket's capacity: C{burst}, by default one second's
    worth rounded up.
    """
    assert limits.requests_per_second is not None
    return limits.burst or max(1, math.ceil(limits.requests_per_second))


def byte_burst(limits: RateLimitConfig) -> float:
    """
    The body bucket's capacity: C{burst_bytes}, by default one second's worth.
    """
    assert limits.bytes_per_second is not None
    return limits.burst_bytes or limits.bytes_per_second


@implementer(ISlot)
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
    max_concurrent: Optional[int] = None

    @classmethod
    def create(cls, limits: RateLimitConfig, now: float, share: int = 1) -> LimitState:
        state = cls(limits, None, None)
        state.reset(limits, now, share)
        return state

    def reset(self, limits: RateLimitConfig, now: float, share: int = 1) -> None:
        """
        Take on new limits with full buckets; requests in flight still count.

        @param share: how many processes enforce these limits side by side;
            this one takes rates and bursts divided by it, and requests in
            flight divided by it rounded up (never below one).
        """
        self.limits = limits
        self.requests = None
        if limits.requests_per_second is not None:
            self.requests = TokenBucket(
                limits.requests_per_second / share, request_burst(limits) / share, now
            )
        self.body = None
        if limits.bytes_per_second is not None:
            self.body = TokenBucket(
                limits.bytes_per_second / share, byte_burst(limits) / share, now
            )
        self.max_concurrent = None
        if limits.max_concurrent is not None:
            self.max_concurrent = max(1, math.ceil(limits.max_concurrent / share))

    def idle(self, now: float) -> bool:
        return (
            self.in_flight == 0
            and (self.requests is None or self.requests.full(now))
            and (self.body is None or self.body.full(now))
        )


@implementer(ILimiter)
class LocalLimiter:
    """
    The limit state of every identity this process has seen recently.

    State is kept per key (kind of request, checker, name): an identity's
    reads and pushes are limited apart, each by a limit set of its own.
    When an identity's limits change (a reloaded token file) its state
    starts afresh.  Idle states are dropped once there are many, so a
    stream of distinct identities cannot grow memory without bound.

    @ivar share: how many worker processes enforce each identity's limits
        side by side, each with a limiter of its own.  The kernel spreads
        connections roughly evenly over the workers, so each takes
        C{1/share} of every rate and burst, and of the requests in flight
        (rounded up).  Set before the first request.
    """

    max_states = 10_000

    def __init__(self, clock: IReactorTime, share: int = 1) -> None:
        self._clock = clock
        self.share = share
        self._states: dict[LimitKey, LimitState] = {}

    def admit(self, key: LimitKey, limits: RateLimitConfig, body_size: int) -> ConcurrencySlot:
        """
        Admit one request of C{body_size} bytes, or refuse it, at once.

        @raise OverLimit: with the seconds until it would be admitted.
        """
        now = self._clock.seconds()
        state = self._states.get(key)
        if state is None:
            if len(self._states) >= self.max_states:
                self._prune(now)
            state = self._states[key] = LimitState.create(limits, now, self.share)
        elif state.limits != limits:
            # The same state object stays, so slots already handed out
            # still release into it.
            state.reset(limits, now, self.share)
        if state.max_concurrent is not None and state.in_flight >= state.max_concurrent:
            raise refusal("concurrency_limited", key, limits, 1.0)
        if state.requests is not None:
            wait = state.requests.wait(1, now)
            if wait > 0:
                raise refusal("rate_limited", key, limits, wait)
        if state.body is not None:
            wait = state.body.wait(body_size, now)
            if wait > 0:
                raise refusal("byte_rate_limited", key, limits, wait)
        if state.requests is not None:
            state.requests.take(1)
        if state.body is not None:
            state.body.take(body_size)
        state.in_flight += 1
        return ConcurrencySlot(state)

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "mode": "local", "share": self.share}

    def _prune(self, now: float) -> None:
        for key in [k for k, s in self._states.items() if s.idle(now)]:
            del self._states[key]

    def __len__(self) -> int:
        return len(self._states)
