"""
End-to-end tests of L{sealgw.relay.HTTPUpstream} over real sockets: a
Twisted web server on 127.0.0.1, plain and TLS, with a CA made for the
test.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Optional

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.ssl import PrivateCertificate
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from sealgw.config import (
    ConfigError,
    HTTPUpstreamConfig,
    RetryConfig,
    TimeoutsConfig,
    UpstreamConfig,
)
from sealgw.http import USER_AGENT
from sealgw.relay import (
    HTTPUpstream,
    Push,
    UpstreamRejected,
    UpstreamUnavailable,
    build_upstreams,
)
from tests.pki import make_ca, make_server_cert, pem

reactor: Any = _reactor


def inline(f: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Deferred[None]]:
    """
    Run an C{async def} test method as a Deferred-returning one for trial.
    """

    @functools.wraps(f)
    def run(self: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(f(self))  # type: ignore[arg-type]

    return run


class Upstream(Resource):
    """
    A fake Mimir: C{/ok} answers 204, C{/flaky} 500 once then 204, C{/bad}
    400, C{/big} 200 with a large body, C{/slow} never answers.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bytes, dict[bytes, Sequence[bytes]], bytes]] = []
        self.flaky_failures = 1
        self._arrivals: list[Deferred[None]] = []

    def arrival(self) -> Deferred[None]:
        """
        Fires when the next request comes in.
        """
        d: Deferred[None] = Deferred()
        self._arrivals.append(d)
        return d

    def render_POST(self, request: Request) -> Any:
        assert request.content is not None
        headers = {k.lower(): v for k, v in request.requestHeaders.getAllRawHeaders()}
        self.seen.append((request.path, headers, request.content.read()))
        arrivals, self._arrivals = self._arrivals, []
        for d in arrivals:
            d.callback(None)
        if request.path == b"/ok":
            # A load balancer's stickiness cookie, never to be sent back.
            request.addCookie(b"sticky", b"backend-1")
            request.setResponseCode(204)
            return b""
        if request.path == b"/flaky":
            if self.flaky_failures:
                self.flaky_failures -= 1
                request.setResponseCode(500)
                return b"warming up"
            request.setResponseCode(204)
            return b""
        if request.path == b"/bad":
            request.setResponseCode(400)
            return b"err: out of order sample"
        if request.path == b"/big":
            request.setResponseCode(200)
            return b"z" * 1_000_000
        if request.path == b"/slow":
            return NOT_DONE_YET
        request.setResponseCode(404)
        return b"no such path"


