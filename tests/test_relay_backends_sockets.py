"""
An upstream of several backends over real sockets: Twisted web servers
on 127.0.0.1, one stopped in the middle of a steady load and started
again; and a backend reached by address while its certificate names only
the host.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.interfaces import IListeningPort
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource

from sealgw.config import HTTPUpstreamConfig
from sealgw.config import read as read_config
from sealgw.http import Backends, HTTPClient, load_trust_root
from sealgw.query import build_reads
from sealgw.relay import HTTPUpstream, UpstreamUnavailable
from tests.pki import make_ca, make_server_cert, pem
from tests.test_http_backends import ScriptedResolver
from tests.test_relay_sockets import (
    FAST_RETRY,
    SHORT_TIMEOUTS,
    TrackingSite,
    Upstream,
    inline,
    push,
)

reactor: Any = _reactor


class Server:
    """
    A fake Mimir on 127.0.0.1 that can be stopped (listening socket closed
    and every connection cut, as when its process dies) and started again
    on the same port.
    """

    def __init__(
        self, test: TestCase, tls: Optional[bytes] = None, resource: Optional[Resource] = None
    ) -> None:
        self.resource: Any = resource if resource is not None else Upstream()
        self.site = TrackingSite(self.resource)
        self._tls = tls
        self._port: Optional[IListeningPort] = None
        self.number = 0
        self.start()
        test.addCleanup(self.stop)

    def start(self) -> None:
        if self._tls is None:
            self._port = reactor.listenTCP(self.number, self.site, interface="127.0.0.1")
        else:
            options = PrivateCertificate.loadPEM(self._tls).options()
            self._port = reactor.listenSSL(self.number, self.site, options, interface="127.0.0.1")
        self.number = self._port.getHost().port  # type: ignore[attr-defined]

    def stop(self) -> Deferred[Any]:
        port, self._port = self._port, None
        if port is None:
            return gatherResults(self.site.closed)
        stopped = port.stopListening()
        for channel in list(getattr(self.site, "channels", ())):
            # An HTTP channel behind Twisted's protocol-negotiating wrapper.
            transport = getattr(getattr(channel, "_channel", channel), "transport", None)
            if transport is not None:
                transport.abortConnection()
        return gatherResults([stopped, *self.site.closed])


def tracked(server: Server) -> None:
    """
    Keep C{server}'s open connections, to cut them when it stops.
    """
    channels: set[Any] = set()
    server.site.channels = channels  # type: ignore[attr-defined]
    original = server.site.buildProtocol

    def build(addr: Any) -> Any:
        protocol = original(addr)
        channels.add(protocol)
        lost = protocol.connectionLost

        def connectionLost(reason: Any) -> None:
            channels.discard(protocol)
            lost(reason)

        protocol.connectionLost = connectionLost
        return protocol

    server.site.buildProtocol = build  # type: ignore[method-assign]


class _UpstreamTestCase(TestCase):
    client_kwargs: dict[str, Any] = {}

    def upstream(
        self, urls: tuple[str, ...], backends: Backends, **kwargs: Any
    ) -> HTTPUpstream:
        config = HTTPUpstreamConfig(
            name="mimir", urls=urls, timeouts=SHORT_TIMEOUTS, retry=FAST_RETRY, **kwargs
        )
        client = HTTPClient(
            reactor, name="mimir", timeouts=SHORT_TIMEOUTS, max_connections=16,
            backends=backends, **self.client_kwargs,
        )
        self.addCleanup(client.close)
        return HTTPUpstream(config, reactor, client=client)


class SeveralBackendsTests(_UpstreamTestCase):
    @inline
    async def test_one_stopped_mid_load(self) -> None:
        """
        Steady pushes, eight at a time, to two backends: both take pushes;
        one is stopped (its connections cut, its port closed) and not one
        push fails, the other taking them; once it is started again it
        takes pushes again.
        """
        a, b = Server(self), Server(self)
        tracked(a)
        tracked(b)
        urls = (f"http://127.0.0.1:{a.number}", f"http://127.0.0.1:{b.number}")
        backends = Backends("mimir", urls, reactor, set_aside=0.2, max_set_aside=0.4)
        upstream = self.upstream(urls, backends)
        delivered = [0]
        failures: list[Any] = []
        running = [True]

        async def pusher() -> None:
            while running[0]:
                try:
                    await upstream.deliver(push("/ok", received_at=reactor.seconds()))
                    delivered[0] += 1
                except Exception as e:
                    failures.append(e)
                    # A failure at once would spin here without the
                    # reactor ever running.
                    await deferLater(reactor, 0.01, lambda: None)

        async def until(condition: Any, what: str) -> None:
            deadline = reactor.seconds() + 15
            while not condition():
                if reactor.seconds() > deadline:
                    raise AssertionError(f"timed out waiting for {what}")
                await deferLater(reactor, 0.01, lambda: None)

        pushers = [Deferred.fromCoroutine(pusher()) for _ in range(8)]
        try:
            await until(lambda: delivered[0] >= 200, "200 pushes")
            self.assertGreater(len(a.resource.seen), 20)
            self.assertGreater(len(b.resource.seen), 20)
            await a.stop()
            seen_by_a = len(a.resource.seen)
            stopped_at = delivered[0]
            await until(lambda: delivered[0] >= stopped_at + 200, "200 pushes with a stopped")
            self.assertEqual(len(a.resource.seen), seen_by_a)
            self.assertIn(
                "set_aside", [r["status"] for r in backends.report()], backends.report()
            )
            self.assertEqual(upstream.health()["status"], "degraded")
            a.start()
            await until(lambda: len(a.resource.seen) > seen_by_a + 50, "a to take pushes again")
            self.assertEqual([r["status"] for r in backends.report()], ["ok", "ok"])
        finally:
            running[0] = False
            await DeferredList(pushers)
        self.assertEqual(failures, [])
        # Every push arrived; those a had read when it was stopped, but
        # not answered, arrived twice (at least once is the contract).
        arrived = len(a.resource.seen) + len(b.resource.seen)
        self.assertGreaterEqual(arrived, delivered[0])
        self.assertLessEqual(arrived, delivered[0] + 8)

    @inline
    async def test_all_stopped(self) -> None:
        """
        With every backend down, a push fails as with one upstream: 503,
        to be sent again later.
        """
        a, b = Server(self), Server(self)
        urls = (f"http://127.0.0.1:{a.number}", f"http://127.0.0.1:{b.number}")
        upstream = self.upstream(urls, Backends("mimir", urls, reactor))
        await a.stop()
        await b.stop()
        with self.assertRaises(UpstreamUnavailable) as raised:
            await upstream.deliver(push("/ok"))
        self.assertIn(raised.exception.status, (502, 503))


class NameOverTLSTests(_UpstreamTestCase):
    """
    A name resolved to an address: the connection goes to the address,
    the certificate is verified against the name (it does not list the
    address) and the Host header is the name.
    """

    @inline
    async def test_verified_against_the_name(self) -> None:
        ca_key, ca_cert = make_ca("sealgw test CA")
        key, cert = make_server_cert(ca_key, ca_cert, names=("mimir.test",), addresses=())
        server = Server(self, tls=pem(cert, key))
        ca_file = self.mktemp()
        with open(ca_file, "wb") as f:
            f.write(pem(ca_cert))
        resolver = ScriptedResolver()
        resolver.answers["mimir.test"] = ["127.0.0.1"]
        url = f"https://mimir.test:{server.number}"
        backends = Backends("mimir", [url], reactor, resolver=resolver)
        backends.start()
        self.addCleanup(backends.stop)
        self.client_kwargs = {"trust_root": load_trust_root(ca_file)}
        upstream = self.upstream((url,), backends)
        delivery = await upstream.deliver(push("/ok"))
        self.assertEqual((delivery.status, delivery.attempts), (204, 1))
        path, headers, _ = server.resource.seen[0]
        self.assertEqual(path, b"/ok")
        self.assertEqual(headers[b"host"], [f"mimir.test:{server.number}".encode()])
        self.assertEqual(
            [r["backend"] for r in upstream.health()["backends"]],
            [f"127.0.0.1:{server.number}"],
        )

    @inline
    async def test_address_is_not_the_name(self) -> None:
        """
        A certificate that names another host fails however the address
        was found.
        """
        ca_key, ca_cert = make_ca("sealgw test CA")
        key, cert = make_server_cert(ca_key, ca_cert, names=("other.test",), addresses=())
        server = Server(self, tls=pem(cert, key))
        ca_file = self.mktemp()
        with open(ca_file, "wb") as f:
            f.write(pem(ca_cert))
        resolver = ScriptedResolver()
        resolver.answers["mimir.test"] = ["127.0.0.1"]
        url = f"https://mimir.test:{server.number}"
        backends = Backends("mimir", [url], reactor, resolver=resolver)
        backends.start()
        self.addCleanup(backends.stop)
        self.client_kwargs = {"trust_root": load_trust_root(ca_file)}
        upstream = self.upstream((url,), backends)
        with self.assertRaises(UpstreamUnavailable) as raised:
            await upstream.deliver(push("/ok"))
        self.assertIn("TLS", raised.exception.reason)
        self.assertEqual(server.resource.seen, [])


class Answers(Resource):
    """
    Answers every GET with 200 and counts them.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    def render_GET(self, request: Any) -> bytes:
        self.gets += 1
        return b'{"status":"success"}'


