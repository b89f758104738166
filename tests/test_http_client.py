"""
Tests for L{sealgw.http.HTTPClient}'s logic on a L{Clock}, over a
scripted treq-like fake: the header policy, credentials, timeouts,
cancellation, capped and streamed bodies, trust roots and URLs; how it
sends on the Agent, and, over real sockets, that answers come as the
upstream encoded them.
"""

from __future__ import annotations

import gzip
import json
from typing import Any, Optional

import attr
from hyperlink import EncodedURL
from treq.client import HTTPClient as TreqClient
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import FileBodyProducer, ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH
from zope.interface.verify import verifyObject

from sealgw.config import HTTPUpstreamConfig, Secret, TimeoutsConfig
from sealgw.credentials import BearerCredentials
from sealgw.http import (
    CACHED_CONNECTION_TIMEOUT,
    USER_AGENT,
    BodyReadFailed,
    CredentialsUnavailable,
    HeaderPolicy,
    HTTPClient,
    IHTTPClient,
    IHTTPResponse,
    OperationTimedOut,
    StreamStopped,
    join_url,
    load_trust_root,
)
from sealgw.http._body import COALESCE_BYTES
from sealgw.http._undecoded import ANSWERED, ASKED, UndecodedAgent, hide_accepted, restore
from sealgw.http._url import SentURL, sendable
from tests.e2e_support import reactor as socket_reactor
from tests.e2e_support import serve
from tests.pki import Chain, pem
from tests.test_query_support import GzipWhenAsked

TIMEOUTS = TimeoutsConfig(connect=1.0, response=10.0, body=5.0)


class FakeTransport:
    """
    The body's transport (Twisted's C{TransportProxyProducer}).
    """

    def __init__(self) -> None:
        self.lost = False
        self.paused = False

    def loseConnection(self) -> None:
        self.lost = True

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.lost = True


class FakeResponse:
    """
    Enough of C{IResponse}; the test feeds the body with L{send},
    L{finish} and L{fail}.
    """

    def __init__(self, code: int = 200, length: Any = UNKNOWN_LENGTH) -> None:
        self.code = code
        self.headers = Headers({b"Content-Type": [b"text/plain"]})
        self.length = length
        self.transport = FakeTransport()
        self.protocol: Any = None

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def finish(self) -> None:
        self.protocol.connectionLost(Failure(ResponseDone()))

    def fail(self, reason: Exception) -> None:
        self.protocol.connectionLost(Failure(reason))


@attr.define
class Sent:
    method: str
    url: Any
    kwargs: dict[str, Any]
    cancelled: bool = False


class FakeTreq:
    """
    Answers each request with the next of C{answers}: a response, an
    exception, or C{None} for a request that hangs until cancelled.
    """

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.sent: list[Sent] = []

    def request(self, method: str, url: Any, **kwargs: Any) -> Deferred[Any]:
        sent = Sent(method, url, kwargs)
        self.sent.append(sent)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            return fail(answer)
        if answer is not None:
            return succeed(answer)

        def cancel(d: Deferred[Any]) -> None:
            sent.cancelled = True

        return Deferred(cancel)


class Consumer:
    """
    An C{IConsumer} that records what it is written, and can pause its
    producer as a slow client would.
    """

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.producer: Optional[IPushProducer] = None
        self.registered = 0

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        assert streaming
        self.producer = producer
        self.registered += 1

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.data.append(data)


def client(treq: FakeTreq, clock: Optional[Clock] = None, **kwargs: Any) -> HTTPClient:
    kwargs.setdefault("timeouts", TIMEOUTS)
    return HTTPClient(clock or Clock(), name="mimir", treq=treq, **kwargs)


