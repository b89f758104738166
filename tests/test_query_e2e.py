"""
End to end over real sockets: the read routes served by the gateway's own
site on a loopback port, in front of a real Prometheus holding data (the
answers through the gateway are Prometheus's, for requests shaped as
Grafana sends them), and in front of upstreams of the test's own (what
the upstream is sent, backpressure, a client that goes away).

The pieces are put together by hand, as the gateway's builder will: a gate
from a configuration file, an L{HTTPClient} per upstream, L{QueryRoutes}.
"""

from __future__ import annotations

import gzip
import json
import os
import urllib.parse
from typing import Any, Optional

from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IPullProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall, deferLater
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed, readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from werkzeug.exceptions import NotFound
from zope.interface import implementer

from sealgw.auth import build_gate
from sealgw.config import load
from sealgw.credentials import ICredentials
from sealgw.http import HTTPClient
from sealgw.query import QuerySettings, ReadUpstream
from sealgw.web import GatewayMetrics, GatewayRoot, GatewaySite
from sealgw.web._errors import answer_routing_error
from sealgw.web.query import QueryRoutes, ReadAndPushRoutes
from tests.e2e_support import (
    REMOTE_WRITE_HEADERS,
    TEST_TIMEOUT,
    bearer,
    http_client,
    now_ms,
    raw_http,
    reactor,
    remote_write_body,
    require_prometheus,
    serve,
    start_prometheus,
    status_of,
    wait_for_series,
    wait_until,
    write_request,
)
from tests.subprocesses import free_port
from tests.test_query_support import SOLO, TRIO, GzipWhenAsked, write_config

MiB = 1024 * 1024
FORM = {"Content-Type": ["application/x-www-form-urlencoded"]}
RECEIVER_CONFIG = {"global": {"scrape_interval": "15s"}, "scrape_configs": []}


@implementer(ICredentials)
class GatewayToken:
    def authorization(self) -> Deferred[Optional[bytes]]:
        return succeed(b"Bearer gateway-upstream-secret")


class _NoPushes(Resource):
    """
    Stands in for the push routes: every path is theirs to refuse.
    """

    isLeaf = True

    def render(self, request: Any) -> bytes:
        return answer_routing_error(request, NotFound())


async def start_reads(test: TestCase, settings: QuerySettings) -> str:
    """
    Serve the read routes (in front of stand-in push routes, as a public
    listener would) on a free loopback port with the gateway's site;
    return its URL.  Everything is stopped when the test ends.
    """
    url, _ = await serve_reads(test, settings)
    return url


async def serve_reads(test: TestCase, settings: QuerySettings) -> tuple[str, WrappingFactory]:
    """
    L{start_reads}, and the factory whose C{protocols} are the gateway's
    client connections.
    """
    directory = os.path.abspath(test.mktemp())
    os.makedirs(directory)
    config = load(write_config(directory, {"tenancy": {"federation": True}}))
    gate = build_gate(config, reactor, CollectorRegistry())
    routes = QueryRoutes(settings, gate)
    root = GatewayRoot(routes=ReadAndPushRoutes(routes, _NoPushes()), ops=None)
    site = GatewaySite(
        root, reactor, GatewayMetrics(CollectorRegistry()), max_body=MiB, access_log=False
    )
    factory = WrappingFactory(site)
    factory.noisy = False
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")

    async def stop() -> None:
        await port.stopListening()
        for protocol in list(factory.protocols):
            protocol.transport.abortConnection()
        await deferLater(reactor, 0, lambda: None)

    test.addCleanup(lambda: Deferred.fromCoroutine(stop()))
    return f"http://127.0.0.1:{port.getHost().port}", factory


def upstream_client(test: TestCase, name: str) -> HTTPClient:
    client = HTTPClient(reactor, name=name, credentials=GatewayToken())
    test.addCleanup(client.close)
    return client


