"""
Limits that hold for the fleet: each decision asked of a store that every
process and instance shares, and this process's own buckets (its local
share) deciding whenever the store cannot answer in time.  A request is
never refused or failed because the store is down.
"""

from __future__ import annotations

import os
from itertools import count
from typing import Any, Optional, Union

from prometheus_client import CollectorRegistry, Counter, Gauge
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sealgw.config import RateLimitConfig, SharedLimitsConfig
from sealgw.limits._interface import ILimiter, ISlot, LimitKey, refusal
from sealgw.limits._local import LocalLimiter
from sealgw.limits._store import LEASE_TTL, ILimitStore, Refusal

#: How often a store that failed is asked again, and how often this
#: process's leases are renewed (well within their TTL).
PROBE_INTERVAL = 1.0
RENEW_INTERVAL = LEASE_TTL / 3


_PROBE_TIMEOUT = object()


class _StoreTimeout(Exception):
    """
    The store did not answer within C{shared_limits.timeout}.
    """


@implementer(ISlot)
class SharedSlot:
    """
    A request in flight counted in the store under a lease of its own;
    released once however often L{release} is called.
    """

    def __init__(self, limiter: SharedLimiter, key: LimitKey, lease: str) -> None:
        self._limiter: Optional[SharedLimiter] = limiter
        self._key = key
        self._lease = lease

    def release(self) -> None:
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            limiter._release(self._key, self._lease)


@implementer(ISlot)
class _Unlimited:
    def release(self) -> None:
        pass


_UNLIMITED = _Unlimited()