class HeaderPolicyTests(SynchronousTestCase):
    def compose(self, policy: HeaderPolicy, headers: dict[str, str], **kw: Any) -> Headers:
        values: dict[str, Any] = dict(
            content_type=None, content_encoding=None, tenant=None, authorization=None
        )
        values.update(kw)
        return policy.compose(headers, **values)

    def test_precedence(self) -> None:
        """
        The caller's headers, then the operator's, then what describes the
        body, the tenant and the credentials.
        """
        policy = HeaderPolicy.build(
            {"X-Static": "s", "X-Both": "static", "X-Scope-OrgID": "fixed",
             "Content-Encoding": "gzip"},
            "X-Scope-OrgID",
        )
        headers = self.compose(
            policy,
            {"X-Both": "caller", "X-Caller": "c", "Authorization": "Bearer client"},
            content_type="application/x-protobuf",
            tenant="team-a",
            authorization=b"Basic Z3c6cw==",
        )
        self.assertEqual(headers.getRawHeaders(b"user-agent"), [USER_AGENT])
        self.assertEqual(headers.getRawHeaders(b"x-both"), [b"static"])
        self.assertEqual(headers.getRawHeaders(b"x-caller"), [b"c"])
        self.assertEqual(headers.getRawHeaders(b"x-static"), [b"s"])
        self.assertEqual(headers.getRawHeaders(b"x-scope-orgid"), [b"team-a"])
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/x-protobuf"])
        self.assertIsNone(headers.getRawHeaders(b"content-encoding"))
        self.assertEqual(headers.getRawHeaders(b"authorization"), [b"Basic Z3c6cw=="])

    def test_caller_cannot_choose_tenant(self) -> None:
        """
        A caller's headers (which may echo a client's) never carry the
        tenant header, whatever its case; the operator's static one goes
        out when the request has no tenant.
        """
        policy = HeaderPolicy.build({}, "X-Tenant")
        headers = self.compose(policy, {"x-TENANT": "victim|team-a"})
        self.assertIsNone(headers.getRawHeaders(b"x-tenant"))
        policy = HeaderPolicy.build({"X-Tenant": "fixed"}, "X-Tenant")
        headers = self.compose(policy, {"X-Tenant": "evil"})
        self.assertEqual(headers.getRawHeaders(b"x-tenant"), [b"fixed"])

    def test_framing_and_body_headers_from_nobody(self) -> None:
        policy = HeaderPolicy.build({"Content-Length": "1", "Host": "h"}, "X-Scope-OrgID")
        headers = self.compose(
            policy,
            {"Transfer-Encoding": "chunked", "Content-Type": "text/html",
             "Connection": "close", "Content-Encoding": "br"},
        )
        for name in (b"content-length", b"host", b"transfer-encoding", b"content-type",
                     b"connection", b"content-encoding"):
            self.assertIsNone(headers.getRawHeaders(name), name)

    def test_caller_authorization_without_credentials(self) -> None:
        """
        Without outbound credentials the caller's C{Authorization} goes out
        (how a client's token reaches a userinfo endpoint).
        """
        policy = HeaderPolicy.build({}, "X-Scope-OrgID")
        headers = self.compose(policy, {"Authorization": "Bearer client"})
        self.assertEqual(headers.getRawHeaders(b"authorization"), [b"Bearer client"])


