"""
Shared limits against an in-memory store on a Clock: decisions that hold
for every process sharing the store, places in flight held by leases, and
the fallback to each process's local share while the store is down or
slow, back to shared by itself.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sealgw.auth import Identity, RateLimited
from sealgw.auth._limits import Limiter
from sealgw.config import RateLimitConfig
from sealgw.limits import LEASE_TTL, ISlot, LocalLimiter, OverLimit, SharedLimiter
from sealgw.testing import MemoryLimitStore

KEY = ("push", "token_file", "alice")


class SharedLimiterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryLimitStore(self.clock)
        self.registry = CollectorRegistry()
        # Two worker processes of one host, and a third elsewhere.
        self.limiters = [self.limiter(share=2, registry=self.registry), self.limiter(share=2)]
        self.limiters.append(self.limiter())

    def limiter(self, share: int = 1, registry: Any = None) -> SharedLimiter:
        limiter = SharedLimiter(
            self.store, LocalLimiter(self.clock, share), self.clock, 0.05, registry
        )
        limiter.startService()
        self.addCleanup(limiter.stopService)
        return limiter

    def admit(self, limiter: SharedLimiter, limits: RateLimitConfig, size: int = 0) -> ISlot:
        result = limiter.admit(KEY, limits, size)
        if isinstance(result, Deferred):
            slot: ISlot = self.successResultOf(result)
            return slot
        return result

    def refused(self, limiter: SharedLimiter, limits: RateLimitConfig, size: int = 0) -> OverLimit:
        result = limiter.admit(KEY, limits, size)
        assert isinstance(result, Deferred)
        return self.failureResultOf(result, OverLimit).value  # type: ignore[return-value]

    def fallbacks(self, cause: str) -> float:
        value = self.registry.get_sample_value("sealgw_limits_fallbacks_total", {"cause": cause})
        return value or 0.0

    def test_rate_is_one_for_the_fleet(self) -> None:
        """
        Whichever process a request reaches, the burst and the rate are
        the identity's as written, not a share of them.
        """
        limits = RateLimitConfig(requests_per_second=10, burst=10)
        for i in range(10):
            self.admit(self.limiters[i % 3], limits).release()
        for limiter in self.limiters:
            e = self.refused(limiter, limits)
            self.assertEqual((e.reason, e.retry_after), ("rate_limited", 0.1))
            self.assertEqual(str(e), "more than 10 requests a second for this identity")
        self.clock.advance(0.5)
        for i in range(5):
            self.admit(self.limiters[i % 3], limits)
        self.refused(self.limiters[0], limits)

    def test_bytes_are_one_for_the_fleet(self) -> None:
        limits = RateLimitConfig(bytes_per_second=1000)
        self.admit(self.limiters[0], limits, 600)
        self.admit(self.limiters[1], limits, 400)
        e = self.refused(self.limiters[2], limits, 100)
        self.assertEqual(e.reason, "byte_rate_limited")
        self.assertAlmostEqual(e.retry_after, 0.1)

    def test_one_in_flight_stays_one(self) -> None:
        limits = RateLimitConfig(max_concurrent=1)
        slot = self.admit(self.limiters[0], limits)
        for limiter in self.limiters:
            e = self.refused(limiter, limits)
            self.assertEqual(e.reason, "concurrency_limited")
            self.assertEqual(str(e), "more than 1 requests in flight for this identity")
        slot.release()
        slot.release()  # once only
        self.assertEqual(self.store.in_flight(KEY), 0)
        self.admit(self.limiters[2], limits)
        self.refused(self.limiters[0], limits)

    def test_long_request_keeps_its_place(self) -> None:
        """
        A request in flight for longer than a lease is renewed while its
        process lives.
        """
        limits = RateLimitConfig(max_concurrent=1)
        slot = self.admit(self.limiters[0], limits)
        self.clock.pump([LEASE_TTL / 6] * 24)
        self.assertEqual(self.store.in_flight(KEY), 1)
        self.refused(self.limiters[1], limits)
        slot.release()
        self.admit(self.limiters[1], limits)

    def test_dead_process_frees_its_places(self) -> None:
        """
        A process that dies with requests in flight neither releases nor
        renews them: their places free themselves after the lease.
        """
        limits = RateLimitConfig(max_concurrent=2)
        self.admit(self.limiters[0], limits)
        self.admit(self.limiters[0], limits)
        self.limiters[0].stopService()
        self.refused(self.limiters[1], limits)
        self.clock.advance(LEASE_TTL + 0.1)
        self.admit(self.limiters[1], limits)
        self.admit(self.limiters[1], limits)

    def test_unlimited_asks_nothing(self) -> None:
        for _ in range(100):
            self.admit(self.limiters[0], RateLimitConfig()).release()
        self.assertEqual(self.store.calls, {})

    def test_store_down_falls_back_to_local_share(self) -> None:
        """
        A store that fails: the decision is this process's own, with its
        share of the limit, at once; later ones too, without asking the
        store, until a probe finds it up again.
        """
        limiter = self.limiters[0]
        self.store.state = "down"
        limits = RateLimitConfig(requests_per_second=10, burst=10)
        self.assertEqual(limiter.health()["status"], "ok")
        for _ in range(5):  # a share of two workers: half the burst
            self.admit(limiter, limits)
        e = self.assertRaises(OverLimit, limiter.admit, KEY, limits, 0)
        self.assertEqual(e.reason, "rate_limited")
        self.assertEqual(self.store.calls["decide"], 1)
        health = limiter.health()
        self.assertEqual(
            (health["status"], health["mode"], health["share"]), ("degraded", "local", 2)
        )
        self.assertIn("connection refused", health["error"])
        self.assertEqual(self.fallbacks("error"), 1)
        self.assertEqual(self.fallbacks("degraded"), 5)
        self.assertEqual(self.registry.get_sample_value("sealgw_limits_shared"), 0)

        self.clock.advance(1)  # a probe: still down
        self.assertEqual(self.store.calls["ping"], 1)
        self.assertFalse(limiter.shared)
        self.store.state = "up"
        self.clock.advance(1)
        self.assertTrue(limiter.shared)
        self.assertEqual(
            limiter.health(),
            {"status": "ok", "mode": "shared", "store": "the shared limits store"},
        )
        self.assertEqual(self.registry.get_sample_value("sealgw_limits_shared"), 1)
        self.clock.advance(5)
        self.assertEqual(self.store.calls["ping"], 2)  # the probe stops once up
        self.admit(limiter, limits)
        self.assertEqual(self.store.calls["decide"], 2)

    def test_slow_store_falls_back_after_timeout(self) -> None:
        """
        A store that does not answer holds a request for the timeout
        only; a place it grants afterwards is given back.
        """
        limiter = self.limiters[0]
        self.store.state = "slow"
        limits = RateLimitConfig(max_concurrent=1)
        result = limiter.admit(KEY, limits, 0)
        assert isinstance(result, Deferred)
        self.assertNoResult(result)
        self.clock.advance(0.05)
        slot = self.successResultOf(result)
        self.assertEqual(limiter.health()["status"], "degraded")
        self.assertEqual(self.fallbacks("timeout"), 1)
        self.store.state = "up"
        self.store.answer_slow()  # the late grant
        self.assertEqual(self.store.in_flight(KEY), 0)
        # Decided locally while degraded: one in flight on this process.
        self.assertRaises(OverLimit, limiter.admit, KEY, limits, 0)
        slot.release()

    def test_slow_probe_keeps_degraded(self) -> None:
        limiter = self.limiters[0]
        self.store.state = "down"
        self.admit(limiter, RateLimitConfig(requests_per_second=1))
        self.store.state = "slow"
        self.clock.advance(1)
        self.clock.advance(0.2)  # the probe gives up
        self.assertFalse(limiter.shared)
        self.store.state = "up"
        self.clock.advance(1)
        self.assertTrue(limiter.shared)

    def test_gate_view(self) -> None:
        """
        The gate's limiter answers a shared refusal as a 429 with the
        store's Retry-After.
        """
        limiter = Limiter(self.clock, backend=self.limiters[2])
        who = Identity(
            name="alice", tenants=frozenset(["t"]), checker="token_file",
            limits=RateLimitConfig(requests_per_second=0.5, burst=1),
        )
        first = limiter.acquire(who, 0)
        assert isinstance(first, Deferred)
        self.successResultOf(first)
        second = limiter.acquire(who, 0)
        assert isinstance(second, Deferred)
        e = self.failureResultOf(second, RateLimited).value
        self.assertEqual(e.headers, {"Retry-After": "2"})  # type: ignore[attr-defined]
        self.assertEqual(e.status, 429)  # type: ignore[attr-defined]