class PrometheusReadTests(TestCase):
    """
    A real Prometheus behind the read routes.
    """

    timeout = TEST_TIMEOUT

    async def setUp(self) -> None:  # type: ignore[override]
        require_prometheus()
        self.http = http_client(self)
        self.prometheus = await start_prometheus(self, RECEIVER_CONFIG, receiver=True)
        # Pushed straight to Prometheus: the write path is not under test.
        self.now = now_ms()
        write = write_request(
            [
                (
                    {"__name__": "e2e_read_total", "job": "e2e", "instance": "a"},
                    [(float(i), self.now - (10 - i) * 15_000) for i in range(11)],
                ),
                ({"__name__": "e2e_read_gauge", "job": "e2e", "color": "blue"}, [(0.5, self.now)]),
            ]
        )
        response = await self.http.post(
            self.prometheus.url + "/api/v1/write",
            data=remote_write_body(write),
            headers=REMOTE_WRITE_HEADERS,
        )
        self.assertEqual(response.code, 204, await response.content())
        await wait_for_series(self.http, self.prometheus, "e2e_read_total")
        client = upstream_client(self, "prometheus")
        self.gateway = await start_reads(
            self, QuerySettings(prometheus=ReadUpstream(client, self.prometheus.url))
        )

    async def both(
        self, method: str, path: str, params: list[tuple[str, str]], prefix: str = ""
    ) -> tuple[Any, Any]:
        """
        The same request, as Grafana sends it, straight to Prometheus and
        through the gateway; both answers' status and JSON.
        """
        encoded = urllib.parse.urlencode(params)
        answers = []
        for base, headers in (
            (self.prometheus.url, {}),
            (self.gateway + prefix, bearer(SOLO)),
        ):
            if method == "GET":
                response = await self.http.get(f"{base}{path}?{encoded}", headers=headers)
            else:
                response = await self.http.post(
                    base + path, data=encoded.encode(), headers={**headers, **FORM}
                )
            body = await response.content()
            answers.append((response.code, json.loads(body)))
        return answers[0], answers[1]

    def same(self, direct: Any, through: Any) -> Any:
        self.assertEqual(through, direct)
        self.assertEqual(direct[0], 200, direct)
        self.assertEqual(direct[1]["status"], "success")
        return direct[1]["data"]

    async def test_instant_query_get(self) -> None:
        t = str(self.now / 1000)
        data = self.same(*await self.both("GET", "/api/v1/query",
                                          [("query", "e2e_read_total"), ("time", t)]))
        self.assertEqual(data["result"][0]["metric"]["instance"], "a")
        self.assertEqual(data["result"][0]["value"][1], "10")

    async def test_range_query_post(self) -> None:
        start, end = (self.now - 150_000) / 1000, self.now / 1000
        params = [("query", "rate(e2e_read_total[1m])"), ("start", str(start)),
                  ("end", str(end)), ("step", "15")]
        data = self.same(*await self.both("POST", "/api/v1/query_range", params))
        self.assertEqual(data["resultType"], "matrix")
        self.assertTrue(data["result"][0]["values"])
        # And the same by GET.
        self.same(*await self.both("GET", "/api/v1/query_range", params))

    async def test_labels_and_series(self) -> None:
        start, end = str((self.now - 300_000) / 1000), str(self.now / 1000 + 1)
        window = [("start", start), ("end", end)]
        labels = self.same(*await self.both(
            "GET", "/api/v1/labels", [("match[]", "e2e_read_total"), *window]))
        self.assertEqual(labels, ["__name__", "instance", "job"])
        match = [("match[]", "e2e_read_total"), ("match[]", '{color="blue"}'), *window]
        series = self.same(*await self.both("GET", "/api/v1/series", match))
        self.assertEqual(len(series), 2)
        self.same(*await self.both("POST", "/api/v1/series", match))
        values = self.same(*await self.both("GET", "/api/v1/label/job/values", window))
        self.assertEqual(values, ["e2e"])

    async def test_other_routes(self) -> None:
        for path in ("/api/v1/status/buildinfo", "/api/v1/metadata", "/api/v1/rules",
                     "/api/v1/alerts"):
            self.same(*await self.both("GET", path, []))
        self.same(*await self.both("GET", "/api/v1/format_query", [("query", "up  + 1")]))

    async def test_prometheus_prefix(self) -> None:
        """
        Grafana pointed at C{.../prometheus} (as for Mimir) reaches a plain
        Prometheus at C{/api/v1}.
        """
        t = str(self.now / 1000)
        self.same(*await self.both("GET", "/api/v1/query",
                                   [("query", "e2e_read_gauge"), ("time", t)],
                                   prefix="/prometheus"))

    async def test_compression_as_prometheus_chose(self) -> None:
        """
        Prometheus gzips its API's answers when asked: through the
        gateway a client that accepts gzip gets Prometheus's gzip (the
        same document as asked directly) with C{Content-Encoding: gzip};
        one that does not gets plain JSON and no C{Content-Encoding}.
        (Prometheus sends no C{Vary}.)
        """
        agent = undecoding_agent(self)
        query = urllib.parse.urlencode(
            [("query", "e2e_read_total"), ("time", str(self.now / 1000))])
        direct = f"{self.prometheus.url}/api/v1/query?{query}"
        through = f"{self.gateway}/api/v1/query?{query}"
        response, direct_body = await get_as_sent(agent, direct, SOLO, "gzip")
        self.assertEqual(response.headers.getRawHeaders(b"content-encoding"), [b"gzip"])
        response, body = await get_as_sent(agent, through, SOLO, "gzip")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-encoding"), [b"gzip"])
        self.assertEqual(body[:2], b"\x1f\x8b")
        document = json.loads(gzip.decompress(body))
        self.assertEqual(document, json.loads(gzip.decompress(direct_body)))
        self.assertEqual(document["data"]["result"][0]["value"][1], "10")
        response, body = await get_as_sent(agent, through, SOLO)
        self.assertEqual(response.code, 200)
        self.assertFalse(response.headers.hasHeader(b"content-encoding"))
        self.assertEqual(json.loads(body), document)

    async def test_bad_query_is_prometheus_400(self) -> None:
        direct, through = await self.both("GET", "/api/v1/query", [("query", "sum(")])
        self.assertEqual(through, direct)
        self.assertEqual(direct[0], 400)
        self.assertEqual(direct[1]["errorType"], "bad_data")

    async def test_refused(self) -> None:
        """
        Paths off the allow-list and attempts to reach them are refused
        before Prometheus sees them; so are unknown tokens and tenants.
        """
        for path in [
            "/api/v1/status/config",
            "/api/v1/targets",
            "/api/v1/label/..%2F..%2Fstatus%2Fconfig/values",
            "/api/v1/label/%2e%2e/values",
            "/api/v1/query%2F..%2Fstatus%2Fconfig",
            "//api/v1/status/config",
            "//api/v1/query",
            "/api/v1/../v1/status/config",
            "/api/v1/query/../status/config",
        ]:
            raw = await raw_http(
                int(self.gateway.rsplit(":", 1)[1]),
                f"GET {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {SOLO}\r\n"
                "Connection: close\r\n\r\n".encode(),
            )
            self.assertIn(status_of(raw), (400, 404), (path, raw[:300]))
            self.assertNotIn(b"global", raw)
        response = await self.http.get(self.gateway + "/api/v1/query?query=up",
                                       headers=bearer("not-a-known-token-0123"))
        await response.content()
        self.assertEqual(response.code, 401)
        response = await self.http.get(self.gateway + "/api/v1/query?query=up",
                                       headers=bearer(SOLO, X_Scope_OrgID="team-b"))
        await response.content()
        self.assertEqual(response.code, 403)