class RequestTests(SynchronousTestCase):
    def test_interfaces(self) -> None:
        response = FakeResponse(length=0)
        c = client(FakeTreq(response))
        self.assertTrue(verifyObject(IHTTPClient, c))
        self.assertTrue(verifyObject(IHTTPResponse, self.successResultOf(c.request("GET", "u"))))

    def test_any_method_query_and_body(self) -> None:
        treq = FakeTreq(FakeResponse(204), FakeResponse(200))
        c = client(treq)
        response = self.successResultOf(
            c.request(
                "DELETE",
                "http://mimir/api/v1/series",
                query=[("match[]", '{job="x"}'), ("start", "1")],
            )
        )
        self.assertEqual(response.status, 204)
        response = self.successResultOf(c.request("PUT", "http://mimir/x", body=b"data"))
        [delete, put] = treq.sent
        self.assertEqual((delete.method, delete.url), ("DELETE", "http://mimir/api/v1/series"))
        self.assertEqual(delete.kwargs["params"], [("match[]", '{job="x"}'), ("start", "1")])
        self.assertNotIn("data", delete.kwargs)
        self.assertEqual(delete.kwargs["allow_redirects"], False)
        self.assertEqual(delete.kwargs["unbuffered"], True)
        self.assertEqual(put.kwargs["data"], b"data")
        self.assertNotIn("params", put.kwargs)

    def test_body_producer_passed_on(self) -> None:
        treq = FakeTreq(FakeResponse(200))
        producer = FileBodyProducer(None)  # type: ignore[arg-type]
        self.successResultOf(client(treq).request("POST", "u", body=producer))
        self.assertIs(treq.sent[0].kwargs["data"], producer)

    def test_tenant_and_static_headers(self) -> None:
        treq = FakeTreq(FakeResponse(200))
        c = client(treq, headers={"X-Static": "s"}, tenant_header="X-Tenant")
        self.successResultOf(
            c.request("POST", "u", headers={"X-Tenant": "evil"}, tenant="team-a",
                      content_type="application/json", content_encoding="gzip")
        )
        headers = treq.sent[0].kwargs["headers"]
        self.assertEqual(headers.getRawHeaders(b"x-tenant"), [b"team-a"])
        self.assertEqual(headers.getRawHeaders(b"x-static"), [b"s"])
        self.assertEqual(headers.getRawHeaders(b"content-encoding"), [b"gzip"])

    def test_credentials_asked_per_request(self) -> None:
        tokens = iter([b"Bearer one", b"Bearer two"])

        class Rotating:
            def authorization(self) -> Deferred[Optional[bytes]]:
                return succeed(next(tokens))

        treq = FakeTreq(FakeResponse(200), FakeResponse(200))
        c = client(treq, credentials=Rotating())
        self.successResultOf(c.request("GET", "u", headers={"Authorization": "Bearer x"}))
        self.successResultOf(c.request("GET", "u"))
        self.assertEqual(
            [s.kwargs["headers"].getRawHeaders(b"authorization") for s in treq.sent],
            [[b"Bearer one"], [b"Bearer two"]],
        )

    def test_static_credentials(self) -> None:
        treq = FakeTreq(FakeResponse(200))
        c = client(treq, credentials=BearerCredentials(Secret("tok", "test")))
        self.successResultOf(c.request("GET", "u"))
        self.assertEqual(
            treq.sent[0].kwargs["headers"].getRawHeaders(b"authorization"), [b"Bearer tok"]
        )

    def test_credentials_failure_sends_nothing(self) -> None:
        """
        Without credentials nothing is sent, and neither the error nor the
        log carries what the provider said.
        """
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        class Broken:
            def authorization(self) -> Deferred[Optional[bytes]]:
                return fail(RuntimeError("token endpoint said: secret-ish"))

        treq = FakeTreq(FakeResponse(200))
        error = self.failureResultOf(
            client(treq, credentials=Broken()).request("GET", "u"), CredentialsUnavailable
        ).value
        self.assertNotIn("secret", str(error))
        self.assertIsNone(error.__cause__)
        self.assertEqual(treq.sent, [])
        logged = [formatEvent(e) for e in events]
        self.assertIn("mimir: no outbound credentials: RuntimeError", logged)
        self.assertFalse([line for line in logged if "secret" in line])

    def test_credentials_time_out(self) -> None:
        clock = Clock()
        slow: Deferred[Optional[bytes]] = Deferred()

        class Slow:
            def authorization(self) -> Deferred[Optional[bytes]]:
                return slow

        treq = FakeTreq(FakeResponse(200))
        d = client(treq, clock, credentials=Slow()).request("GET", "u")
        clock.advance(10)
        self.failureResultOf(d, CredentialsUnavailable)
        self.assertEqual(treq.sent, [])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_response_timeout_cancels_request(self) -> None:
        clock = Clock()
        treq = FakeTreq(None)
        d = client(treq, clock).request("GET", "u")
        clock.advance(9.999)
        self.assertNoResult(d)
        self.assertFalse(treq.sent[0].cancelled)
        clock.advance(0.001)
        error = self.failureResultOf(d, OperationTimedOut).value
        self.assertEqual(str(error), "waiting for the response took longer than 10s")
        self.assertTrue(treq.sent[0].cancelled)

    def test_cancel_reaches_request(self) -> None:
        clock = Clock()
        treq = FakeTreq(None)
        d = client(treq, clock).request("GET", "u")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(treq.sent[0].cancelled)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_connection_errors_pass_through(self) -> None:
        treq = FakeTreq(ierror.ConnectionRefusedError())
        self.failureResultOf(client(treq).request("GET", "u"), ierror.ConnectionRefusedError)