class ReadBackendsTests(TestCase):
    @inline
    async def test_reads_spread(self) -> None:
        """
        The read path's client for an upstream of two backends (built
        from the configuration as the gateway builds it) sends reads to
        both, and none to one that is stopped.
        """
        resources = [Answers(), Answers()]
        servers = [Server(self, resource=r) for r in resources]
        for server in servers:
            tracked(server)
        urls = [f"http://127.0.0.1:{server.number}" for server in servers]
        parsed = read_config({
            "listeners": [{"endpoint": "tcp:0:interface=127.0.0.1"}],
            "upstreams": {"prom": {"urls": urls}},
            "query": {"prometheus": {"upstream": "prom"}},
        })
        clients = build_reads(parsed, reactor)
        self.addCleanup(clients.stopService)
        settings = clients.settings.prometheus
        assert settings is not None

        async def get() -> int:
            response = await settings.client.request("GET", settings.url_for("/api/v1/query", ""))
            await response.read(1024)
            return response.status

        statuses = [await get() for _ in range(10)]
        self.assertEqual(statuses, [200] * 10)
        self.assertEqual([r.gets for r in resources], [5, 5])
        await servers[0].stop()
        # A read is not retried: the one that finds the stopped backend
        # fails, and those after it go to the other.
        try:
            await get()
        except Exception:
            pass
        before = resources[1].gets
        statuses = [await get() for _ in range(5)]
        self.assertEqual(statuses, [200] * 5)
        self.assertEqual(resources[1].gets - before, 5)
