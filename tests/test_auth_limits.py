"""
Per-identity limits, driven by a Clock: requests a second, body bytes a
second and requests in flight, each answered with 429 and an honest
Retry-After.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sealgw.auth import Identity, RateLimited
from sealgw.auth._limits import Limiter
from sealgw.config import AuthConfig, ClientCertConfig, RateLimitConfig, Secret
from sealgw.limits import LocalLimiter, TokenBucket
from tests.idp import admit, fake_request, make_gate


def identity(limits: RateLimitConfig, name: str = "alice") -> Identity:
    return Identity(name=name, tenants=frozenset(["t"]), checker="token_file", limits=limits)


class TokenBucketTests(SynchronousTestCase):
    def test_refill(self) -> None:
        bucket = TokenBucket(rate=2.0, capacity=4, now=0.0)
        for _ in range(4):
            self.assertEqual(bucket.wait(1, 0.0), 0.0)
            bucket.take(1)
        self.assertEqual(bucket.wait(1, 0.0), 0.5)
        self.assertEqual(bucket.wait(1, 0.25), 0.25)
        self.assertEqual(bucket.wait(1, 0.5), 0.0)

    def test_never_above_capacity(self) -> None:
        bucket = TokenBucket(rate=1.0, capacity=2, now=0.0)
        bucket.wait(1, 1000.0)
        self.assertEqual(bucket.tokens, 2)

    def test_debt(self) -> None:
        """
        More than the capacity at once is allowed from a full bucket and
        leaves it in debt.
        """
        bucket = TokenBucket(rate=10.0, capacity=10, now=0.0)
        self.assertEqual(bucket.wait(25, 0.0), 0.0)
        bucket.take(25)
        self.assertEqual(bucket.wait(1, 0.0), 1.6)


class LimiterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.limiter = Limiter(self.clock)

    def test_unlimited(self) -> None:
        who = identity(RateLimitConfig())
        for _ in range(1000):
            self.limiter.acquire(who, 10**9)

    def test_requests_per_second(self) -> None:
        who = identity(RateLimitConfig(requests_per_second=2, burst=3))
        for _ in range(3):
            self.limiter.acquire(who, 0).release()
        e = self.assertRaises(RateLimited, self.limiter.acquire, who, 0)
        self.assertEqual(e.status, 429)
        self.assertEqual(e.reason, "rate_limited")
        self.assertEqual(e.retry_after, 0.5)
        self.assertEqual(e.headers, {"Retry-After": "1"})
        self.clock.advance(0.5)
        self.limiter.acquire(who, 0).release()
        self.assertRaises(RateLimited, self.limiter.acquire, who, 0)

    def test_retry_after_rounds_up(self) -> None:
        who = identity(RateLimitConfig(requests_per_second=0.25, burst=1))
        self.limiter.acquire(who, 0)
        e = self.assertRaises(RateLimited, self.limiter.acquire, who, 0)
        self.assertEqual(e.headers, {"Retry-After": "4"})
        self.clock.advance(2.5)
        e = self.assertRaises(RateLimited, self.limiter.acquire, who, 0)
        self.assertEqual(e.headers, {"Retry-After": "2"})
        self.clock.advance(1.5)
        self.limiter.acquire(who, 0)

    def test_default_burst_is_one_second(self) -> None:
        who = identity(RateLimitConfig(requests_per_second=5))
        for _ in range(5):
            self.limiter.acquire(who, 0)
        self.assertRaises(RateLimited, self.limiter.acquire, who, 0)

    def test_bytes_per_second(self) -> None:
        who = identity(RateLimitConfig(bytes_per_second=1000, burst_bytes=2000))
        self.limiter.acquire(who, 1500).release()
        e = self.assertRaises(RateLimited, self.limiter.acquire, who, 1000)
        self.assertEqual(e.reason, "byte_rate_limited")
        self.assertEqual(e.retry_after, 0.5)
        self.assertEqual(e.headers, {"Retry-After": "1"})
        self.clock.advance(0.5)
        self.limiter.acquire(who, 1000)

    def test_body_larger_than_burst(self) -> None:
        """
        A body larger than the burst is let in from a full bucket, and the
        next waits until the debt is paid.
        """
        who = identity(RateLimitConfig(bytes_per_second=1000))
        self.limiter.acquire(who, 5000)
        e = self.assertRaises(RateLimited, self.limiter.acquire, who, 10)
        self.assertAlmostEqual(e.retry_after, 4.01)
        self.assertEqual(e.headers, {"Retry-After": "5"})

    def test_concurrency(self) -> None:
        who = identity(RateLimitConfig(max_concurrent=2))
        first = self.limiter.acquire(who, 0)
        self.limiter.acquire(who, 0)
        e = self.assertRaises(RateLimited, self.limiter.acquire, who, 0)
        self.assertEqual((e.status, e.reason), (429, "concurrency_limited"))
        self.assertEqual(e.headers, {"Retry-After": "1"})
        first.release()
        first.release()  # idempotent: frees one slot, not two
        self.limiter.acquire(who, 0)
        self.assertRaises(RateLimited, self.limiter.acquire, who, 0)

    def test_refusal_costs_nothing(self) -> None:
        """
        A request refused on one limit takes nothing from the others.
        """
        who = identity(RateLimitConfig(requests_per_second=10, burst=10, bytes_per_second=100))
        self.limiter.acquire(who, 100)
        for _ in range(5):
            self.assertRaises(RateLimited, self.limiter.acquire, who, 100)
        self.clock.advance(1)
        for _ in range(9):
            self.limiter.acquire(who, 0)

    def test_identities_are_separate(self) -> None:
        limits = RateLimitConfig(requests_per_second=1)
        self.limiter.acquire(identity(limits, "a"), 0)
        self.limiter.acquire(identity(limits, "b"), 0)
        self.assertRaises(RateLimited, self.limiter.acquire, identity(limits, "a"), 0)

    def test_new_limits_keep_slots(self) -> None:
        """
        When an identity's limits change (a reloaded token file), requests
        already in flight still count and still release.
        """
        slot = self.limiter.acquire(identity(RateLimitConfig(max_concurrent=1)), 0)
        tighter = identity(RateLimitConfig(max_concurrent=1, requests_per_second=100))
        self.assertRaises(RateLimited, self.limiter.acquire, tighter, 0)
        slot.release()
        self.limiter.acquire(tighter, 0)

    def test_idle_states_pruned(self) -> None:
        local = self.limiter.backend
        assert isinstance(local, LocalLimiter)
        local.max_states = 10
        limits = RateLimitConfig(requests_per_second=1)
        for i in range(10):
            self.limiter.acquire(identity(limits, f"n{i}"), 0).release()
        self.clock.advance(5)
        self.limiter.acquire(identity(limits, "new"), 0)
        self.assertEqual(len(self.limiter), 1)


class GateLimitTests(SynchronousTestCase):
    def test_gate_uses_the_clock(self) -> None:
        clock = Clock()
        gate = make_gate(
            clock=clock,
            auth=AuthConfig(
                default_limits=RateLimitConfig(
                    requests_per_second=1, burst=2, bytes_per_second=100
                )
            ),
            development_token=Secret("dev", "test"),
        )
        self.successResultOf(admit(gate, fake_request("dev"), body_size=100)).release()
        failure = self.failureResultOf(admit(gate, fake_request("dev"), body_size=10), RateLimited)
        self.assertEqual(failure.value.reason, "byte_rate_limited")
        self.assertEqual(failure.value.headers, {"Retry-After": "1"})
        self.successResultOf(admit(gate, fake_request("dev"), body_size=0)).release()
        failure = self.failureResultOf(admit(gate, fake_request("dev")), RateLimited)
        self.assertEqual(failure.value.reason, "rate_limited")
        self.assertEqual(failure.value.headers, {"Retry-After": "1"})
        clock.advance(1)
        self.successResultOf(admit(gate, fake_request("dev"), body_size=100))

    def test_client_certificate_limits(self) -> None:
        """
        Limits are configurable per client-certificate identity (see also
        the token file's and OIDC's group limits).
        """
        from sealgw.config import ClientCertIdentity
        from tests.test_auth_clientcert import make_certificate

        gate = make_gate(
            auth=AuthConfig(
                client_certificates=ClientCertConfig(
                    identities={
                        "agent-1": ClientCertIdentity(
                            tenants=("t",), limits=RateLimitConfig(max_concurrent=1)
                        )
                    }
                )
            )
        )
        cert = make_certificate(cn="agent-1")
        admission = self.successResultOf(admit(gate, fake_request(certificate=cert)))
        self.assertEqual(admission.identity.limits, RateLimitConfig(max_concurrent=1))
        self.failureResultOf(admit(gate, fake_request(certificate=cert)), RateLimited)
