"""
Tests for L{sealgw.relay.HTTPUpstream}'s logic: retries, status mapping,
timeouts, cancellation, headers and body limits, on a L{Clock}: through the
real L{sealgw.http.HTTPClient} over a scripted treq-like fake (and treq's
C{StubTreq}), and over L{sealgw.testing.MemoryHTTPClient}.
"""

from __future__ import annotations

import base64
import email.utils
from typing import Any, Optional, Union

import attr
from prometheus_client import CollectorRegistry
from treq.testing import HasHeaders, RequestSequence, StringStubbingResource, StubTreq
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._newclient import ResponseNeverReceived
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers

from sealgw.config import (
    BasicAuthConfig,
    HTTPUpstreamConfig,
    RetryConfig,
    Secret,
    TimeoutsConfig,
)
from sealgw.credentials import BearerCredentials, credentials_for
from sealgw.http import USER_AGENT, HTTPClient
from sealgw.relay import (
    Delivery,
    HTTPUpstream,
    Push,
    RelayMetrics,
    UpstreamRejected,
    UpstreamUnavailable,
)
from sealgw.testing import MemoryHTTPClient, MemoryResponse, script

HANG = object()
"""A scripted outcome: the request never gets an answer."""


class FakeBodyTransport:
    def __init__(self) -> None:
        self.lost = False

    def loseConnection(self) -> None:
        self.lost = True


class FakeResponse:
    """
    Enough of C{IResponse} for the relay.  With C{hold=True} the body never
    ends, to drive body timeouts.
    """

    def __init__(
        self,
        code: int,
        body: bytes = b"",
        headers: Optional[dict[bytes, list[bytes]]] = None,
        hold: bool = False,
    ) -> None:
        self.code = code
        self.headers = Headers(headers or {})
        self.length = len(body)
        self._body = body
        self._hold = hold
        self.transport = FakeBodyTransport()

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(self.transport)
        # Two chunks, so the cap is exercised across dataReceived calls.
        half = len(self._body) // 2
        for chunk in (self._body[:half], self._body[half:]):
            if chunk and not self.transport.lost:
                protocol.dataReceived(chunk)
        if not self._hold and not self.transport.lost:
            protocol.connectionLost(Failure(ResponseDone()))


Outcome = Union[FakeResponse, Exception, object]


@attr.define
class FakeRequest:
    method: str
    url: str
    headers: Headers
    data: bytes
    kwargs: dict[str, Any]
    deferred: Deferred[Any]
    cancelled: bool = False


class FakeClient:
    """
    A treq-like client answering from a script.  Cancelling a pending
    request fails it with C{ResponseNeverReceived}, as Twisted's Agent
    does, so tests see that the relay does not take that for a network
    failure worth retrying.
    """

    def __init__(self, outcomes: list[Outcome]) -> None:
        self.outcomes = list(outcomes)
        self.requests: list[FakeRequest] = []

    def request(self, method: str, url: Any, **kwargs: Any) -> Deferred[Any]:
        headers = kwargs.pop("headers")
        data = kwargs.pop("data")
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, FakeResponse):
            d: Deferred[Any] = succeed(outcome)
        elif isinstance(outcome, Exception):
            d = fail(outcome)
        else:

            def cancel(d: Deferred[Any]) -> None:
                request.cancelled = True
                d.errback(Failure(ResponseNeverReceived([Failure(CancelledError())])))

            d = Deferred(cancel)
        # treq takes a str or a parsed URL; record what it would send.
        text = url if isinstance(url, str) else url.to_text()
        request = FakeRequest(method, text, headers, data, kwargs, d)
        self.requests.append(request)
        return d


class ListMetrics:
    def __init__(self) -> None:
        self.observed: list[tuple[str, str, float]] = []
        self.retries: list[tuple[str, str]] = []

    def observe(self, upstream: str, status: str, seconds: float) -> None:
        self.observed.append((upstream, status, seconds))

    def retried(self, upstream: str, reason: str) -> None:
        self.retries.append((upstream, reason))


