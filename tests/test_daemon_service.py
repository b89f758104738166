"""
The gateway service over real sockets: requests in flight survive a drain,
the drain's grace is enforced, and /health, /ready and /metrics answer.
"""

from __future__ import annotations

import errno
import io
import json

import treq
from twisted.internet import reactor
from twisted.internet.address import IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import ResponseNeverReceived
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from sealgw.config import ListenerConfig, load
from sealgw.daemon import GatewayService, Health, Listener, make_observer, prepare_listener
from sealgw.daemon._service import CannotListen, cannot_listen
from sealgw.daemon._summary import Bound, bound_listeners, start_summary
from sealgw.web import GatewayMetrics, GatewayRoot, GatewaySite, OpsRoutes


class _Slow(Resource):
    """
    Answers each request when the test says so.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Deferred[None]] = []
        self.arrived: Deferred[None] = Deferred()

    def render_POST(self, request):  # type: ignore[no-untyped-def]
        request.record.route = "slow"
        request.record.identity = "alice"
        request.record.tenant = "team-a"
        d: Deferred[None] = Deferred()
        self.waiting.append(d)

        def answer(_: object) -> None:
            request.setResponseCode(204)
            request.finish()

        d.addCallback(answer)
        arrived, self.arrived = self.arrived, Deferred()
        arrived.callback(None)
        return NOT_DONE_YET


class ServiceTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.slow = _Slow()
        self.metrics = GatewayMetrics()
        self.health = Health()
        root = GatewayRoot(routes=self.slow, ops=OpsRoutes(self.health, self.metrics).app.resource())
        self.site = GatewaySite(root, reactor, self.metrics, max_body=1024)
        listener = prepare_listener(
            reactor, ListenerConfig(endpoint="tcp:0:interface=127.0.0.1"), self.site, "listeners[0]"
        )
        self.reloads: list[str] = []
        self.service = GatewayService(
            self.clock,
            [listener],
            [self.site],
            drain_grace=10.0,
            reload=lambda: self.reloads.append("reloaded"),
            install_signal_handlers=False,
        )
        self.health.require_for_ready("listening", lambda: self.service.listening)
        self.health.require_for_ready("not_draining", lambda: not self.service.draining)
        self.health.register(
            "listeners", lambda: {"status": "ok" if self.service.listening else "down"}
        )
        self.service.privilegedStartService()
        self.service.startService()
        self.listener = listener
        self.url = f"http://127.0.0.1:{listener.port.getHost().port}"

        def stop() -> object:
            if self.service.running:
                d = self.service.stopService()
                self.clock.advance(100)
                return d
            return None

        self.addCleanup(stop)

    async def test_health_ready_metrics(self) -> None:
        response = await treq.get(self.url + "/health", persistent=False)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"server"), [b"sealgw"])
        body = json.loads(await response.content())
        self.assertEqual(body["status"], "ok")
        response = await treq.get(self.url + "/ready", persistent=False)
        self.assertEqual(response.code, 200)
        response = await treq.get(self.url + "/metrics", persistent=False)
        text = (await response.content()).decode()
        self.assertIn('sealgw_http_requests_total{method="GET",route="ready",status="200",tenant=""} 1.0', text)
        self.assertIn("process_cpu_seconds_total", text)

    async def test_drain_waits_for_in_flight(self) -> None:
        pending = treq.post(self.url + "/push", data=b"x" * 10, persistent=False)
        await self.slow.arrived
        self.assertEqual(self.site.in_flight, 1)
        stopped = self.service.stopService()
        # Listening has stopped: a new connection is refused.
        with self.assertRaises(ConnectionRefusedError):
            await treq.get(self.url + "/health", persistent=False)
        self.assertTrue(self.service.draining)
        self.assertNoResult(stopped)
        self.slow.waiting[0].callback(None)
        response = await pending
        self.assertEqual(response.code, 204)
        await stopped
        self.assertEqual(self.site.in_flight, 0)

    async def test_drain_grace_over(self) -> None:
        pending = treq.post(self.url + "/push", data=b"x", persistent=False)
        await self.slow.arrived
        stopped = self.service.stopService()
        await Deferred.fromCoroutine(_turn())
        self.clock.advance(9)
        self.assertNoResult(stopped)
        self.clock.advance(1)
        await stopped
        with self.assertRaises(ResponseNeverReceived):
            await pending

    async def test_ready_during_drain(self) -> None:
        self.service.draining = True
        ready, conditions = self.health.readiness()
        self.assertFalse(ready)
        self.assertEqual(conditions, {"listening": True, "not_draining": False})
        self.service.draining = False

    async def test_access_log_line(self) -> None:
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        pending = treq.post(
            self.url + "/push?x=1",
            data=b"abc",
            persistent=False,
            headers={"Authorization": "Bearer very-secret-token"},
        )
        await self.slow.arrived
        self.slow.waiting[0].callback(None)
        await pending
        [access] = [e for e in events if e.get("access")]
        self.assertEqual(
            (access["method"], access["path"], access["status"], access["route"]),
            ("POST", "/push", 204, "slow"),
        )
        self.assertEqual((access["identity"], access["tenant"], access["bytes_in"]), ("alice", "team-a", 3))
        out = io.StringIO()
        make_observer(out, "json")(access)
        line = json.loads(out.getvalue())
        self.assertEqual(line["status"], 204)
        self.assertNotIn("very-secret-token", out.getvalue())

    async def test_body_too_large(self) -> None:
        """
        A declared body over the limit is answered 413 at once, without
        being read or routed, and the connection is closed.
        """
        response = await treq.post(self.url + "/push", data=b"x" * 2048, persistent=False)
        self.assertEqual(response.code, 413)
        self.assertEqual(
            await response.content(),
            b"body is larger than the limit of 1024 bytes (2048 bytes declared)\n",
        )
        self.assertEqual(self.slow.waiting, [])
        self.assertEqual(self.site.in_flight, 0)

    async def test_body_too_large_chunked(self) -> None:
        """
        Without a declared length, the body is counted as it arrives and
        discarded past the limit; the route sees it marked too large.
        """

        pending = treq.post(self.url + "/push", data=_Chunked(), persistent=False)
        await self.slow.arrived
        [request] = [c for c in self.site._channels][0].requests
        self.assertTrue(request.body_too_large)
        self.assertEqual(request.body(), b"")
        self.assertEqual(request.body_received, 2000)
        self.slow.waiting[0].callback(None)
        await pending

    def test_reload(self) -> None:
        self.service.reload()
        self.assertEqual(self.reloads, ["reloaded"])


@implementer(IBodyProducer)
class _Chunked:
    """
    A body of unknown length, so that it is sent chunked.
    """

    length = UNKNOWN_LENGTH

    def startProducing(self, consumer):  # type: ignore[no-untyped-def]
        consumer.write(b"x" * 1000)
        consumer.write(b"x" * 1000)
        return succeed(None)

    def stopProducing(self) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


async def _turn() -> None:
    d: Deferred[None] = Deferred()
    reactor.callLater(0.01, d.callback, None)
    await d


class BindTests(TestCase):
    """
    Start-up when an address cannot be had: one line naming it and why,
    and nothing left listening.
    """

    def held_port(self) -> int:
        held = reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")
        self.addCleanup(held.stopListening)
        return int(held.getHost().port)

    def service(self, *endpoints: str) -> GatewayService:
        listeners = [
            prepare_listener(reactor, ListenerConfig(endpoint=e), Site(Resource()), f"listeners[{i}]")
            for i, e in enumerate(endpoints)
        ]
        return GatewayService(
            Clock(), listeners, [], drain_grace=1.0, install_signal_handlers=False
        )

    def test_busy_port(self) -> None:
        port = self.held_port()
        service = self.service("tcp:0:interface=127.0.0.1", f"tcp:{port}:interface=127.0.0.1")
        listened = service.when_listening()
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        with self.assertRaises(CannotListen) as caught:
            service.privilegedStartService()
        line = (
            f"cannot listen on 127.0.0.1:{port} "
            f"(listeners[1]: tcp:{port}:interface=127.0.0.1): Address already in use"
        )
        # twistd exits 1 without a traceback, and the line is in the log.
        self.assertIsInstance(caught.exception, SystemExit)
        self.assertEqual((caught.exception.code, str(caught.exception)), (1, line))
        [logged] = [e for e in events if e.get("log_level") == LogLevel.critical]
        self.assertEqual(formatEvent(logged), line)
        # The listener bound before the busy one is closed again.
        self.assertIsNone(service.listeners[0].port)
        self.assertNoResult(listened)

    def test_when_listening(self) -> None:
        service = self.service("tcp:0:interface=127.0.0.1")
        listened = service.when_listening()
        service.privilegedStartService()
        self.assertNoResult(listened)
        service.startService()
        self.addCleanup(service.listeners[0].port.stopListening)
        self.successResultOf(listened)
        self.successResultOf(service.when_listening())

    def test_cannot_listen_addresses(self) -> None:
        listener = prepare_listener(
            reactor, ListenerConfig(endpoint="tcp:80"), Site(Resource()), "admin"
        )

        def line(error: Exception) -> str:
            return cannot_listen(listener, Failure(error))

        denied = OSError(errno.EACCES, "Permission denied")
        self.assertEqual(
            line(CannotListenError("", 80, denied)),
            "cannot listen on 0.0.0.0:80 (admin: tcp:80): Permission denied",
        )
        self.assertEqual(
            line(CannotListenError("::", 80, denied)),
            "cannot listen on [::]:80 (admin: tcp:80): Permission denied",
        )
        self.assertEqual(
            line(CannotListenError(None, "/run/sealgw.sock", denied)),
            "cannot listen on /run/sealgw.sock (admin: tcp:80): Permission denied",
        )
        self.assertEqual(
            line(KeyError("LISTEN_FDS")),
            "cannot listen on tcp:80 (admin): 'LISTEN_FDS'",
        )


class StartSummaryTests(SynchronousTestCase):
    """
    The summary logged once a gateway started on a configuration file
    listens (L{sealgw.daemon._summary}).
    """

    def summary(self, text: str, addresses: list[str]) -> list[str]:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        config = load(path)
        listeners = [*config.listeners, *([config.admin] if config.admin else [])]
        wheres = [f"listeners[{i}]" for i in range(len(config.listeners))]
        wheres += ["admin"] if config.admin else []
        bound = [Bound(w, li, a) for w, li, a in zip(wheres, listeners, addresses, strict=True)]
        return start_summary(config, bound).splitlines()

    def test_every_part(self) -> None:
        lines = self.summary(
            """
            listeners:
              - {endpoint: "tcp:8080"}
              - {endpoint: "tcp:8081:interface=127.0.0.1", auth: none, identity: sidecar}
            admin: {endpoint: "tcp:9185:interface=127.0.0.1"}
            upstreams:
              mimir: {url: "https://user:s3cret@mimir.example.com/api?key=s3cret"}
              disk: {type: file, directory: /var/tmp/sealgw}
            push:
              remote_write: {upstream: mimir}
              seal: {upstream: mimir}
              loki: {upstream: disk}
            query:
              prometheus: {upstream: mimir}
            auth:
              oidc: {issuer: "https://dex.example.com", audience: [sealgw]}
            """,
            ["0.0.0.0:8080", "127.0.0.1:8081", "127.0.0.1:9185"],
        )
        self.assertEqual(
            lines,
            [
                f"sealgw serving {lines[0].split()[-1]}",
                "  listening: http://0.0.0.0:8080 (listeners[0], every interface); "
                "http://127.0.0.1:8081 (listeners[1], no authentication: every request is "
                "'sidecar'); http://127.0.0.1:9185 (admin, health, readiness and metrics only)",
                "  push: remote_write, seal -> mimir; loki -> disk",
                "  reads: prometheus -> mimir",
                "  upstreams: mimir (https://mimir.example.com/api); "
                "disk (files in /var/tmp/sealgw)",
                "  identities: OIDC tokens from https://dex.example.com; no authentication on "
                "tcp:8081:interface=127.0.0.1",
            ],
        )
        self.assertNotIn("s3cret", "\n".join(lines))

    def test_no_identity_source(self) -> None:
        lines = self.summary(
            'listeners: [{endpoint: "unix:/run/sealgw.sock"}]\nworkers: 3\n', ["/run/sealgw.sock"]
        )
        self.assertTrue(lines[0].endswith("/temp with 3 worker processes"), lines[0])
        self.assertEqual(lines[1], "  listening: /run/sealgw.sock (listeners[0])")
        self.assertEqual(
            lines[-1], "  identities: none: every request that needs a token is refused (401)"
        )

    def test_bound_addresses(self) -> None:
        """
        The address a port was given, IPv6 in brackets.
        """
        config = ListenerConfig(endpoint="tcp6:0")
        # What the ports' getHost() answer, without listening: a
        # synchronous test cannot wait for a port to close.
        tcp = _BoundPort(IPv6Address("TCP", "::1", 8443))
        listener = Listener("listeners[0]", config, None, None, tcp)  # type: ignore[arg-type]
        [bound] = bound_listeners([listener])
        self.assertEqual(bound.address, "[::1]:8443")
        socket = "/run/sealgw/admin.sock"
        unix = _BoundPort(UNIXAddress(socket))
        listener = Listener("admin", config, None, None, unix)  # type: ignore[arg-type]
        self.assertEqual(bound_listeners([listener])[0].address, socket)


class _BoundPort:
    """
    A listening port as far as the start-up summary asks it: its address.
    """

    def __init__(self, address: object) -> None:
        self._address = address

    def getHost(self) -> object:
        return self._address