class Recorder(Resource):
    """
    An upstream that records each request and answers with C{body}.
    """

    isLeaf = True

    def __init__(self, body: bytes = b'{"status":"success","data":{}}') -> None:
        super().__init__()
        self.body = body
        self.received: list[Request] = []
        self.bodies: list[bytes] = []

    def render(self, request: Request) -> bytes:
        assert request.content is not None
        self.received.append(request)
        self.bodies.append(request.content.read())
        request.setHeader(b"content-type", b"application/json")
        return self.body


@implementer(IPullProducer)
class _Chunks:
    def __init__(self, hose: Firehose, request: Request) -> None:
        self.hose = hose
        self.request = request

    def resumeProducing(self) -> None:
        if self.hose.produced >= self.hose.size:
            self.request.unregisterProducer()
            self.request.finish()
            return
        self.request.write(self.hose.chunk)
        self.hose.produced += len(self.hose.chunk)

    def stopProducing(self) -> None:
        self.hose.stopped = True


class Firehose(Resource):
    """
    An upstream answering C{size} bytes, a chunk whenever its connection
    can take one; or, with C{size} 0, never answering.  C{produced} says
    how much it has written, C{lost} fires when its client went away.
    """

    isLeaf = True

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.chunk = b"z" * (64 * 1024)
        self.produced = 0
        self.stopped = False
        self.requests = 0
        self.lost: Deferred[None] = Deferred()

    def render_GET(self, request: Request) -> Any:
        self.requests += 1
        request.notifyFinish().addErrback(lambda _: self.lost.callback(None))
        if self.size:
            request.setHeader(b"content-type", b"application/octet-stream")
            request.registerProducer(_Chunks(self, request), False)
        return NOT_DONE_YET


