"""
End to end over real sockets: unknown paths and methods on every kind of
listener, a sweep of malformed requests (bad Host values, broken framing)
over plain TCP, a real TLS handshake and the admin listener, request heads
too large (over plain TCP and TLS) or too slow, and the connection cap;
and, while all of that is going on, ordinary clients still being served.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import LoopingCall
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.certs import CertificateAuthority
from tests.e2e_support import (
    REMOTE_WRITE_HEADERS,
    TEST_TIMEOUT,
    Gateway,
    bearer,
    http_client,
    now_ms,
    raw_http,
    reactor,
    remote_write_body,
    start_gateway,
    status_of,
    wait_until,
    with_timeout,
    write_request,
)

TOKENS = [{"name": "node-1", "token": "tok-1", "tenants": ["team-a"]}]
HUGE_HEAD = (
    b"POST /api/v1/push HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer "
    + b"x" * (1024 * 1024)
    + b"\r\n\r\n"
)


class RawClient(Protocol):
    """
    A client that sends what it is told, when it is told, and keeps what
    comes back.
    """

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[bytes] = Deferred()
        self.closed_at: Optional[float] = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed_at = reactor.seconds()
        self.closed.callback(self.received)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


async def connect(port: int) -> RawClient:
    client = RawClient()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    return client


def port_of(gateway: Gateway, index: int) -> int:
    port: int = gateway.service.listeners[index].port.getHost().port
    return port


class EdgeTestCase(TestCase):
    timeout = TEST_TIMEOUT

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def access_statuses(self) -> list[int]:
        return [e["status"] for e in self.events if e.get("access")]

    def assertNothingCritical(self) -> None:
        self.assertEqual(
            [e for e in self.events if e.get("log_level") in (LogLevel.error, LogLevel.critical)],
            [],
        )

    def metric(self, gateway: Gateway, name: str, **labels: str) -> float:
        value = gateway.registry.get_sample_value(name, labels)
        return value if value is not None else 0.0


class UnknownRequestTests(EdgeTestCase):
    async def test_every_listener_kind(self) -> None:
        gateway = await start_gateway(
            self,
            {
                "listeners": [
                    {"endpoint": "tcp:0:interface=127.0.0.1"},
                    {"endpoint": "tcp:0:interface=127.0.0.1", "ops": True},
                ],
                "admin": {"endpoint": "tcp:0:interface=127.0.0.1"},
                "log": {"access": True},
            },
        )
        http = http_client(self)
        urls = {
            kind: f"http://127.0.0.1:{port_of(gateway, i)}"
            for i, kind in enumerate(("push", "push+ops", "admin"))
        }
        for kind, url in urls.items():
            response = await http.get(url + "/no/such/thing")
            self.assertEqual(response.code, 404, kind)
            self.assertEqual(
                await response.text(), "no route serves this path on this listener\n"
            )
        for kind in ("push", "push+ops"):
            response = await http.get(urls[kind] + "/api/v1/push")
            await response.content()
            self.assertEqual(response.code, 405)
            self.assertEqual(response.headers.getRawHeaders(b"allow"), [b"POST"])
        for kind in ("push+ops", "admin"):
            response = await http.post(urls[kind] + "/metrics", data=b"")
            await response.content()
            self.assertEqual(response.code, 405)
            self.assertEqual(response.headers.getRawHeaders(b"allow"), [b"GET, HEAD"])
        response = await http.get(urls["push"] + "/metrics")
        await response.content()
        self.assertEqual(response.code, 404)
        self.assertEqual(sorted(self.access_statuses()), [404] * 4 + [405] * 4)
        self.assertNothingCritical()


def get(host: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return b"GET /metrics %s\r\nHost: %s\r\n\r\n" % (version, host)


def post(*headers: bytes, body: bytes = b"") -> bytes:
    lines = [b"POST /api/v1/push HTTP/1.1", b"Host: gateway", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(body: bytes) -> bytes:
    return post(b"Transfer-Encoding: chunked", body=body)


#: What a hostile client may send, and must get a 400 for: never a 500,
#: never a hang, never an alarming log line.
MALFORMED = {
    # Host values.
    "empty Host": get(b""),
    "empty label": get(b"a..b"),
    "label starting with -": get(b"-a.b"),
    "xn-- garbage": get(b"xn--zz.example"),
    "label over 63": get(b"a" * 64 + b".example"),
    "Host over 253": get(b"a." * 200 + b"b"),
    "unclosed IPv6": get(b"[::1"),
    "IPv6 without brackets": get(b"::1"),
    "zone in IPv6": get(b"[fe80::1%25eth0]"),
    "port over 65535": get(b"host:99999"),
    "port not a number": get(b"host:abc"),
    "empty port": get(b"host:"),
    "userinfo in Host": get(b"user:pw@host"),
    "space in Host": get(b"a b"),
    "control character in Host": get(b"a\x01b"),
    "comma in Host": get(b"a,b"),
    "UTF-8 in Host": get(b"caf\xc3\xa9.example"),
    "non-UTF-8 in Host": get(b"\xff\xfe"),
    "bad IPv4": get(b"1.2.3.256"),
    # Host headers.
    "two Host headers": b"GET /metrics HTTP/1.1\r\nHost: gateway\r\nHost: gateway\r\n\r\n",
    "two different Host headers": b"GET /metrics HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
    "no Host in HTTP/1.1": b"GET /metrics HTTP/1.1\r\nAccept: */*\r\n\r\n",
    "space before the colon": b"GET /metrics HTTP/1.1\r\nHost : gateway\r\n\r\n",
    "absolute target, other host": b"GET http://other/metrics HTTP/1.1\r\nHost: gateway\r\n\r\n",
    "absolute target with userinfo": (
        b"GET http://u:p@gateway/metrics HTTP/1.1\r\nHost: gateway\r\n\r\n"
    ),
    "absolute target, bad host": b"GET http://a..b/metrics HTTP/1.1\r\nHost: a..b\r\n\r\n",
    "absolute target, not http": b"GET ftp://gateway/x HTTP/1.1\r\nHost: gateway\r\n\r\n",
    # The request line and header lines.
    "obs-fold": b"GET /metrics HTTP/1.1\r\nHost: gateway\r\nX-A: b\r\n c\r\n\r\n",
    "obs-fold with a tab": b"GET /metrics HTTP/1.1\r\nHost: gateway\r\nX-A: b\r\n\tc\r\n\r\n",
    "method not a token": b"G@T /metrics HTTP/1.1\r\nHost: gateway\r\n\r\n",
    "space in method": b"GE T /metrics HTTP/1.1\r\nHost: gateway\r\n\r\n",
    "leading space": b" GET /metrics HTTP/1.1\r\nHost: gateway\r\n\r\n",
    "HTTP/2.0 request line": b"GET /metrics HTTP/2.0\r\nHost: gateway\r\n\r\n",
    "no version": b"GET /metrics\r\nHost: gateway\r\n\r\n",
    "NUL in the target": b"GET /met\x00rics HTTP/1.1\r\nHost: gateway\r\n\r\n",
    "NUL in a header value": b"GET /metrics HTTP/1.1\r\nHost: gateway\r\nX-A: a\x00b\r\n\r\n",
    "NUL in a header name": b"GET /metrics HTTP/1.1\r\nHost: gateway\r\nX\x00A: b\r\n\r\n",
    "bare LF in a header": b"GET /metrics HTTP/1.1\r\nHost: gateway\r\nX-A: a\nb\r\n\r\n",
    "header without a colon": b"GET /metrics HTTP/1.1\r\nHost: gateway\r\nnot a header\r\n\r\n",
    # Body framing.
    "Content-Length +5": post(b"Content-Length: +5", body=b"hello"),
    "Content-Length -1": post(b"Content-Length: -1"),
    "Content-Length 5,5": post(b"Content-Length: 5,5", body=b"hello"),
    "Content-Length in hex": post(b"Content-Length: 0x5", body=b"hello"),
    "two Content-Lengths": post(b"Content-Length: 5", b"Content-Length: 6", body=b"hello!"),
    "two equal Content-Lengths": post(b"Content-Length: 5", b"Content-Length: 5", body=b"hello"),
    "Content-Length and Transfer-Encoding": post(
        b"Content-Length: 5", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"
    ),
    "Transfer-Encoding and Content-Length": post(
        b"Transfer-Encoding: chunked", b"Content-Length: 5", body=b"0\r\n\r\n"
    ),
    "unknown transfer coding": post(b"Transfer-Encoding: gzip", body=b"hello"),
    "identity transfer coding": post(b"Transfer-Encoding: identity", body=b"hello"),
    "gzip then chunked": post(b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"),
    "two Transfer-Encodings": post(
        b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"
    ),
    "Transfer-Encoding in HTTP/1.0": (
        b"POST /api/v1/push HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "chunk size not hex": chunked(b"zz\r\nhello\r\n0\r\n\r\n"),
    "negative chunk size": chunked(b"-5\r\nhello\r\n0\r\n\r\n"),
    "chunk size with 0x": chunked(b"0x5\r\nhello\r\n0\r\n\r\n"),
    "empty chunk size": chunked(b"\r\nhello\r\n0\r\n\r\n"),
    "chunk size line too long": chunked(b"0" * 2000 + b"5\r\nhello\r\n0\r\n\r\n"),
    "chunk longer than its size": chunked(b"3\r\nhello\r\n0\r\n\r\n"),
}

#: Close to the above, and served.
WELL_FORMED = {
    "underscore in Host": get(b"a_b"),
    "Host with a port": get(b"gateway:8080"),
    "IPv4 Host": get(b"127.0.0.1:9090"),
    "IPv6 Host": get(b"[::1]:9090"),
    "international name": get(b"xn--bcher-kva.example"),
    "socket path, percent-encoded": get(b"%2Frun%2Fsealgw.sock"),
    "absolute target": b"GET http://gateway/metrics HTTP/1.1\r\nHost: gateway\r\n\r\n",
}


class MalformedRequestTests(EdgeTestCase):
    """
    Every malformed request of L{MALFORMED}, on a plain, a TLS and the
    admin listener: a 400 and a closed connection each, an access line at
    C{info}, nothing logged louder; and a well-formed request on a new
    connection served after each.
    """

    async def test_sweep(self) -> None:
        ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        server = ca.issue("server")
        gateway = await start_gateway(
            self,
            {
                "listeners": [
                    {"endpoint": "tcp:0:interface=127.0.0.1", "ops": True},
                    {
                        "endpoint": "ssl:0:interface=127.0.0.1",
                        "ops": True,
                        "tls": {"certificate": server.certificate, "key": server.key},
                    },
                ],
                "admin": {"endpoint": "tcp:0:interface=127.0.0.1"},
                "log": {"access": True},
            },
            TOKENS,
        )
        with open(ca.certificate, "rb") as f:
            trust = Certificate.loadPEM(f.read())
        endpoints = {
            "plain": TCP4ClientEndpoint(reactor, "127.0.0.1", port_of(gateway, 0)),
            "tls": SSL4ClientEndpoint(
                reactor,
                "127.0.0.1",
                port_of(gateway, 1),
                optionsForClientTLS("localhost", trust),
            ),
            "admin": TCP4ClientEndpoint(reactor, "127.0.0.1", port_of(gateway, 2)),
        }

        async def exchange(kind: str, raw: bytes, what: str) -> bytes:
            client = RawClient()
            await connectProtocol(endpoints[kind], client)
            client.send(raw)
            return await with_timeout(client.closed, 10, f"{what} on {kind}: the close")

        ok = get(b"gateway").replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        answered = 0
        for kind in endpoints:
            for what, raw in MALFORMED.items():
                answer = await exchange(kind, raw, what)
                self.assertEqual(status_of(answer), 400, (kind, what, answer[:300]))
                body = answer.partition(b"\r\n\r\n")[2]
                self.assertTrue(body.endswith(b"\n") and body.count(b"\n") == 1, (what, body))
                answered += 1
                served = await exchange(kind, ok, "a good request after " + what)
                self.assertEqual(status_of(served), 200, (kind, what))
            # A body declared over the limit is refused before it is read,
            # over TLS too (whose close once waited for the idle timeout).
            answer = await exchange(kind, post(b"Content-Length: 999999999999"), "413")
            self.assertEqual(status_of(answer), 413, (kind, answer[:300]))
            for what, raw in WELL_FORMED.items():
                raw = raw.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
                answer = await exchange(kind, raw, what)
                self.assertEqual(status_of(answer), 200, (kind, what, answer[:300]))

        lines = [e for e in self.events if e.get("access")]
        self.assertEqual(
            sorted(e["status"] for e in lines),
            [200] * (answered + len(WELL_FORMED) * len(endpoints))
            + [400] * answered
            + [413] * len(endpoints),
        )
        self.assertEqual({e["log_level"] for e in lines}, {LogLevel.info})
        self.assertNothingCritical()
        self.assertEqual([e for e in self.events if "log_failure" in e], [])
        self.assertNotIn("u:p@", repr(self.events))


class HeaderLimitTests(EdgeTestCase):
    async def test_huge_header_is_answered_431(self) -> None:
        gateway = await start_gateway(self, {"log": {"access": True}}, TOKENS)
        answer = await raw_http(gateway.port, HUGE_HEAD)
        self.assertEqual(status_of(answer), 431, answer[:200])
        self.assertIn(b"larger than the limit of 65536 bytes", answer)
        self.assertEqual(self.access_statuses(), [431])
        # The gateway goes on serving.
        http = http_client(self)
        response = await http.get(gateway.url + "/metrics")
        await response.content()
        self.assertEqual(response.code, 200)

    async def test_huge_header_over_tls(self) -> None:
        ca = CertificateAuthority(os.path.abspath(self.mktemp()))
        server = ca.issue("server")
        gateway = await start_gateway(
            self,
            {
                "listeners": [
                    {
                        "endpoint": "ssl:0:interface=127.0.0.1",
                        "tls": {"certificate": server.certificate, "key": server.key},
                        "max_header_size": "8KiB",
                    }
                ],
                "log": {"access": True},
            },
        )
        with open(ca.certificate, "rb") as f:
            trust = Certificate.loadPEM(f.read())
        client = RawClient()
        endpoint = SSL4ClientEndpoint(
            reactor, "127.0.0.1", gateway.port, optionsForClientTLS("localhost", trust)
        )
        await connectProtocol(endpoint, client)
        client.send(b"GET /metrics HTTP/1.1\r\nHost: gateway\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n")
        answer = await with_timeout(client.closed, 10, "the 431 over TLS")
        self.assertEqual(status_of(answer), 431, answer[:200])
        self.assertIn(b"larger than the limit of 8192 bytes", answer)
        self.assertEqual(self.access_statuses(), [431])


class UnderAttackTests(EdgeTestCase):
    """
    Slow-header clients, an oversized head and a full connection cap, all
    at once, while an ordinary client keeps pushing.
    """

    CAP = 30
    SLOW = 20

    async def test_normal_clients_keep_being_served(self) -> None:
        gateway = await start_gateway(
            self,
            {
                "listeners": [
                    {
                        "endpoint": "tcp:0:interface=127.0.0.1",
                        "ops": True,
                        "max_connections": self.CAP,
                        "header_timeout": "2s",
                    }
                ],
                "upstreams": {"spool": {"type": "file", "directory": "spool"}},
                "push": {"remote_write": {"upstream": "spool"}},
            },
            TOKENS,
        )
        listener = "tcp:0:interface=127.0.0.1"
        http = http_client(self)

        async def push(client: Any = http) -> int:
            body = remote_write_body(write_request([({"__name__": "up"}, [(1.0, now_ms())])]))
            response = await client.post(
                gateway.url + "/api/v1/push",
                data=body,
                headers={**REMOTE_WRITE_HEADERS, **bearer("tok-1")},
            )
            await response.content()
            code: int = response.code
            return code

        # An ordinary client, on its one kept-alive connection.
        self.assertEqual(await push(), 204)

        # An oversized head is answered and cut.
        self.assertEqual(status_of(await raw_http(gateway.port, HUGE_HEAD)), 431)

        # Slow-header clients: a request line, then a byte every 0.2 s, for ever.
        head = b"X-Slow: " + b"s" * 1000
        slow = [await connect(gateway.port) for _ in range(self.SLOW)]
        for client in slow:
            client.send(b"POST /api/v1/push HTTP/1.1\r\nHost: gateway\r\n")
        started = reactor.seconds()
        sent = [0]

        def drip() -> None:
            for client in slow:
                if client.closed_at is None:
                    client.send(head[sent[0] : sent[0] + 1])
            sent[0] += 1

        dripping = LoopingCall(drip)
        dripping.start(0.2)
        self.addCleanup(lambda: dripping.running and dripping.stop())

        # More connections than the cap leaves room for.
        extra = [await connect(gateway.port) for _ in range(self.CAP)]

        async def cap_reached() -> Optional[bool]:
            open_ = self.metric(gateway, "sealgw_connections_open", listener=listener)
            refused = self.metric(gateway, "sealgw_connections_refused_total", listener=listener)
            return True if open_ == self.CAP and refused > 0 else None

        await wait_until(cap_reached, what="the connection cap to be reached", timeout=5)
        refused = [c for c in extra if c.closed_at is not None]
        self.assertTrue(refused)
        self.assertEqual([c.received for c in refused], [b""] * len(refused))

        # The ordinary client is still served, and fast.
        for _ in range(5):
            self.assertEqual(await push(), 204)
        response = await http.get(gateway.url + "/ready")
        await response.content()
        self.assertEqual(response.code, 200)
        self.assertTrue(all(c.closed_at is None for c in slow), "served while under attack")

        # The head deadline cuts every slow client, with a 408.
        await with_timeout(
            DeferredList([c.closed for c in slow]), 10, "the slow clients to be cut"
        )
        dripping.stop()
        for client in slow:
            self.assertEqual(status_of(client.received), 408)
            assert client.closed_at is not None
            self.assertLess(client.closed_at - started, 5.0)
        # Connections that never sent anything are closed too, silently.
        await with_timeout(
            DeferredList([c.closed for c in extra]), 10, "the silent clients to be cut"
        )
        self.assertEqual({c.received for c in extra}, {b""})

        # The freed slots take new clients.
        fresh = http_client(self)
        self.assertEqual(await push(fresh), 204)

        self.assertGreaterEqual(
            self.metric(gateway, "sealgw_http_header_timeouts_total", listener=listener),
            self.SLOW,
        )
        self.assertEqual(
            self.metric(
                gateway,
                "sealgw_http_requests_total",
                route="unmatched",
                method="POST",
                status="408",
                tenant="",
            ),
            self.SLOW,
        )
        self.assertEqual(
            self.metric(
                gateway,
                "sealgw_http_requests_total",
                route="remote_write",
                method="POST",
                status="204",
                tenant="team-a",
            ),
            7,
        )
        self.assertNothingCritical()
