"""
L{sealgw.http.HTTPClient} over real sockets on 127.0.0.1: TLS against a CA
bundle, methods and query strings on the wire, pooled connections, a
streamed body whose consumer's pauses reach the socket, and cancellation
that closes the connection.
"""

from __future__ import annotations

from typing import Any, Optional

from OpenSSL import SSL
from twisted.internet import reactor as _reactor
from twisted.internet import tcp
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.interfaces import IPushProducer
from twisted.internet.ssl import PrivateCertificate
from twisted.trial.unittest import TestCase
from twisted.web.client import ResponseNeverReceived
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from sealgw.config import TimeoutsConfig
from sealgw.http import HTTPClient, load_trust_root
from tests.pki import Chain, pem

reactor: Any = _reactor

MiB = 1024 * 1024
TIMEOUTS = TimeoutsConfig(connect=5.0, response=5.0, body=5.0)


class Upstream(Resource):
    """
    C{/echo} answers what it was asked, C{/big} 8 MiB, C{/hang} the
    headers and then nothing.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.hanging: list[Request] = []

    def render(self, request: Request) -> Any:
        if request.path == b"/big":
            return b"".join(bytes([i]) * 65536 for i in range(128))
        if request.path == b"/hang":
            request.setResponseCode(200)
            request.write(b"started")
            self.hanging.append(request)
            return NOT_DONE_YET
        assert request.content is not None
        return b"%s %s %s" % (request.method, request.uri, request.content.read())


class TrackingSite(Site):
    """
    Knows when each of its connections has closed.
    """

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)
        self.closed: list[Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        closed: Deferred[None] = Deferred()
        self.closed.append(closed)
        original = protocol.connectionLost

        def connectionLost(reason: Any) -> None:
            original(reason)
            closed.callback(None)

        protocol.connectionLost = connectionLost
        return protocol


class PausingConsumer:
    """
    Pauses its producer every C{every} bytes (before the C{total} it
    expects: once the body has all come, its connection is the pool's) and
    resumes it on the next reactor turn, noting whether the connection to
    C{port} was still being read while paused.
    """

    def __init__(self, port: int, every: int, total: Optional[int] = None) -> None:
        self.port = port
        self.every = every
        self.total = total
        self.received = 0
        self.chunks: list[bytes] = []
        self.pauses = 0
        self.read_while_paused = False
        self.producer: Optional[IPushProducer] = None
        self._next_pause = every

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        self.received += len(data)
        more = self.total is None or self.received < self.total
        if self.received >= self._next_pause and self.producer is not None and more:
            self._next_pause += self.every
            self.pauses += 1
            self.producer.pauseProducing()
            if self._reading():
                self.read_while_paused = True
            reactor.callLater(0, self._resume)

    def _resume(self) -> None:
        if self.producer is not None:
            self.producer.resumeProducing()

    def _reading(self) -> bool:
        return any(
            isinstance(r, tcp.Client) and r.getPeer().port == self.port
            for r in reactor.getReaders()
        )


class ClientSocketTests(TestCase):
    def serve(self, tls: Optional[bytes] = None) -> tuple[Upstream, TrackingSite, int]:
        resource = Upstream()
        site = TrackingSite(resource)
        if tls is None:
            port = reactor.listenTCP(0, site, interface="127.0.0.1")
        else:
            options = PrivateCertificate.loadPEM(tls).options()
            port = reactor.listenSSL(0, site, options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: gatherResults(site.closed))
        return resource, site, port.getHost().port

    def client(self, **kwargs: Any) -> HTTPClient:
        kwargs.setdefault("timeouts", TIMEOUTS)
        client = HTTPClient(reactor, name="test", **kwargs)
        self.addCleanup(client.close)
        return client

    def ca_file(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    async def test_methods_and_query(self) -> None:
        """
        Any method, a query string added to the URL's own, a body; both
        requests share one pooled connection, which close() ends.
        """
        _, site, port = self.serve()
        client = self.client()
        response = await client.request(
            "PUT", f"http://127.0.0.1:{port}/echo?a=1", query=[("q", "up{job='x'}")],
            body=b"payload", content_type="text/plain",
        )
        body = await response.read(1024)
        self.assertEqual(body.data, b"PUT /echo?a=1&q=up%7Bjob%3D%27x%27%7D payload")
        response = await client.request("DELETE", f"http://127.0.0.1:{port}/echo")
        self.assertEqual((await response.read(1024)).data, b"DELETE /echo ")
        self.assertEqual(len(site.closed), 1)
        await client.close()
        await site.closed[0]

    async def test_ca_bundle(self) -> None:
        """
        A server certificate from an intermediate CA verifies against a
        bundle holding the intermediate and the root, by address and by
        name; with the root alone it does not (the server sends only its
        own certificate), and nothing reaches the upstream.
        """
        chain = Chain()
        _, _, port = self.serve(tls=chain.server_pem())
        client = self.client(trust_root=load_trust_root(self.ca_file(chain.bundle())))
        for host in ("127.0.0.1", "localhost"):
            response = await client.request("GET", f"https://{host}:{port}/echo")
            self.assertEqual((await response.read(100)).data, b"GET /echo ")
        root_only = self.client(trust_root=load_trust_root(self.ca_file(pem(chain.root[1]))))
        with self.assertRaises(ResponseNeverReceived) as raised:
            await root_only.request("GET", f"https://127.0.0.1:{port}/echo")
        self.assertTrue(raised.exception.reasons[0].check(SSL.Error))

    async def test_streamed_body_with_backpressure(self) -> None:
        """
        8 MiB streamed to a consumer that pauses every MiB: while it is
        paused the connection is not read at all, and every byte arrives,
        in order.
        """
        _, _, port = self.serve()
        client = self.client()
        response = await client.request("GET", f"http://127.0.0.1:{port}/big")
        consumer = PausingConsumer(port, every=MiB, total=8 * MiB)
        delivered = await response.stream(consumer)
        self.assertEqual(delivered, 8 * MiB)
        self.assertGreaterEqual(consumer.pauses, 7)
        self.assertFalse(consumer.read_while_paused)
        self.assertEqual(
            b"".join(consumer.chunks), b"".join(bytes([i]) * 65536 for i in range(128))
        )

    async def test_cancel_stream_closes_connection(self) -> None:
        _, site, port = self.serve()
        client = self.client()
        response = await client.request("GET", f"http://127.0.0.1:{port}/hang")
        consumer = PausingConsumer(port, every=MiB)
        streaming = response.stream(consumer)
        streaming.cancel()
        with self.assertRaises(CancelledError):
            await streaming
        await site.closed[0]

    async def test_cancel_read_closes_connection(self) -> None:
        _, site, port = self.serve()
        client = self.client()
        response = await client.request("GET", f"http://127.0.0.1:{port}/hang")
        reading = response.read(1024)
        reading.cancel()
        with self.assertRaises(CancelledError):
            await reading
        await site.closed[0]