def config(**kwargs: Any) -> HTTPUpstreamConfig:
    defaults: dict[str, Any] = dict(
        name="mimir",
        url="http://mimir:9009",
        timeouts=TimeoutsConfig(connect=1.0, response=10.0, body=5.0),
        retry=RetryConfig(attempts=4, initial_backoff=0.25, max_backoff=5.0, deadline=30.0),
    )
    defaults.update(kwargs)
    return HTTPUpstreamConfig(**defaults)


def push(**kwargs: Any) -> Push:
    defaults: dict[str, Any] = dict(
        signal="remote_write",
        tenant="team-a",
        body=b"\x00snappy",
        content_type="application/x-protobuf",
        content_encoding="snappy",
        path="/api/v1/push",
        extra_headers={"X-Prometheus-Remote-Write-Version": "0.1.0"},
    )
    defaults.update(kwargs)
    return Push(**defaults)


def client_over(
    treq: Any,
    upstream: HTTPUpstreamConfig,
    clock: Clock,
    credentials: Any = None,
    tenant_header: str = "X-Scope-OrgID",
) -> HTTPClient:
    """
    The real client for C{upstream}, sending through C{treq}.
    """
    return HTTPClient(
        clock,
        name=upstream.name,
        timeouts=upstream.timeouts,
        headers=upstream.headers,
        tenant_header=tenant_header,
        credentials=credentials if credentials is not None else credentials_for(upstream),
        treq=treq,
    )


class Harness:
    """
    An upstream over a fake client on a clock.  The random half of the
    jitter is 0, so the n-th retry waits exactly C{initial * 2**n / 2}.
    """

    def __init__(self, outcomes: list[Outcome], **kwargs: Any) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.client = FakeClient(outcomes)
        self.metrics = ListMetrics()
        upstream_kwargs = {
            k: kwargs.pop(k) for k in ("credentials", "tenant_header") if k in kwargs
        }
        metrics = kwargs.pop("metrics", self.metrics)
        upstream_config = config(**kwargs)
        self.upstream = HTTPUpstream(
            upstream_config,
            self.clock,
            client=client_over(self.client, upstream_config, self.clock, **upstream_kwargs),
            metrics=metrics,
            random=lambda: 0.0,
        )

    def deliver(self, **kwargs: Any) -> Deferred[Delivery]:
        kwargs.setdefault("received_at", self.clock.seconds())
        return self.upstream.deliver(push(**kwargs))