class TrackingSite(Site):
    """
    A Site that can wait for all its connections to close, so a test
    leaves a clean reactor.
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


FAST_RETRY = RetryConfig(attempts=3, initial_backoff=0.01, max_backoff=0.02, deadline=5.0)
SHORT_TIMEOUTS = TimeoutsConfig(connect=2.0, response=2.0, body=2.0)


def push(path: str, **kwargs: Any) -> Push:
    defaults: dict[str, Any] = dict(
        signal="remote_write",
        tenant="team-a",
        body=b"\x01\x02payload",
        content_type="application/x-protobuf",
        content_encoding="snappy",
        path=path,
        extra_headers={"X-Prometheus-Remote-Write-Version": "0.1.0",
                       "X-Scope-OrgID": "team-b"},
        received_at=reactor.seconds(),
    )
    defaults.update(kwargs)
    return Push(**defaults)


class SocketTests(TestCase):
    def serve(self, tls: Optional[bytes] = None) -> tuple[Upstream, TrackingSite, int]:
        """
        Start the fake upstream on 127.0.0.1 (with TLS when given the
        server's PEM certificate and key); stopped by cleanups.
        """
        resource = Upstream()
        site = TrackingSite(resource)
        if tls is None:
            port = reactor.listenTCP(0, site, interface="127.0.0.1")
        else:
            options = PrivateCertificate.loadPEM(tls).options()
            port = reactor.listenSSL(0, site, options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        # Runs before stopListening: wait for every connection to go.
        self.addCleanup(lambda: gatherResults(site.closed))
        return resource, site, port.getHost().port

    def upstream(self, url: str, **kwargs: Any) -> HTTPUpstream:
        kwargs.setdefault("timeouts", SHORT_TIMEOUTS)
        kwargs.setdefault("retry", FAST_RETRY)
        upstream = HTTPUpstream(HTTPUpstreamConfig(name="test", url=url, **kwargs), reactor)
        # Runs first: closing the pool closes the server's connections too.
        self.addCleanup(upstream.close)
        return upstream

    @inline
    async def test_204(self) -> None:
        """
        A push arrives as sent, with the gateway's headers, and the pooled
        connection is used again for the next one.
        """
        resource, site, port = self.serve()
        upstream = self.upstream(f"http://127.0.0.1:{port}")
        delivery = await upstream.deliver(push("/ok"))
        self.assertEqual((delivery.status, delivery.attempts), (204, 1))
        delivery = await upstream.deliver(push("/ok"))
        self.assertEqual(len(site.closed), 1)
        path, headers, body = resource.seen[0]
        self.assertEqual((path, body), (b"/ok", b"\x01\x02payload"))
        self.assertEqual(headers[b"x-scope-orgid"], [b"team-a"])
        self.assertEqual(headers[b"content-encoding"], [b"snappy"])
        self.assertEqual(headers[b"content-length"], [b"9"])
        self.assertEqual(headers[b"user-agent"], [USER_AGENT])
        self.assertEqual(headers[b"x-prometheus-remote-write-version"], [b"0.1.0"])
        self.assertNotIn(b"cookie", resource.seen[1][1])

    @inline
    async def test_500_then_204(self) -> None:
        resource, _, port = self.serve()
        upstream = self.upstream(f"http://127.0.0.1:{port}")
        delivery = await upstream.deliver(push("/flaky"))
        self.assertEqual((delivery.status, delivery.attempts), (204, 2))
        self.assertEqual(len(resource.seen), 2)

    @inline
    async def test_400(self) -> None:
        resource, _, port = self.serve()
        upstream = self.upstream(f"http://127.0.0.1:{port}")
        with self.assertRaises(UpstreamRejected) as raised:
            await upstream.deliver(push("/bad"))
        self.assertEqual(raised.exception.status, 400)
        self.assertEqual(raised.exception.reason, "err: out of order sample")
        self.assertEqual(len(resource.seen), 1)

    @inline
    async def test_body_cap(self) -> None:
        _, _, port = self.serve()
        upstream = self.upstream(f"http://127.0.0.1:{port}", max_response_body=1000)
        delivery = await upstream.deliver(push("/big"))
        self.assertEqual(delivery.body, b"z" * 1000)
        self.assertTrue(delivery.body_truncated)

    @inline
    async def test_slow(self) -> None:
        resource, _, port = self.serve()
        upstream = self.upstream(
            f"http://127.0.0.1:{port}",
            timeouts=TimeoutsConfig(connect=2.0, response=0.2, body=2.0),
            retry=RetryConfig(attempts=1),
        )
        with self.assertRaises(UpstreamUnavailable) as raised:
            await upstream.deliver(push("/slow"))
        self.assertEqual(raised.exception.status, 504)
        self.assertEqual(len(resource.seen), 1)

    @inline
    async def test_connection_refused(self) -> None:
        port = reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")
        number = port.getHost().port
        await port.stopListening()
        upstream = self.upstream(f"http://127.0.0.1:{number}")
        with self.assertRaises(UpstreamUnavailable) as raised:
            await upstream.deliver(push("/ok"))
        self.assertEqual(raised.exception.status, 503)
        self.assertIn("3 attempts", raised.exception.reason)

    @inline
    async def test_cancel(self) -> None:
        """
        A client going away closes the upstream request.
        """
        resource, site, port = self.serve()
        upstream = self.upstream(f"http://127.0.0.1:{port}")
        arrived = resource.arrival()
        d = upstream.deliver(push("/slow"))
        await arrived
        d.cancel()
        self.failureResultOf(d)
        await site.closed[0]

    def tls_server(self) -> tuple[Upstream, int, str]:
        ca_key, ca_cert = make_ca("sealgw test CA")
        key, cert = make_server_cert(ca_key, ca_cert)
        resource, _, port = self.serve(tls=pem(cert, key))
        ca_file = self.mktemp()
        with open(ca_file, "wb") as f:
            f.write(pem(ca_cert))
        return resource, port, ca_file

    @inline
    async def test_https_ca_file(self) -> None:
        """
        An upstream whose certificate comes from the configured CA is
        trusted, by IP address and by name.
        """
        resource, port, ca_file = self.tls_server()
        for host in ("127.0.0.1", "localhost"):
            upstream = self.upstream(f"https://{host}:{port}", ca_file=ca_file)
            delivery = await upstream.deliver(push("/ok"))
            self.assertEqual(delivery.status, 204)
        self.assertEqual(len(resource.seen), 2)

    @inline
    async def test_https_wrong_ca(self) -> None:
        """
        A certificate that does not verify fails at once (no retries) with
        502, and nothing reaches the upstream.
        """
        resource, port, _ = self.tls_server()
        _, other_ca = make_ca("some other CA")
        other_file = self.mktemp()
        with open(other_file, "wb") as f:
            f.write(pem(other_ca))
        upstream = self.upstream(f"https://127.0.0.1:{port}", ca_file=other_file)
        with self.assertRaises(UpstreamUnavailable) as raised:
            await upstream.deliver(push("/ok"))
        self.assertEqual(raised.exception.status, 502)
        self.assertIn("TLS", raised.exception.reason)
        self.assertEqual(resource.seen, [])

    def test_bad_ca_file(self) -> None:
        """
        A CA file without a certificate stops start-up, naming the
        upstream.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("not a certificate\n")
        configs: dict[str, UpstreamConfig] = {
            "mimir": HTTPUpstreamConfig(name="mimir", url="https://mimir", ca_file=path),
            "loki": HTTPUpstreamConfig(name="loki", url="https://loki", ca_file=path + ".gone"),
        }
        with self.assertRaises(ConfigError) as raised:
            build_upstreams(configs, reactor)
        [mimir, loki] = raised.exception.problems
        self.assertEqual(mimir, f"upstreams.mimir.ca_file: {path}: no PEM certificate found")
        self.assertEqual(loki, f"upstreams.loki.ca_file: {path}.gone: No such file or directory")