@implementer(ILimiter)
class SharedLimiter(Service):
    """
    Asks C{store} for every decision, waiting at most C{timeout}.

    When the store fails or is slow the limiter turns I{degraded}: that
    decision and every later one is taken by C{local} (this process's
    share of each limit) until a probe, once a second, finds the store
    answering again.  C{/health} shows the mode; the metrics count the
    decisions taken locally.

    Leases of requests in flight are renewed while they last, so that a
    process that dies frees its places after L{LEASE_TTL}.
    """

    log = Logger()

    def __init__(
        self,
        store: ILimitStore,
        local: LocalLimiter,
        clock: IReactorTime,
        timeout: float,
        registry: Optional[CollectorRegistry] = None,
        where: str = "the shared limits store",
    ) -> None:
        self._store = store
        self._local = local
        self._clock = clock
        self._timeout = timeout
        self._where = where
        self.shared = True
        self.degraded_since: Optional[float] = None
        self.last_error: Optional[str] = None
        # Leases in flight by key: what the renewal loop keeps alive.
        self._leases: dict[LimitKey, set[str]] = {}
        self._prefix = f"{os.getpid()}.{os.urandom(4).hex()}."
        self._serial = count()
        self._probe = LoopingCall(self._check_store)
        self._probe.clock = clock
        self._renewal = LoopingCall(self._renew)
        self._renewal.clock = clock
        registry = registry if registry is not None else CollectorRegistry()
        self._fallbacks = Counter(
            "sealgw_limits_fallbacks",
            "Limit decisions taken by this process alone because the shared store "
            "failed or did not answer in time.",
            ["cause"],
            registry=registry,
        )
        self._shared_gauge = Gauge(
            "sealgw_limits_shared",
            "1 while limit decisions are taken by the shared store, 0 while this "
            "process decides alone with its share (degraded).",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self._shared_gauge.set(1)

    # ILimiter's share is the local fallback's.
    @property
    def share(self) -> int:
        return self._local.share

    @share.setter
    def share(self, value: int) -> None:
        self._local.share = value

    def startService(self) -> None:
        super().startService()
        self._store.connect()
        self._renewal.start(RENEW_INTERVAL, now=False)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for loop in (self._renewal, self._probe):
            if loop.running:
                loop.stop()
        # Places still held expire with their leases.
        self._leases.clear()
        return self._store.close()

    # -- decisions -----------------------------------------------------------

    def admit(
        self, key: LimitKey, limits: RateLimitConfig, body_size: int
    ) -> Union[ISlot, Deferred[ISlot]]:
        if (
            limits.requests_per_second is None
            and limits.bytes_per_second is None
            and limits.max_concurrent is None
        ):
            return _UNLIMITED
        if not self.shared:
            self._fallbacks.labels("degraded").inc()
            return self._local.admit(key, limits, body_size)
        lease = self._prefix + str(next(self._serial)) if limits.max_concurrent else ""
        result: Deferred[ISlot] = Deferred()
        asked = maybeDeferred(self._store.decide, key, limits, body_size, lease)
        timer = self._clock.callLater(self._timeout, self._timed_out, result)

        def answered(verdict: Refusal) -> None:
            if result.called:
                # Too late: the process has decided alone; a place the
                # store held for this request is given back.
                if verdict is None and lease:
                    self._release(key, lease)
                return
            timer.cancel()
            if verdict is not None:
                result.errback(refusal(verdict[0], key, limits, verdict[1]))
                return
            if lease:
                self._leases.setdefault(key, set()).add(lease)
                result.callback(SharedSlot(self, key, lease))
            else:
                result.callback(_UNLIMITED)

        def failed(failure: Failure) -> None:
            if result.called:
                return
            timer.cancel()
            self._degrade(f"{type(failure.value).__name__}: {failure.getErrorMessage()}")
            self._decide_locally(result, key, limits, body_size, "error")

        asked.addCallbacks(answered, failed)
        result.addErrback(self._fallback_on_timeout, key, limits, body_size)
        return result

    def _timed_out(self, result: Deferred[ISlot]) -> None:
        if not result.called:
            result.errback(_StoreTimeout())

    def _fallback_on_timeout(
        self, failure: Failure, key: LimitKey, limits: RateLimitConfig, body_size: int
    ) -> Union[Failure, ISlot]:
        if not failure.check(_StoreTimeout):
            return failure
        self._degrade(f"no answer within {self._timeout * 1000:g} ms")
        self._fallbacks.labels("timeout").inc()
        return self._local.admit(key, limits, body_size)

    def _decide_locally(
        self, result: Deferred[ISlot], key: LimitKey, limits: RateLimitConfig,
        body_size: int, cause: str,
    ) -> None:
        self._fallbacks.labels(cause).inc()
        try:
            slot = self._local.admit(key, limits, body_size)
        except Exception:
            result.errback()
        else:
            result.callback(slot)

    # -- the store's health ----------------------------------------------------

    def _degrade(self, error: str) -> None:
        self.last_error = error
        if not self.shared:
            return
        self.shared = False
        self.degraded_since = self._clock.seconds()
        self._shared_gauge.set(0)
        self.log.warn(
            "limits: {where} failed ({error}); each process enforces its own share "
            "until it answers again",
            where=self._where,
            error=error,
        )
        if not self._probe.running:
            self._probe.start(PROBE_INTERVAL, now=False)

    def _check_store(self) -> Deferred[None]:
        """
        Ask the store once; back to shared decisions when it answers in
        time.  Never raises, so the probe goes on.  A late answer is let
        be rather than cancelled: the client's request stays whole.
        """
        done: Deferred[None] = Deferred()

        def settle(outcome: Any) -> None:
            if done.called:
                return
            if timer.active():
                timer.cancel()
            if isinstance(outcome, Failure):
                self.last_error = f"{type(outcome.value).__name__}: {outcome.getErrorMessage()}"
            elif outcome is _PROBE_TIMEOUT:
                self.last_error = f"no answer to a ping within {self._timeout * 4 * 1000:g} ms"
            else:
                self._recover()
            done.callback(None)

        timer: IDelayedCall = self._clock.callLater(self._timeout * 4, settle, _PROBE_TIMEOUT)
        maybeDeferred(self._store.ping).addBoth(settle)
        return done

    def _recover(self) -> None:
        if self.shared:
            return
        self.shared = True
        self.log.info(
            "limits: {where} answers again; limits are shared across the fleet "
            "(degraded for {seconds:.1f} s)",
            where=self._where,
            seconds=self._clock.seconds() - (self.degraded_since or 0.0),
        )
        self.degraded_since = None
        self._shared_gauge.set(1)
        if self._probe.running:
            self._probe.stop()

    def health(self) -> dict[str, Any]:
        if self.shared:
            return {"status": "ok", "mode": "shared", "store": self._where}
        return {
            "status": "degraded",
            "mode": "local",
            "store": self._where,
            "share": self._local.share,
            "since": self.degraded_since,
            "error": self.last_error,
        }

    # -- leases ---------------------------------------------------------------

    def _release(self, key: LimitKey, lease: str) -> None:
        leases = self._leases.get(key)
        if leases is not None:
            leases.discard(lease)
            if not leases:
                del self._leases[key]
        # A release the store misses expires with its lease.
        maybeDeferred(self._store.release, key, lease).addErrback(self._ignore, "release")

    def _renew(self) -> None:
        if not self.shared:
            return
        for key, leases in list(self._leases.items()):
            d = maybeDeferred(self._store.renew, key, sorted(leases))
            d.addErrback(self._ignore, "renew")

    def _ignore(self, failure: Failure, what: str) -> None:
        # The decisions notice a store that is down; a lost release or
        # renewal only shortens or lengthens a lease.
        self.log.debug(
            "limits: {what} failed: {error}", what=what, error=failure.getErrorMessage()
        )

    def __len__(self) -> int:
        return len(self._local)


def shared_limiter(
    config: SharedLimitsConfig,
    clock: IReactorTime,
    registry: Optional[CollectorRegistry] = None,
) -> SharedLimiter:
    """
    The limiter for C{auth.shared_limits}: decisions in its Redis, this
    process's share of each limit meanwhile when it fails.  Nothing
    connects before the limiter starts.
    """
    from sealgw.limits._redis import RedisLimitStore

    return SharedLimiter(
        RedisLimitStore(config),
        LocalLimiter(clock),
        clock,
        config.timeout,
        registry,
        where=config.redis.url,
    )