class DeliveryTests(SynchronousTestCase):
    def test_success(self) -> None:
        h = Harness([FakeResponse(200, b"{}", {b"Content-Type": [b"application/json"]})])
        delivery = self.successResultOf(h.deliver())
        self.assertEqual(delivery.status, 200)
        self.assertEqual(delivery.body, b"{}")
        self.assertEqual(delivery.attempts, 1)
        self.assertFalse(delivery.body_truncated)
        [request] = h.client.requests
        self.assertEqual(request.method, "POST")
        self.assertEqual(request.url, "http://mimir:9009/api/v1/push")
        self.assertEqual(request.data, b"\x00snappy")
        self.assertEqual(request.kwargs["allow_redirects"], False)
        self.assertEqual(h.metrics.observed, [("mimir", "200", 0.0)])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_5xx_then_2xx(self) -> None:
        """
        A 5xx is retried after the backoff, and the retry's success is the
        result.
        """
        h = Harness([FakeResponse(500, b"ingester down"), FakeResponse(204)])
        d = h.deliver()
        self.assertNoResult(d)
        h.clock.advance(0.124)
        self.assertEqual(len(h.client.requests), 1)
        h.clock.advance(0.001)
        delivery = self.successResultOf(d)
        self.assertEqual((delivery.status, delivery.attempts), (204, 2))
        self.assertEqual(h.metrics.retries, [("mimir", "5xx")])
        self.assertEqual([o[1] for o in h.metrics.observed], ["500", "204"])

    def test_5xx_exhausted(self) -> None:
        """
        After C{attempts} 5xx answers the client is told 502, with the
        upstream's words and how many attempts were made.
        """
        h = Harness([FakeResponse(500, b"ingester down")] * 4)
        d = h.deliver()
        for delay in (0.125, 0.25, 0.5):
            h.clock.advance(delay)
        error = self.failureResultOf(d, UpstreamUnavailable).value
        self.assertEqual(error.status, 502)
        self.assertIn("ingester down", error.reason)
        self.assertIn("4 attempts", error.reason)
        self.assertEqual(len(h.client.requests), 4)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_503_exhausted(self) -> None:
        """
        An upstream that says 503 to the end is reported as 503.
        """
        h = Harness([FakeResponse(503)] * 2, retry=RetryConfig(attempts=2))
        d = h.deliver()
        h.clock.advance(0.125)
        error = self.failureResultOf(d, UpstreamUnavailable).value
        self.assertEqual(error.status, 503)

    def test_400_not_retried(self) -> None:
        h = Harness([FakeResponse(400, b"err-mimir-sample-out-of-order\n")])
        error = self.failureResultOf(h.deliver(), UpstreamRejected).value
        self.assertEqual(error.status, 400)
        self.assertEqual(error.reason, "err-mimir-sample-out-of-order")
        self.assertEqual(len(h.client.requests), 1)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_other_4xx_kept(self) -> None:
        for status in (404, 413, 422):
            h = Harness([FakeResponse(status)])
            error = self.failureResultOf(h.deliver(), UpstreamRejected).value
            self.assertEqual(error.status, status)
            self.assertEqual(error.reason, f"upstream answered {status}")

    def test_reason_truncated(self) -> None:
        h = Harness([FakeResponse(400, b"x" * 5000)])
        error = self.failureResultOf(h.deliver(), UpstreamRejected).value
        self.assertEqual(error.reason, "x" * 1024 + "...")

    def test_credentials_refused(self) -> None:
        """
        The upstream refusing I{our} credentials is the gateway's problem,
        not the client's: 502, so the data is sent again once fixed.
        """
        for status in (401, 403):
            h = Harness([FakeResponse(status, b"invalid token")])
            error = self.failureResultOf(h.deliver(), UpstreamUnavailable).value
            self.assertEqual(error.status, 502)
            self.assertIn("credentials", error.reason)
            self.assertEqual(len(h.client.requests), 1)

    def test_408_is_a_timeout(self) -> None:
        h = Harness([FakeResponse(408)] * 2, retry=RetryConfig(attempts=2))
        d = h.deliver()
        h.clock.advance(0.125)
        error = self.failureResultOf(d, UpstreamUnavailable).value
        self.assertEqual(error.status, 504)
        self.assertEqual(h.metrics.retries, [("mimir", "timeout")])

    def test_redirect_not_followed(self) -> None:
        h = Harness([FakeResponse(301, headers={b"Location": [b"http://elsewhere/"]})])
        error = self.failureResultOf(h.deliver(), UpstreamUnavailable).value
        self.assertEqual(error.status, 502)
        self.assertEqual(len(h.client.requests), 1)


