"""
Pushes and the upstream's push slots: a slot per attempt, given back
however the attempt ends and while a retry waits; a tenant's burst held
to its share; refusals answered at once, never retried.
"""

from __future__ import annotations

from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred
from twisted.trial.unittest import SynchronousTestCase

from sealgw.config import InFlightConfig
from sealgw.relay import Delivery, UpstreamUnavailable
from tests.test_relay_http import FakeResponse, Harness

#: An answer that never comes (until the push is cancelled).
PENDING = object()


def harness(outcomes: list[object], **in_flight: object) -> Harness:
    settings = {"pushes": 2, "tenant_share": 0.5, "tenant_queue": 1, **in_flight}
    return Harness(outcomes, in_flight=InFlightConfig(**settings))  # type: ignore[arg-type]


class PushSlotTests(SynchronousTestCase):
    def deliver(self, h: Harness, tenant: str) -> Deferred[Delivery]:
        """
        A push of C{tenant}, cancelled when the test ends if it is still
        under way (a coroutine left waiting would be closed whenever it is
        collected, giving its slot to a waiting push in another test).
        """
        d = h.deliver(tenant=tenant)

        def cancel() -> None:
            if not d.called:
                d.addErrback(lambda _: None)
                d.cancel()

        self.addCleanup(cancel)
        return d

    def test_share(self) -> None:
        """
        Tenant A's push beyond its share waits; B's goes at once.
        """
        h = harness([PENDING, FakeResponse(204), FakeResponse(204)])
        a1 = self.deliver(h, "a")
        a2 = self.deliver(h, "a")
        self.assertEqual(len(h.client.requests), 1)
        self.successResultOf(self.deliver(h, "b"))
        self.assertEqual(len(h.client.requests), 2)
        self.assertNoResult(a2)
        a1.cancel()
        self.failureResultOf(a1, CancelledError)
        self.successResultOf(a2)
        self.assertEqual(h.upstream.slots.in_use, 0)

    def test_share_of_label_tenancy_pushes(self) -> None:
        """
        Pushes to an upstream that keeps tenants apart by label send no
        tenant header (their tenant is inside the body), and still count
        against the share of the tenant whose data they are: A's second
        waits, B's goes at once.
        """
        h = harness([PENDING, FakeResponse(204), FakeResponse(204)])
        a1 = h.deliver(tenant=None, owner="a")
        self.addCleanup(lambda: a1.called or a1.cancel())
        a2 = h.deliver(tenant=None, owner="a")
        self.assertEqual(len(h.client.requests), 1)
        self.successResultOf(h.deliver(tenant=None, owner="b"))
        self.assertEqual(len(h.client.requests), 2)
        self.assertNoResult(a2)
        a1.cancel()
        self.failureResultOf(a1, CancelledError)
        self.successResultOf(a2)
        self.assertEqual(h.upstream.slots.in_use, 0)

    def test_tenant_queue_full_429_not_retried(self) -> None:
        h = harness([PENDING])
        self.deliver(h, "a")
        self.deliver(h, "a")
        error = self.failureResultOf(self.deliver(h, "a"), UpstreamUnavailable).value
        self.assertEqual(error.status, 429)
        self.assertIn("upstreams.mimir.in_flight.tenant_queue", error.reason)
        self.assertEqual(error.retry_after, 5.0)
        self.assertEqual(len(h.client.requests), 1)
        # Never sent, so not timed.
        self.assertEqual(h.metrics.observed, [])
        self.assertEqual(h.metrics.retries, [])

    def test_slot_not_held_while_retry_waits(self) -> None:
        h = harness([FakeResponse(500), FakeResponse(204)])
        d = self.deliver(h, "a")
        self.assertNoResult(d)
        self.assertEqual(h.upstream.slots.in_use, 0)
        h.clock.advance(0.125)
        self.successResultOf(d)
        self.assertEqual(h.upstream.slots.in_use, 0)

    def test_cancel_while_waiting(self) -> None:
        h = harness([PENDING, FakeResponse(204)])
        first = self.deliver(h, "a")
        waiting = self.deliver(h, "a")
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        self.assertEqual((h.upstream.slots.waiting, h.upstream.slots.in_use), (0, 1))
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.assertEqual(h.upstream.slots.in_use, 0)
        self.assertEqual(len(h.client.requests), 1)

    def test_final_503_has_retry_after(self) -> None:
        """
        A push that could not reach its upstream is answered 503 with a
        C{Retry-After}, though nobody upstream said when.
        """
        refused = ierror.ConnectionRefusedError()
        h = harness([refused] * 4)
        d = self.deliver(h, "a")
        for delay in (0.125, 0.25, 0.5):
            h.clock.advance(delay)
        error = self.failureResultOf(d, UpstreamUnavailable).value
        self.assertEqual((error.status, error.retry_after), (503, 5.0))
        self.assertEqual(h.upstream.slots.in_use, 0)

    def test_health(self) -> None:
        h = harness([PENDING])
        self.deliver(h, "a")
        self.assertEqual(
            h.upstream.health()["pushes_in_flight"], {"in_use": 1, "limit": 2, "waiting": 0}
        )
