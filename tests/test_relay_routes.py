"""
A push route's targets and fan-out, on in-memory upstreams: which
upstreams a tenant's push goes to, and what the client hears when copies
end differently.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.trial.unittest import SynchronousTestCase

from sealgw.config import RouteConfig
from sealgw.relay import (
    Delivery,
    DeliveryFailed,
    PushRoute,
    UpstreamRejected,
    UpstreamUnavailable,
    worst,
)
from sealgw.signals.push import Push
from sealgw.testing import MemoryUpstream


def push(tenant: str | None = "team-a", owner: str | None = None) -> Push:
    return Push("remote_write", tenant, b"body", "application/x-protobuf", "snappy", owner=owner)


class TargetsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.mimir = MemoryUpstream("mimir")
        self.eu = MemoryUpstream("mimir-eu")
        self.azure = MemoryUpstream("azure")
        self.upstreams = {"mimir": self.mimir, "mimir-eu": self.eu, "azure": self.azure}

    def test_one_upstream(self) -> None:
        """
        A route without tenants or copies delivers to its upstream only, at
        its path, and passes its answer on as it is.
        """
        route = PushRoute(RouteConfig(upstream="mimir", path="/api/v1/push"), self.upstreams)
        answer = Delivery(200, b"ok", 2)
        self.mimir.play(answer)
        self.assertIs(self.successResultOf(route.deliver(push())), answer)
        [sent] = self.mimir.pushes
        self.assertEqual(sent.path, "/api/v1/push")
        self.assertEqual((self.eu.pushes, self.azure.pushes), ([], []))

    def test_tenants_elsewhere(self) -> None:
        """
        A tenant named under C{tenants} goes to its own upstreams instead;
        the others to the route's.  A push whose tenant travels as a label
        is routed by its owner.
        """
        config = RouteConfig(upstream="mimir", tenants={"team-eu": ("mimir-eu",)})
        route = PushRoute(config, self.upstreams)
        self.successResultOf(route.deliver(push("team-eu")))
        self.successResultOf(route.deliver(push(None, owner="team-eu")))
        self.successResultOf(route.deliver(push("team-a")))
        self.assertEqual(len(self.eu.delivered), 2)
        self.assertEqual([p.tenant for p in self.mimir.delivered], ["team-a"])
        self.assertEqual(route.targets("team-eu"), (self.eu,))
        self.assertEqual(route.targets("other"), (self.mimir,))

    def test_also(self) -> None:
        """
        C{also} sends every push to each of its upstreams as well, the same
        push to each; the first target's answer is the one passed on.
        """
        config = RouteConfig(
            upstream="mimir", path="/p", tenants={"team-eu": ("mimir-eu",)}, also=("azure",)
        )
        route = PushRoute(config, self.upstreams)
        first = Delivery(200, b"mimir says", 1)
        self.mimir.play(first)
        self.assertIs(self.successResultOf(route.deliver(push())), first)
        self.successResultOf(route.deliver(push("team-eu")))
        self.assertEqual([p.tenant for p in self.azure.delivered], ["team-a", "team-eu"])
        self.assertEqual(self.mimir.delivered[0], self.azure.delivered[0])
        self.assertEqual(self.azure.delivered[0].path, "/p")
        self.assertEqual(len(self.eu.delivered), 1)

    def test_waits_for_every_copy(self) -> None:
        """
        The answer waits until every target has answered, even once one of
        them has failed: the others' copies are not cancelled.
        """
        route = PushRoute(RouteConfig(upstream="mimir", also=("azure",)), self.upstreams)
        slow: Deferred[Delivery] = Deferred()
        self.mimir.play(UpstreamUnavailable(503, "down"))
        self.azure.play(slow)
        result = route.deliver(push())
        self.assertNoResult(result)
        slow.callback(Delivery(204, b"", 1))
        failure = self.failureResultOf(result, UpstreamUnavailable)
        self.assertEqual(failure.value.status, 503)
        self.assertEqual(len(self.azure.delivered), 1)

    def test_every_copy_accepted(self) -> None:
        route = PushRoute(RouteConfig(upstream="mimir", also=("azure", "mimir-eu")), self.upstreams)
        self.successResultOf(route.deliver(push()))
        for upstream in self.upstreams.values():
            self.assertEqual(len(upstream.delivered), 1, upstream)

    def test_retryable_failure_wins(self) -> None:
        """
        One target refusing the data and another unavailable: the client
        is told to retry, or the unavailable one would never get it.
        """
        route = PushRoute(RouteConfig(upstream="mimir", also=("azure",)), self.upstreams)
        self.mimir.play(UpstreamRejected(400, "bad sample"))
        self.azure.play(UpstreamUnavailable(502, "azure 500"))
        failure = self.failureResultOf(route.deliver(push()), UpstreamUnavailable)
        self.assertEqual((failure.value.status, failure.value.reason), (502, "azure 500"))

    def test_rejected_when_none_retryable(self) -> None:
        """
        When every copy that failed was refused, the client hears the
        first target's refusal (a 4xx, never turned into a 5xx).
        """
        route = PushRoute(RouteConfig(upstream="mimir", also=("azure",)), self.upstreams)
        self.azure.play(UpstreamRejected(413, "too big"))
        failure = self.failureResultOf(route.deliver(push()), UpstreamRejected)
        self.assertEqual(failure.value.status, 413)

    def test_cancel_reaches_every_copy(self) -> None:
        """
        A client that goes away cancels every copy still under way.
        """
        cancelled: list[str] = []
        first: Deferred[Delivery] = Deferred(lambda d: cancelled.append("mimir"))
        second: Deferred[Delivery] = Deferred(lambda d: cancelled.append("azure"))
        self.mimir.play(first)
        self.azure.play(second)
        route = PushRoute(RouteConfig(upstream="mimir", also=("azure",)), self.upstreams)
        result = route.deliver(push())
        result.cancel()
        self.failureResultOf(result, CancelledError)
        self.assertEqual(cancelled, ["mimir", "azure"])

    def test_unexpected_error_not_hidden(self) -> None:
        """
        A fault that is no delivery outcome is not turned into one: the
        route answers it as the gateway's own error.
        """
        broken: Deferred[Delivery] = Deferred()
        self.azure.play(broken)
        route = PushRoute(RouteConfig(upstream="mimir", also=("azure",)), self.upstreams)
        result = route.deliver(push())
        broken.errback(ZeroDivisionError())
        self.failureResultOf(result, ZeroDivisionError)


class WorstTests(SynchronousTestCase):
    def test_longest_retry_after(self) -> None:
        """
        Among failures to retry, the one asking to wait longest: no target
        is asked again sooner than it said.
        """
        short = UpstreamUnavailable(503, "a", retry_after=2.0)
        none = UpstreamUnavailable(502, "b")
        long = UpstreamUnavailable(429, "c", retry_after=30.0)
        self.assertIs(worst([short, none, long]), long)
        self.assertIs(worst([none, UpstreamUnavailable(504, "d")]), none)

    def test_order(self) -> None:
        rejected = UpstreamRejected(400, "x")
        unavailable = UpstreamUnavailable(503, "y")
        self.assertIs(worst([rejected, unavailable]), unavailable)
        self.assertIs(worst([rejected, UpstreamRejected(422, "z")]), rejected)
        other = DeliveryFailed(500, "z")
        self.assertIs(worst([other]), other)