class RateLimitTests(SynchronousTestCase):
    def test_retry_after_seconds(self) -> None:
        """
        The wait is exactly what the upstream asked for.
        """
        h = Harness([FakeResponse(429, headers={b"Retry-After": [b"3"]}), FakeResponse(204)])
        d = h.deliver()
        h.clock.advance(2.999)
        self.assertEqual(len(h.client.requests), 1)
        h.clock.advance(0.001)
        self.assertEqual(self.successResultOf(d).attempts, 2)
        self.assertEqual(h.metrics.retries, [("mimir", "429")])

    def test_retry_after_date(self) -> None:
        h = Harness([])
        date = email.utils.formatdate(h.clock.seconds() + 7, usegmt=True).encode()
        h.client.outcomes = [
            FakeResponse(503, headers={b"Retry-After": [date]}),
            FakeResponse(204),
        ]
        d = h.deliver()
        h.clock.advance(6.9)
        self.assertNoResult(d)
        h.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d).attempts, 2)

    def test_exhausted_is_429(self) -> None:
        """
        A rate limit that outlasts the retries reaches the client as 429
        with the upstream's Retry-After, so it slows down.
        """
        h = Harness(
            [FakeResponse(429, b"ingestion rate limit", {b"Retry-After": [b"2"]})] * 2,
            retry=RetryConfig(attempts=2),
        )
        d = h.deliver()
        h.clock.advance(2)
        error = self.failureResultOf(d, UpstreamUnavailable).value
        self.assertEqual((error.status, error.retry_after), (429, 2.0))
        self.assertIn("ingestion rate limit", error.reason)

    def test_retry_after_beyond_deadline(self) -> None:
        """
        A Retry-After past the deadline ends the delivery at once, passing
        the wait on to the client.
        """
        h = Harness([FakeResponse(429, headers={b"Retry-After": [b"60"]})])
        error = self.failureResultOf(h.deliver(), UpstreamUnavailable).value
        self.assertEqual((error.status, error.retry_after), (429, 60.0))
        self.assertIn("deadline", error.reason)
        self.assertEqual(h.clock.getDelayedCalls(), [])


class DeadlineTests(SynchronousTestCase):
    def test_deadline_stops_retries(self) -> None:
        """
        Retries stop when the next would start after C{received_at +
        deadline}, however many attempts are left.  Waits: 0.125, 0.25,
        0.5 (t=0.875), the next 1.0 would start at 1.875 > 1.5.
        """
        h = Harness(
            [FakeResponse(502)] * 10,
            retry=RetryConfig(attempts=10, initial_backoff=0.25, max_backoff=5, deadline=1.5),
        )
        d = h.deliver()
        h.clock.pump([0.125, 0.25, 0.5])
        error = self.failureResultOf(d, UpstreamUnavailable).value
        self.assertEqual(len(h.client.requests), 4)
        self.assertIn("deadline", error.reason)

    def test_deadline_counts_from_received_at(self) -> None:
        """
        Time the request spent before reaching the relay counts.
        """
        h = Harness([FakeResponse(500)] * 2, retry=RetryConfig(attempts=4, deadline=1.0))
        d = h.deliver(received_at=h.clock.seconds() - 0.9)
        self.failureResultOf(d, UpstreamUnavailable)
        self.assertEqual(len(h.client.requests), 1)