class PoolTests(SynchronousTestCase):
    def test_owned_pool(self) -> None:
        c = HTTPClient(Clock(), name="m", max_connections=7)
        assert c.pool is not None
        self.assertTrue(c.pool.persistent)
        self.assertEqual(c.pool.maxPersistentPerHost, 7)
        self.assertEqual(c.pool.cachedConnectionTimeout, CACHED_CONNECTION_TIMEOUT)
        closed: list[bool] = []
        c.pool.closeCachedConnections = lambda: succeed(closed.append(True))  # type: ignore
        self.successResultOf(c.close())
        self.assertEqual(closed, [True])

    def test_for_upstream(self) -> None:
        config = HTTPUpstreamConfig(
            name="loki", url="http://loki", max_connections=3, bearer_token=Secret("t", "x")
        )
        c = HTTPClient.for_upstream(config, Clock(), tenant_header="X-Tenant")
        assert c.pool is not None
        self.assertEqual((c.name, c.pool.maxPersistentPerHost), ("loki", 3))
        self.assertEqual(c.timeouts, config.timeouts)

    def test_given_treq_has_no_pool(self) -> None:
        c = client(FakeTreq())
        self.assertIsNone(c.pool)
        self.successResultOf(c.close())


class ReadTests(SynchronousTestCase):
    def respond(self, response: FakeResponse, clock: Optional[Clock] = None) -> Any:
        return self.successResultOf(client(FakeTreq(response), clock).request("GET", "u"))

    def test_whole(self) -> None:
        response = FakeResponse(200)
        d = self.respond(response).read(100)
        response.send(b"hello ")
        response.send(b"world")
        response.finish()
        body = self.successResultOf(d)
        self.assertEqual((body.data, body.truncated), (b"hello world", False))
        self.assertFalse(response.transport.lost)

    def test_capped(self) -> None:
        response = FakeResponse(200)
        d = self.respond(response).read(8)
        response.send(b"hello ")
        response.send(b"world")
        body = self.successResultOf(d)
        self.assertEqual((body.data, body.truncated), (b"hello wo", True))
        self.assertTrue(response.transport.lost)

    def test_exactly_at_cap(self) -> None:
        response = FakeResponse(200)
        d = self.respond(response).read(5)
        response.send(b"hello")
        response.finish()
        self.assertEqual(self.successResultOf(d).truncated, False)
        self.assertFalse(response.transport.lost)

    def test_empty_not_delivered(self) -> None:
        response = FakeResponse(204, length=0)
        body = self.successResultOf(self.respond(response).read(10))
        self.assertEqual(body.data, b"")
        self.assertIsNone(response.protocol)

    def test_timeout_keeps_partial(self) -> None:
        clock = Clock()
        response = FakeResponse(200)
        d = self.respond(response, clock).read(100)
        response.send(b"part")
        clock.advance(5)
        error = self.failureResultOf(d, BodyReadFailed).value
        self.assertEqual(error.partial, b"part")
        self.assertIsInstance(error.cause, OperationTimedOut)
        self.assertTrue(response.transport.lost)

    def test_broken_connection(self) -> None:
        response = FakeResponse(200)
        d = self.respond(response).read(100)
        response.send(b"pa")
        response.fail(ResponseFailed([Failure(ierror.ConnectionLost())]))
        error = self.failureResultOf(d, BodyReadFailed).value
        self.assertEqual(error.partial, b"pa")

    def test_cancel_drops_connection(self) -> None:
        clock = Clock()
        response = FakeResponse(200)
        d = self.respond(response, clock).read(100)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(response.transport.lost)
        # Twisted reports the connection it was told to drop; that is not
        # a second ending.
        response.fail(ResponseFailed([Failure(ierror.ConnectionAborted())]))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_read_once(self) -> None:
        response = self.respond(FakeResponse(200))
        response.read(1)
        self.assertRaises(RuntimeError, response.read, 1)
        self.assertRaises(RuntimeError, response.stream, Consumer())


class StreamTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.response = FakeResponse(200)
        answer = self.successResultOf(
            client(FakeTreq(self.response), self.clock).request("GET", "u")
        )
        self.consumer = Consumer()
        self.finished = answer.stream(self.consumer)

    def test_chunks_in_order(self) -> None:
        """
        What arrives in one turn of the reactor is written at its end, in
        one piece and in order; what is pending when the body ends is
        written before the read ends.
        """
        self.assertIsNotNone(self.consumer.producer)
        for chunk in (b"a", b"bb", b"ccc"):
            self.response.send(chunk)
        self.assertEqual(self.consumer.data, [])
        self.clock.advance(0)
        self.assertEqual(self.consumer.data, [b"abbccc"])
        self.response.send(b"dddd")
        self.assertNoResult(self.finished)
        self.response.finish()
        self.assertEqual(self.consumer.data, [b"abbccc", b"dddd"])
        self.assertEqual(self.successResultOf(self.finished), 10)
        self.assertIsNone(self.consumer.producer)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_backpressure_reaches_the_connection(self) -> None:
        """
        A consumer that pauses pauses the upstream connection, for as long
        as it likes: the idle timeout only runs while it wants data.
        """
        self.response.send(b"a")
        producer = self.consumer.producer
        assert producer is not None
        producer.pauseProducing()
        self.assertTrue(self.response.transport.paused)
        self.clock.advance(3600)
        self.assertNoResult(self.finished)
        producer.resumeProducing()
        self.assertFalse(self.response.transport.paused)
        self.clock.advance(4.9)
        self.response.send(b"b")
        self.response.finish()
        self.assertEqual(self.successResultOf(self.finished), 2)

    def test_idle_timeout(self) -> None:
        self.response.send(b"a")
        self.clock.advance(4.9)
        self.response.send(b"b")
        self.clock.advance(4.9)
        self.assertNoResult(self.finished)
        self.clock.advance(0.1)
        error = self.failureResultOf(self.finished, BodyReadFailed).value
        self.assertIsInstance(error.cause, OperationTimedOut)
        self.assertTrue(self.response.transport.lost)
        self.assertIsNone(self.consumer.producer)

    def test_coalesced_up_to_a_socket_read(self) -> None:
        """
        Pending bytes are written as soon as they reach L{COALESCE_BYTES},
        without waiting for the end of the turn.
        """
        half = b"x" * (COALESCE_BYTES // 2)
        self.response.send(half)
        self.assertEqual(self.consumer.data, [])
        self.response.send(half)
        self.assertEqual(self.consumer.data, [half + half])
        self.response.send(b"y")
        self.clock.advance(0)
        self.assertEqual(self.consumer.data, [half + half, b"y"])

    def test_idle_timeout_counts_from_the_last_chunk(self) -> None:
        """
        The timer is not moved for every chunk, yet the silence is counted
        from the last one: a body that trickles in never times out, one
        that stops does, C{idle} seconds after its last byte.
        """
        for _ in range(20):
            self.clock.advance(2.5)
            self.response.send(b"a")
        self.clock.advance(4.9)
        self.assertNoResult(self.finished)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0.1)
        self.failureResultOf(self.finished, BodyReadFailed)

    def test_consumer_stops(self) -> None:
        self.response.send(b"a")
        self.clock.advance(0)
        producer = self.consumer.producer
        assert producer is not None
        producer.stopProducing()
        error = self.failureResultOf(self.finished, BodyReadFailed).value
        self.assertIsInstance(error.cause, StreamStopped)
        self.assertTrue(self.response.transport.lost)
        self.response.send(b"late")
        self.assertEqual(self.consumer.data, [b"a"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel(self) -> None:
        self.finished.cancel()
        self.failureResultOf(self.finished, CancelledError)
        self.assertTrue(self.response.transport.lost)
        self.response.fail(ResponseFailed([Failure(ierror.ConnectionAborted())]))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_broken_connection(self) -> None:
        self.response.send(b"a")
        self.response.fail(ResponseFailed([Failure(ierror.ConnectionLost())]))
        error = self.failureResultOf(self.finished, BodyReadFailed).value
        self.assertIsInstance(error.cause, ResponseFailed)
        self.assertIsNone(self.consumer.producer)


class TrustRootTests(SynchronousTestCase):
    def write(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_every_certificate_of_a_bundle(self) -> None:
        """
        A bundle's intermediate and root are both trusted, not just the
        first certificate in the file.
        """
        chain = Chain()
        root = load_trust_root(self.write(b"# comment\n" + chain.bundle()))
        subjects = sorted(c.get_subject().CN for c in root._caCerts)  # type: ignore[attr-defined]
        self.assertEqual(subjects, ["sealgw test intermediate CA", "sealgw test root CA"])

    def test_no_certificate(self) -> None:
        path = self.write(b"not a certificate\n")
        with self.assertRaises(ValueError) as raised:
            load_trust_root(path)
        self.assertEqual(str(raised.exception), f"{path}: no PEM certificate found")

    def test_broken_certificate(self) -> None:
        good = pem(Chain().root[1])
        path = self.write(good + b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        with self.assertRaises(ValueError) as raised:
            load_trust_root(path)
        self.assertEqual(str(raised.exception), f"{path}: not a valid PEM certificate")

    def test_missing(self) -> None:
        self.assertRaises(OSError, load_trust_root, self.mktemp())


class JoinURLTests(SynchronousTestCase):
    def test_no_path(self) -> None:
        self.assertEqual(join_url("http://m:9009/x/", ""), "http://m:9009/x/")

    def test_slashes(self) -> None:
        for base in ["http://m:9009", "http://m:9009/"]:
            for path in ["api/v1/push", "/api/v1/push"]:
                self.assertEqual(join_url(base, path), "http://m:9009/api/v1/push")

    def test_keeps_query(self) -> None:
        self.assertEqual(
            join_url("https://dce.example/dataCollectionRules/d?api-version=2023-04-24",
                     "/streams/s/api/v1/write"),
            "https://dce.example/dataCollectionRules/d/streams/s/api/v1/write"
            "?api-version=2023-04-24",
        )


class SendableTests(SynchronousTestCase):
    """
    L{sendable}: the URL in the form treq sends it, worked out once.
    """

    URLS = [
        "http://prometheus:9090/api/v1/write",
        "https://bücher.example/a b/ü?x=1&y=ä",
        "https://dce.example/dataCollectionRules/d/streams/s/api/v1/write?api-version=2023-04-24",
        "http://user:secret@mimir:8080/prometheus/api/v1/push",
        "http://mimir/p%2Fq/%C3%BC",
    ]

    def test_same_as_treq_would_send(self) -> None:
        for text in self.URLS:
            expected = EncodedURL.from_text(text).to_uri().to_text()
            for given in (text, EncodedURL.from_text(text)):
                sent = sendable(given)
                self.assertEqual(sent.to_uri().to_text(), expected)
                self.assertEqual(sent.to_text(), expected)
                self.assertEqual(
                    sent.to_text(with_password=True),
                    EncodedURL.from_text(text).to_uri().to_text(with_password=True),
                )

    def test_kept(self) -> None:
        first = sendable("http://prometheus:9090/api/v1/write")
        self.assertIs(sendable("http://prometheus:9090/api/v1/write"), first)
        self.assertIs(sendable(first), first)
        self.assertIs(first.to_uri(), first)

    def test_request_without_query_sends_it(self) -> None:
        treq = FakeTreq(FakeResponse(204), FakeResponse(200))
        c = client(treq)
        self.successResultOf(c.request("POST", "http://mimir/api/v1/push", body=b"x"))
        self.successResultOf(c.request("GET", "http://mimir/api/v1/query", query=[("q", "1")]))
        push, query = treq.sent
        self.assertIsInstance(push.url, SentURL)
        # With parameters treq rebuilds the URL, by hyperlink's own rules.
        self.assertEqual(query.url, "http://mimir/api/v1/query")


class RecordingAgent:
    """
    An C{IAgent} that records what it is asked to send and answers each
    request with C{response}.
    """

    def __init__(self, response: Any = None) -> None:
        self.response = response if response is not None else FakeResponse(length=0)
        self.sent: list[tuple[bytes, bytes, Headers, Any]] = []

    def request(
        self, method: bytes, uri: bytes, headers: Optional[Headers] = None,
        bodyProducer: Any = None,
    ) -> Deferred[Any]:
        assert headers is not None
        self.sent.append((method, uri, headers, bodyProducer))
        return succeed(self.response)


class UndecodedThroughTreqTests(SynchronousTestCase):
    """
    Requests sent through treq's client onto L{UndecodedAgent}, as the
    client's own pool sends them: the headers as composed (treq's decoder
    adds no C{Accept-Encoding}), the answer as received (nothing
    decoded, no empty C{Content-Encoding}).
    """

    def send(self, agent: RecordingAgent, headers: Headers) -> Any:
        client = TreqClient(UndecodedAgent(agent))
        response = self.successResultOf(
            client.request(
                "GET", "http://mimir/api/v1/query", headers=hide_accepted(headers),
                unbuffered=True, allow_redirects=False,
            )
        )
        return restore(response.headers), response

    def test_headers_as_composed(self) -> None:
        """
        No C{Accept-Encoding} the caller did not give; one the caller gave,
        once and as given.
        """
        agent = RecordingAgent()
        self.send(agent, Headers({b"X-Scope-OrgID": [b"team-a"]}))
        self.send(agent, Headers({b"Accept-Encoding": [b"br, gzip"]}))
        (_, _, plain, _), (_, _, asked, _) = agent.sent
        self.assertFalse(plain.hasHeader(b"accept-encoding"))
        self.assertFalse(plain.hasHeader(ASKED))
        self.assertEqual(plain.getRawHeaders(b"x-scope-orgid"), [b"team-a"])
        self.assertEqual(asked.getRawHeaders(b"accept-encoding"), [b"br, gzip"])
        self.assertFalse(asked.hasHeader(ASKED))

    def test_answer_not_decoded(self) -> None:
        """
        A gzip answer comes as it was received, its C{Content-Encoding}
        kept and its bytes untouched; an answer without one gets none.
        """
        gzipped = FakeResponse()
        gzipped.headers.setRawHeaders(b"Content-Encoding", [b"gzip"])
        headers, response = self.send(RecordingAgent(gzipped), Headers())
        self.assertEqual(headers.getRawHeaders(b"content-encoding"), [b"gzip"])
        self.assertFalse(headers.hasHeader(ANSWERED))
        headers, _ = self.send(RecordingAgent(FakeResponse()), Headers())
        self.assertFalse(headers.hasHeader(b"content-encoding"))

    def test_owned_pool_sends_through_treq(self) -> None:
        client = HTTPClient(Clock(), name="mimir")
        self.assertIsInstance(client._treq, TreqClient)


class EncodingOverSocketsTests(TestCase):
    """
    Over real sockets, to an upstream that gzips when asked: the client
    asks for no encoding of its own and never decodes.
    """

    BODY = json.dumps({"status": "success", "data": ["x" * 40] * 2000}).encode()

    def setUp(self) -> None:
        self.upstream = GzipWhenAsked(self.BODY)
        self.url = serve(self, self.upstream).url + "/api/v1/label/job/values"
        self.client = HTTPClient(socket_reactor, name="prometheus", timeouts=TIMEOUTS)
        self.addCleanup(self.client.close)

    async def test_nothing_asked(self) -> None:
        """
        Without the caller's C{Accept-Encoding} none is sent, and the plain
        answer comes with no C{Content-Encoding} header, not even an empty
        one.
        """
        response = await self.client.request("GET", self.url)
        body = await response.read(len(self.BODY))
        self.assertEqual(self.upstream.accept_encodings, [None])
        self.assertFalse(response.headers.hasHeader(b"content-encoding"))
        self.assertEqual(body.data, self.BODY)
        self.assertEqual(response.length, len(self.BODY))

    async def test_caller_asks_gzip(self) -> None:
        """
        The caller's C{Accept-Encoding} is sent once, as given; the body
        is the upstream's gzip bytes, its declared length theirs, whether
        read whole or streamed.
        """
        for given in ("gzip", "br, gzip"):
            response = await self.client.request(
                "GET", self.url, headers={"Accept-Encoding": given}
            )
            self.assertEqual(response.headers.getRawHeaders(b"content-encoding"), [b"gzip"])
            self.assertEqual(response.length, len(self.upstream.gzipped))
            body = await response.read(len(self.BODY))
            self.assertEqual(body.data, self.upstream.gzipped)
            self.assertFalse(body.truncated)
        response = await self.client.request(
            "GET", self.url, headers={"Accept-Encoding": "gzip"}
        )
        consumer = Consumer()
        written = await response.stream(consumer)
        self.assertEqual(b"".join(consumer.data), self.upstream.gzipped)
        self.assertEqual(written, len(self.upstream.gzipped))
        self.assertEqual(
            self.upstream.accept_encodings, [[b"gzip"], [b"br, gzip"], [b"gzip"]]
        )

    async def test_capped_read_counts_encoded_bytes(self) -> None:
        """
        A capped read counts the bytes as received: a gzip answer under
        the cap is whole though its plain form is far over it.
        """
        cap = len(self.upstream.gzipped)
        self.assertLess(cap, len(self.BODY) // 10)
        response = await self.client.request(
            "GET", self.url, headers={"Accept-Encoding": "gzip"}
        )
        body = await response.read(cap)
        self.assertFalse(body.truncated)
        self.assertEqual(gzip.decompress(body.data), self.BODY)

    async def test_push_answer_plain(self) -> None:
        """
        A push asks for no encoding, so its answer, which the relay reads
        for its refusal's text, comes plain.
        """
        response = await self.client.request(
            "POST", self.url, body=b"snappy bytes", content_type="application/x-protobuf",
            content_encoding="snappy", tenant="team-a",
        )
        body = await response.read(len(self.BODY))
        self.assertEqual(self.upstream.accept_encodings, [None])
        self.assertFalse(response.headers.hasHeader(b"content-encoding"))
        self.assertEqual(body.data, self.BODY)
