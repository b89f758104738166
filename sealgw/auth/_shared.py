"""
One lookup in flight per key: callers asking for the same thing at the same
time share one answer instead of each asking the identity provider.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    """
    Each caller gets its own Deferred, so one caller cancelling (a client
    that went away) does not cancel the lookup the others wait for.
    """

    def __init__(self) -> None:
        self._waiters: dict[K, list[Deferred[V]]] = {}
        self._lookups: dict[K, Deferred[V]] = {}

    def __contains__(self, key: K) -> bool:
        return key in self._waiters

    def run(self, key: K, start: Callable[[], Deferred[V]]) -> Deferred[V]:
        waiter: Deferred[V] = Deferred(lambda d: self._forget(key, d))
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        self._waiters[key] = [waiter]
        try:
            lookup = start()
        except BaseException:
            self._fire(Failure(), key)
            return waiter
        if key in self._waiters:
            self._lookups[key] = lookup
        lookup.addBoth(self._fire, key)
        return waiter

    def cancel_all(self) -> None:
        """
        Cancel every lookup in flight (at shutdown); their callers see the
        failure.
        """
        for lookup in list(self._lookups.values()):
            lookup.cancel()

    def _forget(self, key: K, waiter: Deferred[V]) -> None:
        waiters = self._waiters.get(key)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)

    def _fire(self, result: Any, key: K) -> None:
        self._lookups.pop(key, None)
        for waiter in self._waiters.pop(key, []):
            if waiter.called:
                continue
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
        # The result went to the waiters; nothing is left for this chain,
        # so a failure nobody waits for any more is not reported as lost.
        return None
