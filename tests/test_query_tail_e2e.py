"""
Loki live tails over real sockets: a WebSocket client (autobahn) tailing
through the gateway's own site from a fake Loki tail server (autobahn),
frames both ways, close codes passed on, backpressure, TLS on both legs,
and the refusals a read gets (wrong token, foreign tenant, over the cap,
Loki's own refusals, Loki unreachable or silent).
"""

from __future__ import annotations

import os
from typing import Any, Optional

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.types import ConnectionDeny
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from sealgw.auth import build_gate
from sealgw.config import ListenerConfig, TLSConfig, load
from sealgw.daemon import prepare_listener
from sealgw.http import HeaderPolicy, HTTPClient, load_trust_root
from sealgw.query import QuerySettings, ReadUpstream, TailLimits, TailUpstream
from sealgw.web import GatewayMetrics, GatewayRoot, GatewaySite
from sealgw.web.query import QueryRoutes
from tests.certs import CertificateAuthority
from tests.e2e_support import raw_http, reactor, status_of
from tests.subprocesses import free_port
from tests.test_query_e2e import GatewayToken
from tests.test_query_support import PAIR, SOLO, write_config

MiB = 1024 * 1024


@implementer(IPushProducer)
class WritePressure:
    """
    Registered on a transport to see when its buffer is full.
    """

    def __init__(self) -> None:
        self.paused = False
        self.since = 0.0

    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            self.since = reactor.seconds()

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


class Silent(Protocol):
    """
    An upstream that takes the connection and never answers.
    """

    def connectionMade(self) -> None:
        self.factory.connections.append(self)  # type: ignore[attr-defined]
        self.lost = False

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


async def wait_until(check: Any, what: str, timeout: float = 10.0) -> None:
    """
    Poll C{check} on the real reactor until it is true.
    """
    deadline = reactor.seconds() + timeout
    while not check():
        if reactor.seconds() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await deferLater(reactor, 0.01, lambda: None)


class FakeLokiTail(WebSocketServerProtocol):
    """
    Loki's tail endpoint: remembers the handshake, sends what the test
    asks, and records what it gets.
    """

    factory: Any

    def onConnect(self, request: Any) -> None:
        self.factory.requests.append(request)
        refuse = self.factory.refuse
        if refuse is not None:
            raise ConnectionDeny(refuse, "refused by the test")

    def onOpen(self) -> None:
        self.factory.opened.append(self)
        self.received: list[bytes] = []
        self.close_code: Optional[int] = None
        for line in self.factory.greeting:
            self.sendMessage(line)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.received.append(payload)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.close_code = code
        self.factory.closed.append((code, reason))


class TailClient(WebSocketClientProtocol):
    factory: Any

    def connectionMade(self) -> None:
        self.messages: list[bytes] = []
        self.status: Optional[int] = None
        self.opened: Deferred[None] = Deferred()
        self.done: Deferred[tuple[Optional[int], Optional[str]]] = Deferred()
        super().connectionMade()

    def failHandshake(self, reason: str) -> None:
        line = getattr(self, "http_status_line", "") or ""
        parts = line.split()
        if len(parts) > 1 and parts[1].isdigit():
            self.status = int(parts[1])
        super().failHandshake(reason)

    def onOpen(self) -> None:
        self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append(payload)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if not self.opened.called:
            self.opened.errback(RuntimeError(f"handshake failed: {self.status}"))
        self.done.callback((code, reason))


class TailEndToEndTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        loki = WebSocketServerFactory(reactor=reactor)
        loki.protocol = FakeLokiTail
        loki.requests = []
        loki.opened = []
        loki.closed = []
        loki.refuse = None
        loki.greeting = [b'{"streams":[{"stream":{"job":"a"},"values":[["1","one"]]}]}']
        self.loki = loki
        port = reactor.listenTCP(0, loki, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.loki_url = f"http://127.0.0.1:{port.getHost().port}"
        self.limits = TailLimits(max_per_identity=1)
        self.tails: list[TailUpstream] = []
        self.gateway = self.start_gateway(self.loki_url)
        self.clients: list[TailClient] = []
        self.addCleanup(lambda: Deferred.fromCoroutine(self._close_clients()))

    async def _close_clients(self) -> None:
        for c in self.clients:
            if not c.done.called and c.transport is not None:
                c.transport.abortConnection()
        for c in self.clients:
            await c.done
        # The gateway's side of each tail closes its upstream in turn.
        await wait_until(
            lambda: all(t.open_tails.total() == 0 for t in self.tails), "every tail to end"
        )
        await wait_until(lambda: all(p.state == p.STATE_CLOSED for p in self.loki.opened),
                         "Loki's side to close")
        await deferLater(reactor, 0, lambda: None)

    def start_gateway(
        self, loki_url: str, trust_root: Any = None, handshake_timeout: float = 5,
        tls: Any = None,
    ) -> int:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        config = load(write_config(directory, {"tenancy": {"federation": True}}))
        gate = build_gate(config, reactor, CollectorRegistry())
        client = HTTPClient(reactor, name="loki", credentials=GatewayToken())
        self.addCleanup(client.close)
        tail = TailUpstream(
            reactor=reactor,
            limits=self.limits,
            policy=HeaderPolicy.build({"X-Static": "yes"}, "X-Scope-OrgID"),
            credentials=GatewayToken(),
            connect_timeout=5,
            handshake_timeout=handshake_timeout,
            trust_root=trust_root,
        )
        self.tail = tail
        self.tails.append(tail)
        settings = QuerySettings(loki=ReadUpstream(client=client, url=loki_url, tail=tail))
        root = GatewayRoot(routes=QueryRoutes(settings, gate).app.resource(), ops=None)
        self.registry = CollectorRegistry()
        self.site = GatewaySite(
            root, reactor, GatewayMetrics(self.registry), max_body=MiB, access_log=False
        )
        if tls is None:
            port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        else:
            # As the daemon listens: TLS, inside the connection limit.
            listener = prepare_listener(
                reactor,
                ListenerConfig(endpoint="ssl:0:interface=127.0.0.1", tls=tls),
                self.site,
                "listeners[0]",
            )
            port = self.successResultOf(listener.endpoint.listen(listener.factory))
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    async def connect(
        self, token: Optional[str] = SOLO, tenant: Optional[str] = "team-a",
        tls: Any = None,
    ) -> TailClient:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if tenant is not None:
            headers["X-Scope-OrgID"] = tenant
        scheme = "ws" if tls is None else "wss"
        factory = WebSocketClientFactory(
            f"{scheme}://127.0.0.1:{self.gateway}/loki/api/v1/tail"
            "?query=%7Bjob%3D%22a%22%7D&limit=10",
            headers=headers,
            reactor=reactor,
        )
        factory.protocol = TailClient
        endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", self.gateway)
        if tls is not None:
            endpoint = wrapClientTLS(tls, endpoint)
        client = await endpoint.connect(factory)
        self.clients.append(client)
        return client

    async def refused(self, **kwargs: Any) -> Optional[int]:
        client = await self.connect(**kwargs)
        await client.done
        self.assertFalse(client.opened.called and client.opened.result is None)
        client.opened.addErrback(lambda _: None)
        return client.status

    async def test_tail_through_the_gateway(self) -> None:
        """
        The client gets Loki's frames; its own reach Loki; Loki was asked
        with the tenant, the gateway's credentials, the operator's header
        and the client's query string, never the client's token.
        """
        client = await self.connect()
        await client.opened
        await wait_until(lambda: client.messages, "the first frame")
        self.assertEqual(client.messages, self.loki.greeting)
        [request] = self.loki.requests
        self.assertEqual(request.headers["x-scope-orgid"], "team-a")
        self.assertEqual(request.headers["authorization"], "Bearer gateway-upstream-secret")
        self.assertEqual(request.headers["x-static"], "yes")
        self.assertEqual(request.path, "/loki/api/v1/tail")
        self.assertEqual(request.params["query"], ['{job="a"}'])
        [loki] = self.loki.opened
        client.sendMessage(b"ping from grafana")
        await wait_until(lambda: loki.received, "the client's frame at Loki")
        self.assertEqual(loki.received, [b"ping from grafana"])
        loki.sendMessage(b"x" * 200_000)
        await wait_until(lambda: len(client.messages) == 2, "a large frame")
        self.assertEqual(len(client.messages[1]), 200_000)

    async def test_upstream_close_code_reaches_client(self) -> None:
        client = await self.connect()
        await client.opened
        [loki] = self.loki.opened
        loki.sendClose(4000, "tail ended upstream")
        code, reason = await client.done
        self.assertEqual((code, reason), (4000, "tail ended upstream"))
        await wait_until(lambda: self.tail.open_tails.total() == 0, "the tail to be released")

    async def test_client_close_reaches_upstream(self) -> None:
        client = await self.connect()
        await client.opened
        client.sendClose(1000, "closed the view")
        await client.done
        await wait_until(lambda: self.loki.closed, "Loki to see the close")
        self.assertEqual(self.loki.closed, [(1000, "closed the view")])
        await wait_until(lambda: self.tail.open_tails.total() == 0, "the tail to be released")
        self.assertEqual(self.site.in_flight, 0)

    async def test_wrong_token(self) -> None:
        self.assertEqual(await self.refused(token="not-a-token"), 401)
        self.assertEqual(await self.refused(token=None), 401)
        self.assertEqual(self.loki.requests, [])

    async def test_foreign_tenant(self) -> None:
        self.assertEqual(await self.refused(tenant="team-b"), 403)
        self.assertEqual(self.loki.requests, [])

    async def test_over_the_cap(self) -> None:
        """
        An identity at its cap is refused 429 before the upgrade; another
        identity is not, and the first may open one again once its tail
        is closed.
        """
        first = await self.connect()
        await first.opened
        self.assertEqual(await self.refused(), 429)
        other = await self.connect(token=PAIR, tenant="team-b")
        await other.opened
        first.sendClose(1000)
        await first.done
        await wait_until(lambda: self.tail.open_tails.count("solo") == 0, "release")
        again = await self.connect()
        await again.opened

    async def test_upstream_refuses(self) -> None:
        """
        Loki's 4xx comes back as it came; its 5xx as 502; no upgrade.
        """
        self.loki.refuse = 400
        self.assertEqual(await self.refused(), 400)
        self.loki.refuse = 500
        self.assertEqual(await self.refused(), 502)
        self.assertEqual(self.tail.open_tails.total(), 0)

    async def test_upstream_unreachable(self) -> None:
        self.gateway = self.start_gateway(f"http://127.0.0.1:{free_port()}")
        self.assertEqual(await self.refused(), 503)
        self.assertEqual(self.tail.open_tails.total(), 0)

    async def test_drain_closes_tails(self) -> None:
        client = await self.connect()
        await client.opened
        self.site.begin_drain()
        code, _ = await client.done
        self.assertEqual(code, 1001)
        await wait_until(lambda: self.site.in_flight == 0, "the tail's request to end")

    async def test_access_line_and_metrics(self) -> None:
        """
        A tail is one request: answered 101 on its route, counted when it
        ends, with the bytes sent to the client.
        """
        client = await self.connect()
        await client.opened
        await wait_until(lambda: client.messages, "the first frame")
        self.assertEqual(self.site.in_flight, 1)
        client.sendClose(1000)
        await client.done
        await wait_until(lambda: self.site.in_flight == 0, "the request to end")
        labels = {"route": "read_loki_tail", "method": "GET", "status": "101",
                  "tenant": "team-a"}
        self.assertEqual(self.registry.get_sample_value("sealgw_http_requests_total", labels), 1)
        self.assertEqual(
            self.registry.get_sample_value(
                "sealgw_http_response_bytes_total", {"route": "read_loki_tail"}
            ),
            len(self.loki.greeting[0]),
        )

    async def test_slow_client_holds_loki_back(self) -> None:
        """
        A client that stops reading stops the gateway reading Loki: Loki's
        own writes back up long before it has sent all it would, and
        nothing is lost once the client reads again.
        """
        client = await self.connect()
        await client.opened
        await wait_until(lambda: client.messages, "the first frame")
        [loki] = self.loki.opened
        pressure = WritePressure()
        loki.transport.registerProducer(pressure, True)
        client.transport.pauseProducing()
        message, sent, ceiling = b"x" * MiB, 0, 96
        while sent < ceiling:
            if pressure.paused:
                if reactor.seconds() - pressure.since > 1.0:
                    break
                await deferLater(reactor, 0.02, lambda: None)
                continue
            loki.sendMessage(message)
            sent += 1
            await deferLater(reactor, 0, lambda: None)
        self.assertLess(sent, ceiling, "Loki was never held back")
        client.transport.resumeProducing()
        await wait_until(lambda: len(client.messages) == sent + 1, "every message", 30)
        loki.transport.unregisterProducer()

    async def test_tls_both_ways(self) -> None:
        """
        The client speaks TLS to the gateway's TLS listener (inside its
        connection limit, as the daemon serves), and the gateway speaks
        TLS to Loki, verified against the upstream's CA.
        """
        ca = CertificateAuthority(self.mktemp())
        server = ca.issue("server")
        loki = WebSocketServerFactory(reactor=reactor)
        loki.protocol = FakeLokiTail
        loki.requests, loki.opened, loki.closed = [], [], []
        loki.refuse = None
        loki.greeting = [b"over TLS"]
        self.loki = loki
        with open(server.certificate, "rb") as f:
            cert_pem = f.read()
        with open(server.key, "rb") as f:
            key_pem = f.read()
        from twisted.internet.ssl import PrivateCertificate

        options = PrivateCertificate.loadPEM(cert_pem + key_pem).options()
        port = reactor.listenSSL(0, loki, options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.gateway = self.start_gateway(
            f"https://127.0.0.1:{port.getHost().port}",
            trust_root=load_trust_root(ca.certificate),
            tls=TLSConfig(certificate=server.certificate, key=server.key),
        )
        trust = load_trust_root(ca.certificate)
        client = await self.connect(tls=optionsForClientTLS("127.0.0.1", trust))
        await client.opened
        await wait_until(lambda: client.messages, "the first frame")
        self.assertEqual(client.messages, [b"over TLS"])
        [upstream] = loki.opened
        client.sendMessage(b"up")
        await wait_until(lambda: upstream.received, "the client's frame")
        upstream.sendClose(1000, "done")
        self.assertEqual(await client.done, (1000, "done"))

    def silent_upstream(self) -> tuple[list[Silent], str]:
        factory = Factory.forProtocol(Silent)
        factory.connections = []  # type: ignore[attr-defined]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return factory.connections, f"http://127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]

    async def test_silent_upstream_times_out(self) -> None:
        connections, url = self.silent_upstream()
        self.gateway = self.start_gateway(url, handshake_timeout=0.5)
        self.assertEqual(await self.refused(), 504)
        await wait_until(lambda: connections and connections[0].lost, "the upstream dropped")
        self.assertEqual(self.tail.open_tails.total(), 0)

    async def test_client_gone_while_upstream_opens(self) -> None:
        """
        A client that leaves while Loki has not answered: the upstream
        connection is dropped and the tail not counted.
        """
        connections, url = self.silent_upstream()
        self.gateway = self.start_gateway(url, handshake_timeout=60)
        client = await self.connect()
        await wait_until(lambda: connections, "the upstream connection")
        self.assertEqual(self.tail.open_tails.total(), 1)
        client.transport.abortConnection()
        await client.done
        client.opened.addErrback(lambda _: None)
        await wait_until(lambda: connections[0].lost, "the upstream dropped")
        await wait_until(lambda: self.tail.open_tails.total() == 0, "the tail released")
        await wait_until(lambda: self.site.in_flight == 0, "the request to end")

    async def test_plain_get(self) -> None:
        """
        A GET that is no upgrade is told to upgrade (426), once the gate
        has let it in (401 before that); nothing reaches Loki.
        """
        head = (
            b"GET /loki/api/v1/tail?query=%7Bjob%3D%22a%22%7D HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nConnection: close\r\n"
        )
        raw = await raw_http(
            self.gateway, head + f"Authorization: Bearer {SOLO}\r\n\r\n".encode("ascii")
        )
        self.assertEqual(status_of(raw), 426)
        self.assertIn(b"\r\nUpgrade: websocket\r\n", raw)
        self.assertIn(b"Upgrade: websocket and Connection: Upgrade", raw)
        raw = await raw_http(self.gateway, head + b"\r\n")
        self.assertEqual(status_of(raw), 401)
        self.assertEqual(self.loki.requests, [])
