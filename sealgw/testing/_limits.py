"""
An in-memory limit store on a clock, with the decisions of the Redis
script, that can be taken down or made slow.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from sealgw.config import RateLimitConfig
from sealgw.limits._interface import LimitKey
from sealgw.limits._owner import LimitOwner
from sealgw.limits._store import ILimitStore, Refusal


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
    @ivar owner: the counts.
    @ivar calls: how many requests each method has had.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.owner = LimitOwner(clock)
        self.state = "up"
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

    def in_flight(self, key: LimitKey) -> int:
        return self.owner.in_flight(key)

    def decide(
        self, key: LimitKey, limits: RateLimitConfig, body_size: int, lease: str
    ) -> Deferred[Refusal]:
        d: Deferred[Refusal] = self._answer(
            "decide", lambda: self.owner.decide(key, limits, body_size, lease)
        )
        return d

    def release(self, key: LimitKey, lease: str) -> Deferred[None]:
        d: Deferred[None] = self._answer("release", lambda: self.owner.release(key, lease))
        return d

    def renew(self, key: LimitKey, leases: list[str]) -> Deferred[None]:
        d: Deferred[None] = self._answer("renew", lambda: self.owner.renew(key, leases))
        return d

    def ping(self) -> Deferred[None]:
        d: Deferred[None] = self._answer("ping", lambda: None)
        return d

    def connect(self) -> None:
        self.connected = True

    def close(self) -> Deferred[None]:
        self.connected = False
        return succeed(None)