class ConnectionTests(SynchronousTestCase):
    def test_refused(self) -> None:
        h = Harness(
            [ierror.ConnectionRefusedError(), FakeResponse(204)], retry=RetryConfig(attempts=2)
        )
        d = h.deliver()
        h.clock.advance(0.125)
        self.assertEqual(self.successResultOf(d).attempts, 2)
        self.assertEqual(h.metrics.retries, [("mimir", "connection_error")])

    def test_refused_exhausted_is_503(self) -> None:
        h = Harness([ierror.ConnectionRefusedError()] * 2, retry=RetryConfig(attempts=2))
        d = h.deliver()
        h.clock.advance(0.125)
        error = self.failureResultOf(d, UpstreamUnavailable).value
        self.assertEqual(error.status, 503)
        # The upstream's address and error text stay in the gateway's log.
        self.assertEqual(error.reason, "cannot reach upstream (gave up after 2 attempts)")
        self.assertEqual([o[1] for o in h.metrics.observed], ["connection_error"] * 2)

    def test_dns_and_reset(self) -> None:
        for exc in [
            ierror.DNSLookupError("mimir"),
            ResponseNeverReceived([Failure(ierror.ConnectionLost("reset"))]),
        ]:
            h = Harness([exc], retry=RetryConfig(attempts=1))
            error = self.failureResultOf(h.deliver(), UpstreamUnavailable).value
            self.assertEqual(error.status, 503, exc)

    def test_connect_timeout_is_504(self) -> None:
        h = Harness([ierror.TimeoutError()], retry=RetryConfig(attempts=1))
        error = self.failureResultOf(h.deliver(), UpstreamUnavailable).value
        self.assertEqual(error.status, 504)

    def test_unexpected_error(self) -> None:
        """
        Anything unforeseen still ends as a status the client retries on.
        """
        h = Harness([RuntimeError("boom")])
        error = self.failureResultOf(h.deliver(), UpstreamUnavailable).value
        self.assertEqual(error.status, 502)
        self.assertEqual(len(h.client.requests), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class TimeoutTests(SynchronousTestCase):
    def test_response_timeout(self) -> None:
        """
        No response headers within C{timeouts.response}: the request is
        cancelled, retried, and finally answered 504.
        """
        h = Harness([HANG, HANG], retry=RetryConfig(attempts=2))
        d = h.deliver()
        h.clock.advance(9.999)
        self.assertFalse(h.client.requests[0].cancelled)
        h.clock.advance(0.001)
        self.assertTrue(h.client.requests[0].cancelled)
        h.clock.advance(0.125)
        self.assertEqual(len(h.client.requests), 2)
        h.clock.advance(10)
        error = self.failureResultOf(d, UpstreamUnavailable).value
        self.assertEqual(error.status, 504)
        self.assertEqual(error.reason, "upstream timed out (gave up after 2 attempts)")
        self.assertEqual(h.metrics.retries, [("mimir", "timeout")])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_body_timeout_after_2xx(self) -> None:
        """
        A 2xx is a delivery even when its body then stalls; the stalled
        connection is dropped.
        """
        response = FakeResponse(200, b"partial", hold=True)
        response.length = 100
        h = Harness([response])
        d = h.deliver()
        self.assertNoResult(d)
        h.clock.advance(5)
        delivery = self.successResultOf(d)
        self.assertEqual(delivery.body, b"partial")
        self.assertTrue(delivery.body_truncated)
        self.assertTrue(response.transport.lost)

    def test_body_timeout_after_5xx(self) -> None:
        response = FakeResponse(500, b"", hold=True)
        response.length = 100
        h = Harness([response, FakeResponse(204)])
        d = h.deliver()
        h.clock.advance(5)
        h.clock.advance(0.125)
        self.assertEqual(self.successResultOf(d).attempts, 2)


class CancellationTests(SynchronousTestCase):
    def test_cancel_request(self) -> None:
        """
        Cancelling the delivery cancels the request in flight and nothing
        is retried, although the request fails with what looks like a
        network error.
        """
        h = Harness([HANG, FakeResponse(204)])
        d = h.deliver()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(h.client.requests[0].cancelled)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        h.clock.advance(100)
        self.assertEqual(len(h.client.requests), 1)
        self.assertEqual(h.metrics.observed, [("mimir", "cancelled", 0.0)])

    def test_cancel_backoff(self) -> None:
        h = Harness([FakeResponse(500), FakeResponse(204)])
        d = h.deliver()
        self.assertEqual(len(h.clock.getDelayedCalls()), 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        h.clock.advance(100)
        self.assertEqual(len(h.client.requests), 1)

    def test_cancel_body_read(self) -> None:
        response = FakeResponse(200, b"", hold=True)
        response.length = 10
        h = Harness([response])
        d = h.deliver()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(response.transport.lost)
        self.assertEqual(h.clock.getDelayedCalls(), [])


class HeaderTests(SynchronousTestCase):
    def sent(self, h: Harness, **push_kwargs: Any) -> Headers:
        self.successResultOf(h.deliver(**push_kwargs))
        return h.client.requests[-1].headers

    def test_protocol_headers(self) -> None:
        headers = self.sent(Harness([FakeResponse(204)]))
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/x-protobuf"])
        self.assertEqual(headers.getRawHeaders(b"content-encoding"), [b"snappy"])
        self.assertEqual(
            headers.getRawHeaders(b"x-prometheus-remote-write-version"), [b"0.1.0"]
        )
        self.assertEqual(headers.getRawHeaders(b"user-agent"), [USER_AGENT])
        self.assertEqual(headers.getRawHeaders(b"x-scope-orgid"), [b"team-a"])
        self.assertIsNone(headers.getRawHeaders(b"authorization"))

    def test_no_content_encoding(self) -> None:
        h = Harness([FakeResponse(204)], headers={"Content-Encoding": "gzip"})
        headers = self.sent(h, content_encoding=None)
        self.assertIsNone(headers.getRawHeaders(b"content-encoding"))

    def test_tenant_overwritten(self) -> None:
        """
        The tenant header carries the push's tenant, whatever the client or
        the static headers said.
        """
        h = Harness([FakeResponse(204)], headers={"X-Scope-OrgID": "static"})
        headers = self.sent(
            h, extra_headers={"x-scope-orgid": "victim|team-a", "X-Other": "1"}
        )
        self.assertEqual(headers.getRawHeaders(b"x-scope-orgid"), [b"team-a"])
        self.assertEqual(headers.getRawHeaders(b"x-other"), [b"1"])

    def test_no_tenant(self) -> None:
        """
        Without a tenant none is sent, except one the operator configured.
        """
        h = Harness([FakeResponse(204)])
        headers = self.sent(h, tenant=None, extra_headers={"X-Scope-OrgID": "evil"})
        self.assertIsNone(headers.getRawHeaders(b"x-scope-orgid"))
        h = Harness([FakeResponse(204)], headers={"X-Scope-OrgID": "fixed"})
        headers = self.sent(h, tenant=None, extra_headers={"X-Scope-OrgID": "evil"})
        self.assertEqual(headers.getRawHeaders(b"x-scope-orgid"), [b"fixed"])

    def test_custom_tenant_header(self) -> None:
        h = Harness([FakeResponse(204)], tenant_header="X-Tenant")
        headers = self.sent(h, extra_headers={"X-Tenant": "evil"})
        self.assertEqual(headers.getRawHeaders(b"x-tenant"), [b"team-a"])
        self.assertIsNone(headers.getRawHeaders(b"x-scope-orgid"))

    def test_basic_auth(self) -> None:
        h = Harness(
            [FakeResponse(204)],
            basic_auth=BasicAuthConfig("gw", Secret("s3cret", "test")),
        )
        headers = self.sent(h, extra_headers={"Authorization": "Bearer client-token"})
        self.assertEqual(
            headers.getRawHeaders(b"authorization"),
            [b"Basic " + base64.b64encode(b"gw:s3cret")],
        )

    def test_bearer(self) -> None:
        h = Harness([FakeResponse(204)], bearer_token=Secret("tok", "test"))
        headers = self.sent(h)
        self.assertEqual(headers.getRawHeaders(b"authorization"), [b"Bearer tok"])

    def test_credentials_asked_per_attempt(self) -> None:
        """
        A refreshed token is used by the next retry.
        """
        tokens = iter([b"Bearer one", b"Bearer two"])

        class Rotating:
            def authorization(self) -> Deferred[Optional[bytes]]:
                return succeed(next(tokens))

        h = Harness([FakeResponse(500), FakeResponse(204)], credentials=Rotating())
        d = h.deliver()
        h.clock.advance(0.125)
        self.successResultOf(d)
        self.assertEqual(
            [r.headers.getRawHeaders(b"authorization") for r in h.client.requests],
            [[b"Bearer one"], [b"Bearer two"]],
        )

    def test_credentials_unavailable(self) -> None:
        class Broken:
            def authorization(self) -> Deferred[Optional[bytes]]:
                return fail(RuntimeError("token endpoint said: secret-ish"))

        h = Harness([FakeResponse(204)], credentials=Broken())
        error = self.failureResultOf(h.deliver(), UpstreamUnavailable).value
        self.assertEqual(error.status, 503)
        self.assertNotIn("secret", error.reason)
        self.assertEqual(h.client.requests, [])

    def test_framing_headers_ignored(self) -> None:
        h = Harness([FakeResponse(204)], headers={"Content-Length": "1", "X-Static": "s"})
        headers = self.sent(h, extra_headers={"Host": "evil", "Transfer-Encoding": "chunked"})
        self.assertIsNone(headers.getRawHeaders(b"content-length"))
        self.assertIsNone(headers.getRawHeaders(b"host"))
        self.assertIsNone(headers.getRawHeaders(b"transfer-encoding"))
        self.assertEqual(headers.getRawHeaders(b"x-static"), [b"s"])

    def test_secret_not_in_repr(self) -> None:
        creds = BearerCredentials(Secret("tok-value", "test"))
        self.assertNotIn("tok-value", repr(creds))


class BodyLimitTests(SynchronousTestCase):
    def test_capped(self) -> None:
        response = FakeResponse(200, b"a" * 100)
        h = Harness([response], max_response_body=10)
        delivery = self.successResultOf(h.deliver())
        self.assertEqual(delivery.body, b"a" * 10)
        self.assertTrue(delivery.body_truncated)
        self.assertTrue(response.transport.lost)

    def test_exactly_at_cap(self) -> None:
        response = FakeResponse(200, b"a" * 10)
        h = Harness([response], max_response_body=10)
        delivery = self.successResultOf(h.deliver())
        self.assertEqual(delivery.body, b"a" * 10)
        self.assertFalse(delivery.body_truncated)
        self.assertFalse(response.transport.lost)


class PrometheusMetricsTests(SynchronousTestCase):
    def test_recorded(self) -> None:
        registry = CollectorRegistry()
        h = Harness([FakeResponse(500), FakeResponse(204)], metrics=RelayMetrics(registry))
        d = h.deliver()
        h.clock.advance(0.125)
        self.successResultOf(d)
        count = "sealgw_upstream_request_duration_seconds_count"
        self.assertEqual(
            registry.get_sample_value(count, {"upstream": "mimir", "status": "500"}), 1.0
        )
        self.assertEqual(
            registry.get_sample_value(count, {"upstream": "mimir", "status": "204"}), 1.0
        )
        self.assertEqual(
            registry.get_sample_value(
                "sealgw_upstream_retries_total", {"upstream": "mimir", "reason": "5xx"}
            ),
            1.0,
        )


class StubTreqTests(SynchronousTestCase):
    """
    The same upstream over treq's in-memory client: real HTTP framing, a
    scripted exchange.
    """

    def test_exchange(self) -> None:
        clock = Clock()
        expected_headers = HasHeaders({
            "X-Scope-OrgID": ["team-a"],
            "Authorization": ["Bearer tok"],
            "Content-Type": ["application/x-protobuf"],
            "Content-Encoding": ["snappy"],
            "User-Agent": [USER_AGENT],
        })
        sequence = RequestSequence([
            ((b"post", "http://mimir:9009/api/v1/push", {}, expected_headers, b"\x00snappy"),
             (500, {}, b"try later")),
            ((b"post", "http://mimir:9009/api/v1/push", {}, expected_headers, b"\x00snappy"),
             (200, {b"Content-Type": b"text/plain"}, b"ok")),
        ])
        stub = StubTreq(StringStubbingResource(sequence))
        upstream_config = config(bearer_token=Secret("tok", "test"))
        upstream = HTTPUpstream(
            upstream_config,
            clock,
            client=client_over(stub, upstream_config, clock),
            random=lambda: 0.0,
        )
        with sequence.consume(self.fail):
            d = upstream.deliver(push(received_at=clock.seconds(),
                                      extra_headers={"X-Scope-OrgID": "other"}))
            clock.advance(0.125)
            delivery = self.successResultOf(d)
        self.assertEqual((delivery.status, delivery.body, delivery.attempts), (200, b"ok", 2))

    def test_rejected(self) -> None:
        sequence = RequestSequence([
            ((b"post", "http://mimir:9009/api/v1/push", {}, HasHeaders({}), b"\x00snappy"),
             (400, {}, b"bad labels")),
        ])
        stub = StubTreq(StringStubbingResource(sequence))
        clock = Clock()
        upstream = HTTPUpstream(config(), clock, client=client_over(stub, config(), clock))
        with sequence.consume(self.fail):
            error = self.failureResultOf(upstream.deliver(push()), UpstreamRejected).value
        self.assertEqual((error.status, error.reason), (400, "bad labels"))


class MemoryClientTests(SynchronousTestCase):
    """
    The relay over L{sealgw.testing.MemoryHTTPClient}: what an upstream
    would receive, without a treq in between.
    """

    def upstream(self, *answers: Any, **kwargs: Any) -> tuple[HTTPUpstream, MemoryHTTPClient]:
        self.clock = Clock()
        self.metrics = ListMetrics()
        client = MemoryHTTPClient(script(*answers), **kwargs)
        upstream = HTTPUpstream(
            config(), self.clock, client=client, metrics=self.metrics, random=lambda: 0.0
        )
        return upstream, client

    def test_delivered(self) -> None:
        upstream, client = self.upstream(MemoryResponse(204))
        delivery = self.successResultOf(upstream.deliver(push(
            received_at=0.0,
            extra_headers={"Authorization": "Bearer client", "User-Agent": "evil",
                           "X-Scope-OrgID": "other", "X-Prometheus-Remote-Write-Version": "0.1.0"},
        )))
        self.assertEqual(delivery.status, 204)
        [sent] = client.requests
        self.assertEqual((sent.method, sent.url, sent.body),
                         ("POST", "http://mimir:9009/api/v1/push", b"\x00snappy"))
        self.assertEqual(sent.header("X-Scope-OrgID"), "team-a")
        self.assertEqual(sent.header("Content-Encoding"), "snappy")
        self.assertEqual(sent.header("X-Prometheus-Remote-Write-Version"), "0.1.0")
        self.assertEqual(sent.header("User-Agent"), USER_AGENT.decode())
        self.assertIsNone(sent.header("Authorization"))

    def test_credentials_unavailable_not_timed(self) -> None:
        """
        A request never sent because there were no credentials is a 503
        without retries, and is not counted as a request attempt.
        """
        class Broken:
            def authorization(self) -> Deferred[Optional[bytes]]:
                return fail(RuntimeError("no token"))

        upstream, client = self.upstream(MemoryResponse(204), credentials=Broken())
        error = self.failureResultOf(upstream.deliver(push()), UpstreamUnavailable).value
        self.assertEqual((error.status, error.reason),
                         (503, "the gateway's credentials for upstream are not available"))
        self.assertEqual(client.requests, [])
        self.assertEqual(self.metrics.observed, [])
        self.assertEqual(self.metrics.retries, [])

    def test_given_client_not_closed(self) -> None:
        """
        A client passed in is its giver's to close; one the upstream built
        is closed with it.
        """
        upstream, client = self.upstream()
        self.successResultOf(upstream.close())
        self.assertFalse(client.closed)
        owned = HTTPUpstream(config(), Clock())
        assert isinstance(owned.client, HTTPClient) and owned.client.pool is not None
        closed: list[bool] = []
        owned.client.pool.closeCachedConnections = (  # type: ignore[method-assign]
            lambda: succeed(closed.append(True))
        )
        self.successResultOf(owned.close())
        self.assertEqual(closed, [True])
