"""
Loki live tails: the session's rules on a clock (messages both ways, close
codes passed on, the idle timeout and the maximum duration, a drain), the
count of open tails per identity, and, over real sockets, a WebSocket
client tailing through the gateway's own site from a fake Loki tail server
(autobahn on both sides), with the refusals a read gets.
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
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from sealgw.auth import build_gate
from sealgw.config import load
from sealgw.http import HeaderPolicy, HTTPClient
from sealgw.query import (
    ITailEnd,
    OpenTails,
    QuerySettings,
    ReadRefused,
    ReadUpstream,
    TailLimits,
    TailOutcome,
    TailSession,
    TailUpstream,
)
from sealgw.web import GatewayMetrics, GatewayRoot, GatewaySite
from sealgw.web.query import QueryRoutes
from tests.e2e_support import reactor
from tests.test_query_e2e import GatewayToken
from tests.test_query_support import PAIR, SOLO, write_config

MiB = 1024 * 1024


async def wait_until(check: Any, what: str, timeout: float = 10.0) -> None:
    """
    Poll C{check} on the real reactor until it is true.
    """
    deadline = reactor.seconds() + timeout
    while not check():
        if reactor.seconds() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await deferLater(reactor, 0.01, lambda: None)


@implementer(ITailEnd)
class RecordingEnd:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bool]] = []
        self.closed: Optional[tuple[int, str]] = None
        self.paused = False
        self.throttled: list[Any] = []

    def send(self, payload: bytes, binary: bool) -> None:
        self.sent.append((payload, binary))

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def throttles(self, other: Any) -> None:
        self.throttled.append(other)


class SessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.outcomes: list[TailOutcome] = []
        self.session = TailSession(
            self.clock, TailLimits(max_duration=100, idle_timeout=10), self.outcomes.append
        )
        self.client = RecordingEnd()
        self.upstream = RecordingEnd()
        self.session.upstream_opened(self.upstream)

    def test_upstream_waits_for_the_client(self) -> None:
        """
        The upstream is not read until the client's WebSocket is open;
        then each side's sending throttles the other's reading.
        """
        self.assertTrue(self.upstream.paused)
        self.session.client_opened(self.client)
        self.assertFalse(self.upstream.paused)
        self.assertEqual(self.client.throttled, [self.upstream])
        self.assertEqual(self.upstream.throttled, [self.client])

    def test_messages_both_ways(self) -> None:
        self.session.client_opened(self.client)
        self.session.from_upstream(b'{"streams":[]}', False)
        self.session.from_client(b"\x00\x01", True)
        self.assertEqual(self.client.sent, [(b'{"streams":[]}', False)])
        self.assertEqual(self.upstream.sent, [(b"\x00\x01", True)])

    def test_upstream_close_passed_on(self) -> None:
        """
        The upstream's close code and reason reach the client as they
        came; the tail ends once both are closed.
        """
        self.session.client_opened(self.client)
        self.session.from_upstream(b"x" * 10, False)
        self.session.upstream_closed(1011, "query failed")
        self.assertEqual(self.client.closed, (1011, "query failed"))
        self.assertEqual(self.outcomes, [])
        self.session.client_closed(1011, "query failed")
        [outcome] = self.outcomes
        self.assertEqual((outcome.ended_by, outcome.code, outcome.to_client), ("upstream", 1011, 10))

    def test_client_close_passed_on(self) -> None:
        self.session.client_opened(self.client)
        self.session.client_closed(1000, "bye")
        self.assertEqual(self.upstream.closed, (1000, "bye"))
        self.session.upstream_closed(1000, "bye")
        self.assertEqual(self.outcomes[0].ended_by, "client")

    def test_abnormal_close(self) -> None:
        """
        A side gone without a close frame (1006, which no frame may carry)
        is told to the other as 1011; a frame without a code as 1000.
        """
        self.session.client_opened(self.client)
        self.session.upstream_closed(1006, "dropped")
        self.assertEqual(self.client.closed[0] if self.client.closed else None, 1011)
        other = TailSession(self.clock, TailLimits(), lambda _: None)
        client, upstream = RecordingEnd(), RecordingEnd()
        other.upstream_opened(upstream)
        other.client_opened(client)
        other.client_closed(None, None)
        self.assertEqual(upstream.closed, (1000, ""))

    def test_idle_timeout(self) -> None:
        """
        A message either way puts the idle timeout off; past it with none,
        both sides are closed with 1000 and a reason.
        """
        self.session.client_opened(self.client)
        self.clock.advance(9)
        self.session.from_upstream(b"line", False)
        self.clock.advance(9)
        self.assertIsNone(self.client.closed)
        self.clock.advance(1.5)
        assert self.client.closed is not None and self.upstream.closed is not None
        self.assertEqual(self.client.closed[0], 1000)
        self.assertIn("idle timeout", self.client.closed[1])
        self.assertEqual(self.upstream.closed[0], 1000)
        self.session.client_closed(1000, "")
        self.session.upstream_closed(1000, "")
        self.assertEqual(self.outcomes[0].ended_by, "idle")

    def test_max_duration(self) -> None:
        self.session.client_opened(self.client)
        for _ in range(20):
            self.clock.advance(5)
            self.session.from_upstream(b"line", False)
        assert self.client.closed is not None
        self.assertIn("limit of 100s", self.client.closed[1])
        self.session.client_closed(1000, "")
        self.session.upstream_closed(1000, "")
        self.assertEqual(self.outcomes[0].ended_by, "duration")
        self.assertEqual(self.outcomes[0].seconds, 100)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_drain(self) -> None:
        self.session.client_opened(self.client)
        self.session.going_away()
        self.assertEqual(self.client.closed and self.client.closed[0], 1001)
        self.assertEqual(self.upstream.closed and self.upstream.closed[0], 1001)

    def test_upstream_gone_before_client(self) -> None:
        self.session.upstream_closed(1000, "done")
        self.session.client_opened(self.client)
        self.assertEqual(self.client.closed and self.client.closed[0], 1011)
        self.session.client_closed(1011, "")
        self.assertEqual(len(self.outcomes), 1)


class OpenTailsTests(SynchronousTestCase):
    def test_cap_per_identity(self) -> None:
        tails = OpenTails(2)
        first = tails.open("a")
        tails.open("a")
        tails.open("b")
        e = self.assertRaises(ReadRefused, tails.open, "a")
        self.assertEqual(e.status, 429)
        self.assertIn("max_per_identity", e.message)
        self.assertIn("Retry-After", e.headers)
        first()
        first()
        self.assertEqual(tails.count("a"), 1)
        tails.open("a")
        self.assertEqual(tails.total(), 3)


# -- over real sockets ------------------------------------------------------


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
            from autobahn.websocket.types import ConnectionDeny

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
            if c.transport is not None:
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

    def start_gateway(self, loki_url: str) -> int:
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
            handshake_timeout=5,
        )
        self.tail = tail
        self.tails.append(tail)
        settings = QuerySettings(loki=ReadUpstream(client=client, url=loki_url, tail=tail))
        root = GatewayRoot(routes=QueryRoutes(settings, gate).app.resource(), ops=None)
        self.site = GatewaySite(
            root, reactor, GatewayMetrics(CollectorRegistry()), max_body=MiB, access_log=False
        )
        port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    async def connect(
        self, token: Optional[str] = SOLO, tenant: Optional[str] = "team-a"
    ) -> TailClient:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if tenant is not None:
            headers["X-Scope-OrgID"] = tenant
        factory = WebSocketClientFactory(
            f"ws://127.0.0.1:{self.gateway}/loki/api/v1/tail?query=%7Bjob%3D%22a%22%7D&limit=10",
            headers=headers,
            reactor=reactor,
        )
        factory.protocol = TailClient
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.gateway)
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
        from tests.subprocesses import free_port

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