class _SlowReader(Protocol):
    """
    Sends a request, reads nothing until told to, then reads everything.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received = 0
        self.tail = b""
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.data)
        self.transport.pauseProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.tail = (self.tail + data)[-16:]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(None)


class _TricklingReader(_SlowReader):
    """
    Reads one socket read's worth every C{interval} seconds, and nothing
    in between: a client far slower than the upstream.
    """

    def __init__(self, data: bytes, interval: float) -> None:
        super().__init__(data)
        self._reads = LoopingCall(self._read_once)
        self._reads.clock = reactor
        self._interval = interval

    def connectionMade(self) -> None:
        super().connectionMade()
        self._reads.start(self._interval, now=False)

    def _read_once(self) -> None:
        transport: Any = self.transport
        transport.resumeProducing()
        reactor.callLater(0, transport.pauseProducing)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._reads.running:
            self._reads.stop()
        super().connectionLost(reason)


def _held_for_clients(factory: WrappingFactory) -> int:
    """
    The bytes waiting in the gateway's client connections' write buffers
    (a C{FileDescriptor}'s own: sent-but-not-yet-taken bytes are the
    kernel's).
    """
    held = 0
    for protocol in factory.protocols:
        transport: Any = protocol.transport
        held += len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    return held


class RecordingUpstreamTests(TestCase):
    timeout = TEST_TIMEOUT

    async def test_what_the_upstream_is_sent(self) -> None:
        """
        The upstream gets the gateway's credentials and the tenant it
        decided, the path and query string as the client wrote them, the
        form body as it came; never the client's token.
        """
        recorder = Recorder()
        server = serve(self, recorder)
        client = upstream_client(self, "loki")
        gateway = await start_reads(self, QuerySettings(loki=ReadUpstream(client, server.url)))
        http = http_client(self)
        query = "query=%7Bjob%3D%22e2e%22%7D%20%7C%3D%20%22x%22&limit=10&direction=backward"
        response = await http.get(
            f"{gateway}/loki/api/v1/query_range?{query}",
            headers=bearer(TRIO, X_Scope_OrgID="team-b|team-c", Cookie="session=1",
                           X_Query_Tags="source=grafana"),
        )
        self.assertEqual(response.code, 200, await response.content())
        response = await http.post(
            f"{gateway}/loki/api/v1/series", data=b"match%5B%5D=%7Bjob%3D%22e2e%22%7D",
            headers={**bearer(TRIO, X_Scope_OrgID="team-a"), **FORM},
        )
        self.assertEqual(response.code, 200, await response.content())
        first, second = recorder.received
        self.assertEqual(first.uri, f"/loki/api/v1/query_range?{query}".encode())
        self.assertEqual(first.getHeader(b"authorization"), b"Bearer gateway-upstream-secret")
        self.assertEqual(first.getHeader(b"x-scope-orgid"), b"team-b|team-c")
        self.assertEqual(first.getHeader(b"x-query-tags"), b"source=grafana")
        self.assertIsNone(first.getHeader(b"cookie"))
        self.assertEqual(second.method, b"POST")
        self.assertEqual(second.uri, b"/loki/api/v1/series")
        self.assertEqual(recorder.bodies[1], b"match%5B%5D=%7Bjob%3D%22e2e%22%7D")
        self.assertEqual(second.getHeader(b"x-scope-orgid"), b"team-a")
        for request in recorder.received:
            for _, values in request.requestHeaders.getAllRawHeaders():
                self.assertNotIn(TRIO.encode(), b" ".join(values))

    async def test_backpressure(self) -> None:
        """
        A client that stops reading stops the upstream too: with the
        client reading nothing, the upstream gets to write only what the
        sockets' buffers hold, far from the whole answer; once the client
        reads, all of it arrives.
        """
        size = 96 * MiB
        hose = Firehose(size)
        server = serve(self, hose)
        client = upstream_client(self, "tempo")
        gateway = await start_reads(
            self, QuerySettings(tempo=ReadUpstream(client, server.url, max_response_bytes=size))
        )
        port = int(gateway.rsplit(":", 1)[1])
        reader = _SlowReader(
            f"GET /api/traces/abc HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {SOLO}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), reader)

        last = [-1]

        async def stalled() -> Optional[int]:
            if hose.produced and hose.produced == last[0]:
                return hose.produced
            last[0] = hose.produced
            return None

        produced = await wait_until(stalled, what="the upstream to stall", interval=0.5)
        self.assertLess(produced, size // 3, f"{produced} bytes produced while nobody read")
        assert reader.transport is not None
        reader.transport.resumeProducing()  # type: ignore[attr-defined]
        await reader.done
        self.assertEqual(hose.produced, size)
        self.assertGreater(reader.received, size)
        self.assertTrue(reader.tail.endswith(b"0\r\n\r\n"), reader.tail)

    async def test_slow_client_memory_bounded_by_the_stream(self) -> None:
        """
        A 50 MiB answer to a client that reads far slower than the
        upstream writes: what the gateway holds for it at any time (its
        client connection's write buffer, sampled every few milliseconds)
        stays within a few hundred KiB, not the answer, and every byte
        arrives.  The rest waits in the upstream, pushed back by TCP.
        """
        size = 50 * MiB
        hose = Firehose(size)
        server = serve(self, hose)
        client = upstream_client(self, "tempo")
        gateway, factory = await serve_reads(
            self, QuerySettings(tempo=ReadUpstream(client, server.url, max_response_bytes=size))
        )
        port = int(gateway.rsplit(":", 1)[1])
        reader = _TricklingReader(
            f"GET /api/traces/abc HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {SOLO}\r\n"
            "Connection: close\r\n\r\n".encode(),
            interval=0.002,
        )
        most = [0]

        def sample() -> None:
            most[0] = max(most[0], _held_for_clients(factory))

        sampling = LoopingCall(sample)
        sampling.clock = reactor
        sampling.start(0.003)
        self.addCleanup(lambda: sampling.running and sampling.stop())
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), reader)
        await reader.done
        self.assertEqual(hose.produced, size)
        self.assertGreater(reader.received, size)
        self.assertTrue(reader.tail.endswith(b"0\r\n\r\n"), reader.tail)
        self.assertGreater(most[0], 0)
        self.assertLessEqual(most[0], 256 * 1024, f"the gateway held {most[0]} bytes")

    async def test_client_gone_cancels_upstream(self) -> None:
        """
        A client that hangs up while the upstream is still working on the
        answer: the gateway drops its upstream connection too.
        """
        hose = Firehose(0)
        server = serve(self, hose)
        client = upstream_client(self, "prometheus")
        gateway = await start_reads(
            self, QuerySettings(prometheus=ReadUpstream(client, server.url))
        )
        http = http_client(self)
        request = http.get(f"{gateway}/api/v1/query?query=up", headers=bearer(SOLO))
        await wait_until(lambda: succeed(True if hose.requests else None),
                         what="the upstream request")
        request.addErrback(lambda _: None)
        request.cancel()
        await wait_until(lambda: succeed(True if hose.lost.called else None),
                         what="the upstream connection to drop", timeout=10)

    async def test_upstream_down(self) -> None:
        """
        An upstream that refuses connections: 503, never 2xx.
        """
        client = upstream_client(self, "loki")
        gateway = await start_reads(self, QuerySettings(
            loki=ReadUpstream(client, f"http://127.0.0.1:{free_port()}")))
        http = http_client(self)
        response = await http.get(f"{gateway}/loki/api/v1/labels", headers=bearer(SOLO))
        body = await response.content()
        self.assertEqual(response.code, 503, body)
        self.assertIn(b"cannot reach the loki upstream", body)

    async def test_answer_past_cap_is_cut(self) -> None:
        """
        An answer of no declared length that grows past the cap: the
        client gets the status, then a connection that drops before the
        body ends, never an answer that looks whole.
        """
        hose = Firehose(8 * MiB)
        server = serve(self, hose)
        client = upstream_client(self, "tempo")
        gateway = await start_reads(
            self, QuerySettings(tempo=ReadUpstream(client, server.url, max_response_bytes=MiB))
        )
        http = http_client(self)
        response = await http.get(f"{gateway}/tempo/api/search", headers=bearer(SOLO))
        self.assertEqual(response.code, 200)
        received = bytearray()
        with self.assertRaises(ResponseFailed):
            await response.collect(received.extend)
        self.assertLessEqual(len(received), MiB)
        await wait_until(lambda: succeed(True if hose.lost.called else None),
                         what="the upstream connection to drop", timeout=10)
        self.assertLess(hose.produced, 8 * MiB)


def undecoding_agent(test: TestCase) -> Agent:
    """
    A client that, unlike treq's, asks for no encoding and inflates
    nothing: what it gets is what the gateway sent.
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.retryAutomatically = False
    test.addCleanup(pool.closeCachedConnections)
    return Agent(reactor, pool=pool)


async def get_as_sent(
    agent: Agent, url: str, token: str, accept_encoding: Optional[str] = None
) -> tuple[Any, bytes]:
    """
    GET C{url} with C{token}, and C{Accept-Encoding} when given; the
    response and its body's bytes as received.
    """
    headers = Headers({b"Authorization": [f"Bearer {token}".encode()]})
    if accept_encoding is not None:
        headers.setRawHeaders(b"Accept-Encoding", [accept_encoding.encode()])
    response = await agent.request(b"GET", url.encode(), headers)
    return response, await readBody(response)


def head_lines(raw: bytes) -> list[bytes]:
    """
    The header lines of a raw HTTP/1.1 answer, lower-cased.
    """
    head = raw.split(b"\r\n\r\n", 1)[0]
    return [line.lower() for line in head.split(b"\r\n")[1:]]


class CompressionTests(TestCase):
    """
    Reads keep their compression: the client's C{Accept-Encoding} goes to
    the upstream once, as the client wrote it, and the upstream's encoded
    bytes come back unchanged, with its C{Content-Encoding}.
    """

    timeout = TEST_TIMEOUT

    #: Compresses about forty to one, as Prometheus's JSON does.
    BODY = json.dumps(
        {"status": "success", "data": [f"series_{i % 50}" for i in range(100_000)]}
    ).encode()

    async def start(
        self, chunked: bool = False, max_response_bytes: int = 64 * MiB
    ) -> tuple[GzipWhenAsked, str]:
        upstream = GzipWhenAsked(self.BODY, chunked=chunked)
        server = serve(self, upstream)
        gateway = await start_reads(self, QuerySettings(prometheus=ReadUpstream(
            upstream_client(self, "prometheus"), server.url,
            max_response_bytes=max_response_bytes)))
        return upstream, gateway + "/api/v1/label/__name__/values"

    async def test_gzip_asked(self) -> None:
        """
        A client that accepts gzip gets exactly the upstream's gzip bytes,
        with C{Content-Encoding: gzip} and the upstream's
        C{Vary: Accept-Encoding}; the upstream was asked once.
        """
        upstream, url = await self.start()
        response, body = await get_as_sent(undecoding_agent(self), url, SOLO, "gzip")
        self.assertEqual(response.code, 200, body[:200])
        self.assertEqual(response.headers.getRawHeaders(b"content-encoding"), [b"gzip"])
        self.assertEqual(response.headers.getRawHeaders(b"vary"), [b"Accept-Encoding"])
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(body, upstream.gzipped)
        self.assertEqual(upstream.accept_encodings, [[b"gzip"]])

    async def test_nothing_asked(self) -> None:
        """
        A client that sends no C{Accept-Encoding}: none reaches the
        upstream, and the plain answer has no C{Content-Encoding} header
        at all on the wire, not even an empty one.
        """
        upstream, url = await self.start()
        response, body = await get_as_sent(undecoding_agent(self), url, SOLO)
        self.assertEqual(response.code, 200, body[:200])
        self.assertEqual(body, self.BODY)
        self.assertFalse(response.headers.hasHeader(b"content-encoding"))
        path = url.split("/", 3)[3]
        port = int(url.split(":")[2].split("/")[0])
        # And on the wire, also for an answer left plain though the client
        # named an encoding (the upstream has no br).
        for asked in ("", "Accept-Encoding: br\r\n"):
            raw = await raw_http(
                port,
                f"GET /{path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {SOLO}\r\n"
                f"{asked}Connection: close\r\n\r\n".encode(),
            )
            self.assertEqual(status_of(raw), 200)
            lines = head_lines(raw)
            self.assertFalse(
                [line for line in lines if line.startswith(b"content-encoding")], lines)
            self.assertIn(b"vary: accept-encoding", lines)
        self.assertEqual(upstream.accept_encodings, [None, None, [b"br"]])

    async def test_left_plain(self) -> None:
        """
        An upstream that answers plain though the client accepts gzip (as
        Loki and Tempo do for small answers): the answer passes plain,
        with no C{Content-Encoding} header on the wire, not an empty one.
        """
        recorder = Recorder()
        server = serve(self, recorder)
        gateway = await start_reads(self, QuerySettings(
            loki=ReadUpstream(upstream_client(self, "loki"), server.url)))
        raw = await raw_http(
            int(gateway.rsplit(":", 1)[1]),
            f"GET /loki/api/v1/labels HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {SOLO}"
            "\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n".encode(),
        )
        self.assertEqual(status_of(raw), 200)
        lines = head_lines(raw)
        self.assertFalse([line for line in lines if line.startswith(b"content-encoding")], lines)
        self.assertIn(recorder.body, raw)
        [request] = recorder.received
        self.assertEqual(request.requestHeaders.getRawHeaders(b"accept-encoding"), [b"gzip"])

    async def test_preferences_as_written(self) -> None:
        """
        C{br, gzip} and weighted preferences reach the upstream as the
        client wrote them; the upstream's choice comes back as made.
        """
        upstream, url = await self.start()
        agent = undecoding_agent(self)
        for given in ("br, gzip", "gzip;q=1.0, identity;q=0.5, *;q=0"):
            response, body = await get_as_sent(agent, url, SOLO, given)
            self.assertEqual(response.headers.getRawHeaders(b"content-encoding"), [b"gzip"])
            self.assertEqual(body, upstream.gzipped)
        response, body = await get_as_sent(agent, url, SOLO, "br")
        self.assertFalse(response.headers.hasHeader(b"content-encoding"))
        self.assertEqual(body, self.BODY)
        self.assertEqual(
            upstream.accept_encodings,
            [[b"br, gzip"], [b"gzip;q=1.0, identity;q=0.5, *;q=0"], [b"br"]],
        )

    async def test_cap_counts_encoded_bytes(self) -> None:
        """
        C{max_response_bytes} counts the bytes as relayed: an answer whose
        plain form is over the cap passes whole when gzipped under it,
        with a declared length or without one; plain, the same answer is
        refused before it starts (declared length) or cut off.
        """
        cap = len(self.BODY) // 2
        agent = undecoding_agent(self)
        upstream, url = await self.start(max_response_bytes=cap)
        self.assertLess(len(upstream.gzipped), cap)
        response, body = await get_as_sent(agent, url, SOLO, "gzip")
        self.assertEqual(response.code, 200)
        self.assertEqual(gzip.decompress(body), self.BODY)
        response, body = await get_as_sent(agent, url, SOLO)
        self.assertEqual(response.code, 502, body)
        self.assertIn(f"larger than the gateway's limit of {cap} bytes".encode(), body)

        upstream, url = await self.start(chunked=True, max_response_bytes=cap)
        response, body = await get_as_sent(agent, url, SOLO, "gzip")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, upstream.gzipped)
        with self.assertRaises(ResponseFailed):
            await get_as_sent(agent, url, SOLO)
