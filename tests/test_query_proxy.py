"""
Streaming a read's answer: backpressure from the client to the upstream
connection, the cap, and what happens when either side goes away midway.
Through the real L{sealgw.http.HTTPClient} over a treq-like fake whose
body the test feeds chunk by chunk, and through the in-memory client, on
a L{Clock}.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH
from zope.interface import implementer

from sealgw.config import TimeoutsConfig
from sealgw.http import HTTPClient, SlotLimits, UpstreamSlots
from sealgw.query import (
    READ_ROUTES,
    IDownstream,
    ReadRefused,
    ReadRequest,
    ReadUpstream,
    proxy_read,
)
from sealgw.query._proxy import share_key
from sealgw.testing import MemoryHTTPClient, MemoryResponse, script
from tests.test_query_support import SOLO, Reads

QUERY_RANGE = next(r for r in READ_ROUTES if r.label == "read_prometheus_query_range")


class BodyTransport:
    """
    The upstream connection under a response body, as the body's reader
    sees it.
    """

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0
        self.lost = False

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.lost = True

    def loseConnection(self) -> None:
        self.lost = True


class UpstreamResponse:
    """
    Enough of Twisted's C{IResponse} for L{HTTPClient}; the test feeds
    the body through C{protocol}.
    """

    def __init__(self, code: int = 200, length: Any = UNKNOWN_LENGTH) -> None:
        self.code = code
        self.headers = Headers({b"Content-Type": [b"application/json"]})
        self.length = length
        self.transport = BodyTransport()
        self.protocol: Any = None

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)

    def feed(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.protocol.dataReceived(chunk)

    def end(self, reason: Optional[Exception] = None) -> None:
        self.protocol.connectionLost(Failure(reason or ResponseDone()))


class OneAnswer:
    """
    A treq-like client answering every request with C{response}.
    """

    def __init__(self, response: UpstreamResponse) -> None:
        self.response = response
        self.urls: list[str] = []

    def request(self, method: str, url: Any, **kwargs: Any) -> Deferred[Any]:
        # As treq sends it: a URL object's text, or the string itself.
        self.urls.append(url if isinstance(url, str) else url.to_uri().to_text())
        return succeed(self.response)


@implementer(IDownstream)
class Downstream:
    """
    A client that records what it is sent, and pauses its producer once
    C{pause_after} chunks have arrived.
    """

    def __init__(self, pause_after: Optional[int] = None) -> None:
        self.status: Optional[int] = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.producer: Any = None
        self.aborted = False
        self._pause_after = pause_after

    def begin(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status, self.headers = status, headers

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        if self._pause_after is not None and len(self.chunks) == self._pause_after:
            self.producer.pauseProducing()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def abort(self) -> Deferred[None]:
        self.aborted = True
        return succeed(None)


def _read(tenant: str = "team-a") -> ReadRequest:
    return ReadRequest(
        route=QUERY_RANGE, method="GET", path=QUERY_RANGE.path, tenant=tenant, query="query=up"
    )


class BackpressureTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.response = UpstreamResponse()
        self.treq = OneAnswer(self.response)
        client = HTTPClient(
            self.clock, name="mimir", treq=self.treq,
            timeouts=TimeoutsConfig(connect=1, response=5, body=10),
        )
        self.upstream = ReadUpstream(client, "http://mimir:8080", "/prometheus",
                                     max_response_bytes=1000)

    def test_slow_client_pauses_upstream(self) -> None:
        """
        While the client's connection is full, the upstream connection is
        paused (TCP pushes back on the upstream); the body is passed on,
        never gathered.
        """
        downstream = Downstream(pause_after=1)
        done = Deferred.fromCoroutine(proxy_read(self.upstream, _read(), downstream))
        self.assertEqual(self.treq.urls, ["http://mimir:8080/prometheus/api/v1/query_range?query=up"])
        self.assertEqual(downstream.status, 200)
        self.response.feed(b"a" * 100)
        self.clock.advance(0)
        self.assertEqual(downstream.chunks, [b"a" * 100])
        self.assertTrue(self.response.transport.paused)
        # Paused time is the client's doing: no body timeout meanwhile.
        self.clock.advance(60)
        self.assertNoResult(done)
        downstream.producer.resumeProducing()
        self.assertFalse(self.response.transport.paused)
        self.response.feed(b"b" * 100, b"c" * 100)
        self.response.end()
        self.assertEqual(self.successResultOf(done), 300)
        self.assertEqual(b"".join(downstream.chunks), b"a" * 100 + b"b" * 100 + b"c" * 100)
        self.assertFalse(downstream.aborted)
        self.assertIsNone(downstream.producer)

    def test_in_memory_client_pauses_too(self) -> None:
        client = MemoryHTTPClient(script(MemoryResponse(200, b"x" * 90, chunks=30)))
        upstream = ReadUpstream(client, "http://loki:3100")
        downstream = Downstream(pause_after=1)
        done = Deferred.fromCoroutine(proxy_read(upstream, _read(), downstream))
        self.assertEqual(downstream.chunks, [b"x" * 30])
        self.assertNoResult(done)
        downstream.producer.resumeProducing()
        self.assertEqual(self.successResultOf(done), 90)

    def test_over_cap_midway(self) -> None:
        """
        A body that grows past the cap: the chunk that would pass it is not
        sent, the upstream connection is dropped and the client's cut off.
        """
        downstream = Downstream()
        done = Deferred.fromCoroutine(proxy_read(self.upstream, _read(), downstream))
        self.response.feed(b"a" * 600)
        self.clock.advance(0)
        self.response.feed(b"b" * 401)
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(done), 600)
        self.assertEqual(downstream.chunks, [b"a" * 600])
        self.assertTrue(self.response.transport.lost)
        self.assertTrue(downstream.aborted)

    def test_over_cap_in_the_last_turn(self) -> None:
        """
        Pieces that arrive together are counted together: when the body
        ends with what is pending over the cap, none of it is sent and
        the client is cut off, never given an answer that looks whole.
        """
        downstream = Downstream()
        done = Deferred.fromCoroutine(proxy_read(self.upstream, _read(), downstream))
        self.response.feed(b"a" * 600, b"b" * 401)
        self.response.end()
        self.assertEqual(self.successResultOf(done), 0)
        self.assertEqual(downstream.chunks, [])
        self.assertTrue(downstream.aborted)
        self.assertIsNone(downstream.producer)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_declared_over_cap(self) -> None:
        """
        A declared length past the cap is refused before anything is sent,
        and the upstream connection dropped.
        """
        self.response.length = 1001
        downstream = Downstream()
        done = Deferred.fromCoroutine(proxy_read(self.upstream, _read(), downstream))
        refusal = self.failureResultOf(done, ReadRefused).value
        self.assertEqual(refusal.status, 502)
        self.assertIsNone(downstream.status)
        self.assertTrue(self.response.transport.lost)

    def test_upstream_breaks_midway(self) -> None:
        """
        An upstream that breaks after the first bytes: the status is out,
        so the client's connection is cut rather than ended as if whole.
        """
        downstream = Downstream()
        done = Deferred.fromCoroutine(proxy_read(self.upstream, _read(), downstream))
        self.response.feed(b"{")
        self.response.end(ierror.ConnectionLost())
        self.successResultOf(done)
        self.assertTrue(downstream.aborted)

    def test_upstream_stalls_midway(self) -> None:
        downstream = Downstream()
        done = Deferred.fromCoroutine(proxy_read(self.upstream, _read(), downstream))
        self.response.feed(b"{")
        self.clock.advance(10)
        self.successResultOf(done)
        self.assertTrue(downstream.aborted)
        self.assertTrue(self.response.transport.lost)

    def test_cancel_midway_drops_upstream(self) -> None:
        downstream = Downstream()
        done = Deferred.fromCoroutine(proxy_read(self.upstream, _read(), downstream))
        self.response.feed(b"{")
        done.cancel()
        self.failureResultOf(done, CancelledError)
        self.assertTrue(self.response.transport.lost)

    def test_tenant_and_status_headers(self) -> None:
        client = MemoryHTTPClient(script(MemoryResponse(
            422, b"{}", {"Content-Type": "application/json", "X-Other": "1"})))
        upstream = ReadUpstream(client, "http://mimir:8080")
        downstream = Downstream()
        self.successResultOf(Deferred.fromCoroutine(
            proxy_read(upstream, _read("team-a|team-b"), downstream)))
        self.assertEqual(client.requests[0].header("X-Scope-OrgID"), "team-a|team-b")
        self.assertEqual(downstream.status, 422)
        self.assertEqual(
            downstream.headers,
            [(b"content-type", b"application/json"), (b"cache-control", b"no-store")],
        )


class DisconnectTests(SynchronousTestCase):
    """
    A client that goes away cancels the upstream request, whichever part
    of it is under way.
    """

    def test_before_the_answer(self) -> None:
        waiting: list[Deferred[Any]] = []

        def hold(request: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            waiting.append(d)
            return d

        reads = Reads(self, {"prometheus": hold})
        d = reads.stub.get("http://gateway.example/api/v1/query?query=up",
                           headers={"Authorization": [f"Bearer {SOLO}"]})
        reads.stub.flush()
        (sent,) = reads.sent()
        self.assertFalse(sent.cancelled)
        d.cancel()
        reads.stub.flush()
        self.assertTrue(sent.cancelled)
        self.failureResultOf(d)
        self.assertTrue(waiting[0].called)

    def test_during_the_body(self) -> None:
        """
        Through the routes: the client drops its connection after the
        first bytes, and the upstream connection is dropped with it.
        """
        clock = Clock()
        response = UpstreamResponse()
        client = HTTPClient(clock, name="mimir", treq=OneAnswer(response))
        reads = Reads(self, clients={"prometheus": client})
        d = reads.stub.get("http://gateway.example/api/v1/query_range?query=up",
                           headers={"Authorization": [f"Bearer {SOLO}"]}, unbuffered=True)
        reads.stub.flush()
        response.feed(b'{"status":')
        clock.advance(0)
        reads.stub.flush()
        answer = self.successResultOf(d)
        self.assertEqual(answer.code, 200)

        class Hangup:
            def makeConnection(self, transport: Any) -> None:
                transport.stopProducing()

            def dataReceived(self, data: bytes) -> None:
                pass

            def connectionLost(self, reason: Any) -> None:
                pass

        answer.deliverBody(Hangup())
        reads.stub.flush()
        self.assertTrue(response.transport.lost)

    def test_upstream_breaks_client_sees_failure(self) -> None:
        clock = Clock()
        response = UpstreamResponse()
        client = HTTPClient(clock, name="mimir", treq=OneAnswer(response))
        reads = Reads(self, clients={"prometheus": client})
        d = reads.stub.get("http://gateway.example/api/v1/query_range?query=up",
                           headers={"Authorization": [f"Bearer {SOLO}"]})
        reads.stub.flush()
        response.feed(b'{"status":')
        response.end(ierror.ConnectionLost())
        reads.stub.flush()
        answer = self.successResultOf(d)
        self.assertEqual(answer.code, 200)
        body = answer.content()
        reads.stub.flush()
        self.failureResultOf(body, ResponseFailed)


class ReadSlotTests(SynchronousTestCase):
    """
    A read holds a slot of its upstream until its answer has been
    streamed, cut off or abandoned, and waits its tenant's turn for one.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.responses: list[UpstreamResponse] = []
        self.slots = UpstreamSlots(
            "mimir", "reads", SlotLimits(in_flight=2, tenant_share=0.5, tenant_queue=1, wait=30),
            self.clock,
        )
        responses = self.responses

        class Answers:
            def request(self, method: str, url: Any, **kwargs: Any) -> Deferred[Any]:
                response = UpstreamResponse()
                responses.append(response)
                return succeed(response)

        client = HTTPClient(
            self.clock, name="mimir", treq=Answers(),
            timeouts=TimeoutsConfig(connect=1, response=5, body=10),
        )
        self.upstream = ReadUpstream(client, "http://mimir:8080", slots=self.slots)

    def read(self, tenant: str) -> tuple[Deferred[int], Downstream]:
        downstream = Downstream()
        done = Deferred.fromCoroutine(
            proxy_read(self.upstream, _read(tenant), downstream, tenant=tenant)
        )

        def cancel() -> None:
            # A coroutine left waiting would be closed whenever it is
            # collected, in some later test.
            if not done.called:
                done.addErrback(lambda _: None)
                done.cancel()

        self.addCleanup(cancel)
        return done, downstream

    def test_held_until_streamed(self) -> None:
        done, _ = self.read("a")
        self.assertEqual(self.slots.held("a"), 1)
        self.responses[0].feed(b"{}")
        self.assertEqual(self.slots.held("a"), 1)
        self.responses[0].end()
        self.successResultOf(done)
        self.assertEqual(self.slots.in_use, 0)

    def test_share_full_waits_then_goes(self) -> None:
        """
        Tenant A at its share waits; B is answered meanwhile; A's wait
        ends when its first read has been streamed.
        """
        first, _ = self.read("a")
        second, second_down = self.read("a")
        self.assertEqual(len(self.responses), 1)
        self.assertIsNone(second_down.status)
        b, b_down = self.read("b")
        self.assertEqual((len(self.responses), b_down.status), (2, 200))
        self.responses[1].end()
        self.successResultOf(b)
        self.responses[0].end()
        self.successResultOf(first)
        self.assertEqual(len(self.responses), 3)
        self.responses[2].end()
        self.successResultOf(second)
        self.assertEqual(self.slots.in_use, 0)

    def test_queue_full_429(self) -> None:
        self.read("a")
        self.read("a")
        done, downstream = self.read("a")
        refusal = self.failureResultOf(done, ReadRefused).value
        self.assertEqual(refusal.status, 429)
        self.assertIn("upstreams.mimir.in_flight.tenant_queue", refusal.message)
        self.assertEqual(refusal.headers, {"Retry-After": "5"})
        self.assertIsNone(downstream.status)

    def test_cancel_while_streaming_releases(self) -> None:
        done, _ = self.read("a")
        self.responses[0].feed(b"{")
        done.cancel()
        self.failureResultOf(done, CancelledError)
        self.assertTrue(self.responses[0].transport.lost)
        self.assertEqual(self.slots.in_use, 0)

    def test_cancel_while_waiting_leaves_queue(self) -> None:
        first, _ = self.read("a")
        waiting, _ = self.read("a")
        self.assertEqual(self.slots.waiting, 1)
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        self.assertEqual((self.slots.waiting, self.slots.in_use), (0, 1))
        self.responses[0].end()
        self.successResultOf(first)
        # The cancelled read was never sent.
        self.assertEqual(len(self.responses), 1)
        self.assertEqual(self.slots.in_use, 0)

    def test_upstream_failure_releases(self) -> None:
        done, _ = self.read("a")
        self.responses[0].feed(b"{")
        self.responses[0].end(ierror.ConnectionLost())
        self.successResultOf(done)
        self.assertEqual(self.slots.in_use, 0)

    def test_federated_read_counts_as_first_tenant(self) -> None:
        self.assertEqual(share_key("team-b|team-a"), "team-a")
        self.assertEqual(share_key("team-a"), "team-a")
        self.assertIsNone(share_key(None))
        self.read("b|a")
        self.assertEqual((self.slots.held("a"), self.slots.held("b|a")), (1, 0))
